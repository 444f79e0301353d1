"""Slack, Discord and Teams payloads arrive as JSON at a real receiver through ChatSender."""

from __future__ import annotations

from uuid import UUID

import pytest

from notifi.destinations.base import Outcome
from notifi.destinations.chat import ChatSender
from notifi.destinations.http_client import HttpClient
from notifi.destinations.network import AddressPolicy
from notifi.destinations.webhook import WebhookSender
from notifi.model import Notification
from tests.support.receiver import Receiver


@pytest.mark.parametrize(
    ("kind", "key"), [("slack", "blocks"), ("discord", "embeds"), ("teams", "attachments")]
)
async def test_chat_payload_arrives(kind: str, key: str) -> None:
    receiver = await Receiver().start()
    policy = AddressPolicy(["127.0.0.0/8"])
    session = HttpClient(policy)
    try:
        chat = ChatSender(WebhookSender(session, 2), kind)
        n = Notification(id=UUID(int=1), title="T", body="B", data={"a": 1})
        result = await chat.send({"type": kind, "url": receiver.url(kind)}, n)
        assert result.outcome is Outcome.DELIVERED
        body = receiver.received[kind][0].json
        assert key in body
        assert receiver.received[kind][0].headers["webhook-id"] == str(UUID(int=1))
    finally:
        await session.close()
        await receiver.stop()
