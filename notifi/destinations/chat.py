"""Chat webhooks (Slack, Discord, Microsoft Teams): one function per service maps a
notification to that service's JSON, within its documented limits; the POST itself, the
address guard and the outcome classes are the webhook sender's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from notifi.destinations.base import SendResult
from notifi.destinations.webhook import WebhookSender
from notifi.model import Notification


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fields(n: Notification) -> list[tuple[str, str]]:
    return [
        (str(k), v if isinstance(v, str) else orjson.dumps(v).decode()) for k, v in n.data.items()
    ]


def slack_payload(n: Notification) -> dict[str, Any]:
    """Incoming webhook: `text` for notifications and old clients, blocks for the message."""
    title = n.title
    blocks: list[dict[str, Any]] = []
    if title:
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": _cut(title, 150)}})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(n.body, 3000)}})
    if fields := _fields(n):
        elements = [{"type": "mrkdwn", "text": _cut(f"*{k}*: {v}", 300)} for k, v in fields[:10]]
        blocks.append({"type": "context", "elements": elements})
    text = f"{title}: {n.body}" if title else n.body
    return {"text": _cut(text, 3000), "blocks": blocks}


def discord_payload(n: Notification) -> dict[str, Any]:
    embed: dict[str, Any] = {"description": _cut(n.body, 4096)}
    if n.title:
        embed["title"] = _cut(n.title, 256)
    if fields := _fields(n):
        embed["fields"] = [
            {"name": _cut(k, 256), "value": _cut(v, 1024) or "-", "inline": True}
            for k, v in fields[:25]
        ]
    if n.created_at is not None:
        embed["timestamp"] = n.created_at.isoformat()
    return {"content": _cut(n.title or n.body, 2000), "embeds": [embed]}


def teams_payload(n: Notification) -> dict[str, Any]:
    """A Teams workflow (or connector) webhook message with an Adaptive Card."""
    body: list[dict[str, Any]] = []
    if n.title:
        body.append(
            {
                "type": "TextBlock",
                "text": n.title,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
            }
        )
    body.append({"type": "TextBlock", "text": _cut(n.body, 20000), "wrap": True})
    if fields := _fields(n):
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in fields]})
    card = {
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


PAYLOADS: dict[str, Callable[[Notification], dict[str, Any]]] = {
    "slack": slack_payload,
    "discord": discord_payload,
    "teams": teams_payload,
}


class ChatSender:
    def __init__(self, webhook: WebhookSender, kind: str) -> None:
        self._webhook, self._payload = webhook, PAYLOADS[kind]

    async def send(self, destination: Mapping[str, Any], notification: Notification) -> SendResult:
        body = orjson.dumps(self._payload(notification))
        return await self._webhook.post({"url": destination["url"]}, str(notification.id), body)
