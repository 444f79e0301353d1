"""Property-based fuzzing of the delivery side: arbitrary notification content (title, body,
data, email subject and recipients, webhook headers) goes through a real delivery worker and
every channel's real renderer and sender, against loopback receivers and an aiosmtpd server.
Each job must end delivered or failed, the worker must never crash, and what arrives must be
what was meant (no injected header, no forged framing). Fixed seed, bounded examples."""

from __future__ import annotations

import asyncio
import string
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default
from typing import Any
from uuid import uuid4

import orjson
import pytest
from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from notifi.destinations.chat import PAYLOADS, ChatSender
from notifi.destinations.email import EmailSender
from notifi.destinations.http_client import HttpClient
from notifi.destinations.network import AddressPolicy
from notifi.destinations.webhook import WebhookSender
from notifi.model import DeliveryStatus
from notifi.settings import Smtp
from tests.support.fake_delivery import DeliveryHarness, job_row
from tests.support.process import free_port
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(120)
EXAMPLES = 100  # per channel: the whole module stays well under 20 s
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # a fixed seed: the same examples on every run
    deadline=None,  # a loaded machine must not turn slowness into a failure
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text that has bitten header writers: line breaks, NUL, Unicode separators, placeholders.
TRICKY = st.sampled_from(
    [
        "Deploy finished\nall green",
        "hi\r\nBcc: v@example.com",
        "x\rX-Injected: 1",
        "\x00",
        "\u2028\u2029\x85",
        "$who",
        "${who}",
        "$",
        "é ü 漢字 🙂",
        " " * 5,
    ]
)
LONG = st.integers(900, 3000).map(lambda n: "Ab " * n)  # past every header fold and chat limit
TEXT = st.one_of(st.text(max_size=80), TRICKY, st.lists(TRICKY, max_size=3).map("".join), LONG)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
DATA = st.dictionaries(st.one_of(st.just("who"), st.text(max_size=10)), JSON, max_size=4)
HEADER_NAME = st.one_of(
    st.sampled_from(
        ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect", "TE", "Upgrade",
         "Keep-Alive", "Proxy-Authorization", "Content-Type", "webhook-id", "webhook-signature",
         "X Test", ": x", "X-A\r\nX-B", "Authorization", "X-Team"]
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "-_!#", min_size=1, max_size=12),
    st.text(max_size=12),
)  # fmt: skip
HEADERS = st.dictionaries(HEADER_NAME, st.one_of(TEXT, st.integers()), max_size=4)


@dataclass
class Content:
    title: str
    body: str
    data: dict[str, Any]


CONTENT = st.builds(Content, title=TEXT, body=TEXT, data=DATA)


class Mailbox:
    """aiosmtpd handler keeping what arrived, by Message-ID."""

    def __init__(self) -> None:
        self.by_id: dict[str, tuple[list[str], Any]] = {}

    async def handle_DATA(self, server, session, envelope):
        mail = message_from_bytes(envelope.content, policy=default)
        self.by_id[str(mail["Message-ID"])] = (list(envelope.rcpt_tos), mail)
        return "250 Message accepted"


@dataclass
class World:
    runner: asyncio.Runner
    harness: DeliveryHarness
    receiver: Receiver
    smtp: Mailbox

    def deliver(self, row: dict[str, Any]) -> tuple[DeliveryStatus, str | None]:
        """Runs one job through the worker; its final status and error."""

        async def one() -> tuple[DeliveryStatus, str | None]:
            acked = await self.harness.submit(row)
            await asyncio.wait_for(acked.wait(), 30)
            f = self.harness.store.finished_for((row["notification_id"], row["position"]))
            assert f is not None
            return f.new_status, f.error

        status, error = self.runner.run(one())
        # The mix of outcomes, shown by --hypothesis-show-statistics.
        event(f"{row['kind']}: {status} {(error or '')[:40]}")
        return status, error


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    smtp = Mailbox()
    port = free_port()
    controller = Controller(smtp, hostname="127.0.0.1", port=port)
    controller.start()
    with asyncio.Runner() as runner:

        async def start() -> tuple[DeliveryHarness, Receiver, Any]:
            receiver = await Receiver().start()
            policy = AddressPolicy(["127.0.0.0/8"])
            session = HttpClient(policy)
            webhook = WebhookSender(session, 5)
            relay = Smtp("127.0.0.1", port, "notifi@example.com", False, "", "")
            senders = {
                "webhook": webhook,
                "email": EmailSender(relay, 5),
                **{kind: ChatSender(webhook, kind) for kind in PAYLOADS},
            }
            harness = await DeliveryHarness(senders, max_restarts=0).__aenter__()
            return harness, receiver, session

        harness, receiver, session = runner.run(start())
        try:
            yield World(runner, harness, receiver, smtp)
            assert harness.crashes == []  # nothing raised out of the worker, ever
        finally:

            async def stop() -> None:
                assert await harness.stop(), "the supervisor gave up"
                await session.close()
                await receiver.stop()

            runner.run(stop())
            controller.stop()


