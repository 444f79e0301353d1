"""Slack, Discord and Teams payloads arrive as JSON at a real receiver through ChatSender."""

from __future__ import annotations

import orjson
import pytest

from notifi.destinations.base import Message, Outcome
from notifi.destinations.chat import ChatSender
from notifi.destinations.network import AddressPolicy
from notifi.destinations.webhook import WebhookSender, make_session
from tests.support.receiver import Receiver


@pytest.mark.parametrize(
    ("kind", "key"), [("slack", "blocks"), ("discord", "embeds"), ("teams", "attachments")]
)
async def test_chat_payload_arrives(kind: str, key: str) -> None:
    receiver = await Receiver().start()
    policy = AddressPolicy(["127.0.0.0/8"])
    session = make_session(policy)
    try:
        chat = ChatSender(WebhookSender(session, policy, 2), kind)
        payload = orjson.dumps({"id": "n1", "title": "T", "body": "B", "data": {"a": 1}})
        result = await chat.send({"type": kind, "url": receiver.url(kind)}, Message("n1", payload))
        assert result.outcome is Outcome.DELIVERED
        body = receiver.received[kind][0].json
        assert key in body
        assert receiver.received[kind][0].headers["webhook-id"] == "n1"
    finally:
        await session.close()
        await receiver.stop()
