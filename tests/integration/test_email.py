"""Email against a real SMTP server (aiosmtpd) on loopback: delivered, refused recipient
(permanent), a temporary refusal and a server that is down (both retried)."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default

import orjson
import pytest
from aiosmtpd.controller import Controller

from notifi.destinations.base import Message, Outcome
from notifi.destinations.email import EmailSender
from notifi.settings import Smtp
from tests.support.process import free_port


class Handler:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        if address.startswith("busy@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (
                envelope.mail_from,
                envelope.rcpt_tos,
                message_from_bytes(envelope.content, policy=default),
            )
        )
        return "250 Message accepted"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Handler, int]]:
    handler = Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def sender(port: int) -> EmailSender:
    smtp = Smtp(
        host="127.0.0.1",
        port=port,
        sender="notifi@example.com",
        starttls=False,
        username="",
        password="",
    )
    return EmailSender(smtp, timeout_s=5)


MESSAGE = Message(
    id="01937c3e-0000-7000-8000-000000000001",
    payload=orjson.dumps(
        {
            "id": "x",
            "title": "Deploy of $service",
            "body": "$service is live",
            "data": {"service": "api", "version": 2},
        }
    ),
)


async def test_delivered_with_subject_body_and_template(smtp_server) -> None:
    handler, port = smtp_server
    result = await sender(port).send({"type": "email", "to": "oncall@example.com"}, MESSAGE)
    assert result.outcome is Outcome.DELIVERED and result.status_code == 250
    mail_from, rcpt, mail = handler.messages[0]
    assert mail_from == "notifi@example.com" and rcpt == ["oncall@example.com"]
    assert mail["Subject"] == "Deploy of api"
    assert mail.get_content().strip() == "api is live"
    assert mail["Message-ID"] == f"<{MESSAGE.id}@notifi>"


async def test_refused_recipient_is_permanent(smtp_server) -> None:
    _, port = smtp_server
    result = await sender(port).send({"type": "email", "to": "nobody@example.com"}, MESSAGE)
    assert result.outcome is Outcome.PERMANENT and result.status_code == 550
    assert "no such user" in result.error


async def test_temporary_refusal_is_retried(smtp_server) -> None:
    _, port = smtp_server
    result = await sender(port).send({"type": "email", "to": "busy@example.com"}, MESSAGE)
    assert result.outcome is Outcome.RETRY and result.status_code == 451


async def test_server_down_is_retried() -> None:
    result = await sender(free_port()).send({"type": "email", "to": "a@example.com"}, MESSAGE)
    assert result.outcome is Outcome.RETRY and "unreachable" in result.error