def row_for(content: Content, kind: str, destination: dict[str, Any]) -> dict[str, Any]:
    return job_row(
        uuid4(),
        kind=kind,
        destination=destination,
        title=content.title,
        body=content.body,
        data=content.data,
    )


def settled(status: DeliveryStatus) -> bool:
    return status in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)


@FUZZ
@given(content=CONTENT, headers=HEADERS)
def test_webhooks_end_delivered_or_failed(world: World, content: Content, headers: dict) -> None:
    path = f"wh-{uuid4().hex}"
    row = row_for(content, "webhook", {"url": world.receiver.url(path), "headers": headers})
    status, error = world.deliver(row)
    assert settled(status), error
    if status is DeliveryStatus.DELIVERED:
        [got] = world.receiver.received[path]
        payload = orjson.loads(got.body)
        assert payload["title"] == content.title and payload["body"] == content.body
        assert got.headers["webhook-id"] == str(row["notification_id"])
        assert got.headers["Content-Type"] == "application/json"
        assert int(got.headers["Content-Length"]) == len(got.body)
        assert "Transfer-Encoding" not in got.headers
    else:
        # A header line longer than the receiver reads (aiohttp: 8190 bytes) is its 400: a
        # refusal by the receiver, not a crash; submit-time validation bounds values at 4096.
        too_long = any(len(str(k)) + len(str(v)) + 2 > 8190 for k, v in headers.items())
        refused = too_long and error.startswith("HTTP 400")
        assert error.startswith("cannot send") or "internal error" in error or refused, error


@FUZZ
@given(content=CONTENT, kind=st.sampled_from(sorted(PAYLOADS)))
def test_chat_messages_end_delivered_or_failed(world: World, content: Content, kind: str) -> None:
    path = f"{kind}-{uuid4().hex}"
    row = row_for(content, kind, {"type": kind, "url": world.receiver.url(path)})
    status, error = world.deliver(row)
    assert settled(status), error
    if status is DeliveryStatus.DELIVERED:
        [got] = world.receiver.received[path]
        assert isinstance(orjson.loads(got.body), dict)


@FUZZ
@given(
    content=CONTENT,
    to=st.one_of(st.just("oncall@example.com"), TEXT, st.lists(TEXT, max_size=3)),
    subject=st.one_of(st.none(), TEXT),
)
def test_emails_end_delivered_or_failed(
    world: World, content: Content, to: Any, subject: str | None
) -> None:
    destination: dict[str, Any] = {"type": "email", "to": to}
    if subject is not None:
        destination["subject"] = subject
    row = row_for(content, "email", destination)
    status, error = world.deliver(row)
    assert settled(status) or status is DeliveryStatus.DELIVERING, error
    message_id = f"<{row['notification_id']}@notifi>"
    if status is DeliveryStatus.DELIVERED:
        rcpt, mail = world.smtp.by_id[message_id]
        expected = [to] if isinstance(to, str) else to
        assert rcpt == expected  # nobody added by the content
        assert mail["Bcc"] is None and mail["X-Injected"] is None
        assert "\n" not in str(mail["Subject"]) and "\r" not in str(mail["Subject"])
    else:
        assert message_id not in world.smtp.by_id
