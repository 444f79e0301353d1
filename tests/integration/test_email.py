"""Email against a real SMTP server (aiosmtpd) on loopback: delivered, refused recipient
(permanent), a temporary refusal and a server that is down (both retried)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from email import message_from_bytes
from email.policy import default
from uuid import UUID

import pytest
from aiosmtpd.controller import Controller

from notifi.destinations.base import Outcome
from notifi.destinations.email import EmailSender
from notifi.model import Notification
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


MESSAGE = Notification(
    id=UUID("01937c3e-0000-7000-8000-000000000001"),
    title="Deploy of $service",
    body="$service is live",
    data={"service": "api", "version": 2},
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


async def test_a_multi_line_title_is_a_single_line_subject(smtp_server) -> None:
    handler, port = smtp_server
    n = replace(MESSAGE, title="Deploy finished\nall green", data={})
    result = await sender(port).send({"type": "email", "to": "oncall@example.com"}, n)
    assert result.outcome is Outcome.DELIVERED
    _, _, mail = handler.messages[0]
    assert mail["Subject"] == "Deploy finished all green"


@pytest.mark.parametrize(
    "who", ["x\r\nBcc: v@example.com", "x\nBcc: v@example.com", "x\rBcc: v@example.com"]
)
async def test_data_filled_into_the_subject_cannot_add_a_header(smtp_server, who: str) -> None:
    handler, port = smtp_server
    n = replace(MESSAGE, title="Hello $who", data={"who": who})
    result = await sender(port).send({"type": "email", "to": "oncall@example.com"}, n)
    assert result.outcome is Outcome.DELIVERED
    _, rcpt, mail = handler.messages[0]
    assert rcpt == ["oncall@example.com"] and mail["Bcc"] is None
    assert mail["Subject"] == "Hello x Bcc: v@example.com"


@pytest.mark.parametrize(
    "destination",
    [
        {"type": "email", "to": "oncall@example.com", "subject": "hi\r\nBcc: v@example.com"},
        {"type": "email", "to": "oncall@example.com\r\nBcc: v@example.com"},
        {"type": "email", "to": ["a@example.com", "b@example.com\n"]},
        {"type": "email", "to": "not an address"},
    ],
)
async def test_a_header_that_cannot_be_sent_is_a_permanent_failure(
    smtp_server, destination: dict
) -> None:
    handler, port = smtp_server
    result = await sender(port).send(destination, MESSAGE)
    assert result.outcome is Outcome.PERMANENT and result.error.startswith("cannot send")
    assert handler.messages == []
