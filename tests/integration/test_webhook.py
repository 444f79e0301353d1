"""The webhook sender against real aiohttp receivers on loopback: every outcome class, the
timeout, the private-address block (literal IPs, localhost and names), and no cookies kept."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import AsyncIterator
from uuid import UUID

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from notifi.destinations.base import Outcome
from notifi.destinations.http_client import HttpClient
from notifi.destinations.network import AddressPolicy
from notifi.destinations.webhook import WebhookSender
from notifi.model import Notification
from tests.support.process import free_port

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
MESSAGE = Notification(id=UUID("01937c3e-0000-7000-8000-000000000001"), title="", body="hi")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.path, dict(request.headers), body))
        code = int(request.match_info["code"])
        if code == 0:
            await asyncio.sleep(5)
            code = 200
        headers = {"Retry-After": "7"} if code in (429, 503) else {}
        if code == 302:
            headers = {"Location": "http://example.com/"}
        response = web.Response(status=code, text=f"said {code}", headers=headers)
        response.set_cookie("session", "for-whoever-sent-this")  # a receiver's own state
        return response

    app = web.Application()
    app.router.add_post("/{code}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    policy = AddressPolicy(["127.0.0.0/8"])
    session = HttpClient(policy)
    yield WebhookSender(session, timeout_s=0.5)
    await session.close()


async def test_delivered_and_verifiable(server, sender: WebhookSender) -> None:
    base, seen = server
    result = await sender.send(
        {"url": f"{base}/200", "secret": SECRET, "headers": {"X-Team": "ops"}}, MESSAGE
    )
    assert result.outcome is Outcome.DELIVERED and result.status_code == 200
    _, headers, body = seen[0]
    assert headers["webhook-id"] == str(MESSAGE.id) and headers["X-Team"] == "ops"
    assert headers["Content-Type"] == "application/json"
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["id"] == str(MESSAGE.id) and payload["body"] == "hi"
    assert set(payload) == {"id", "type", "title", "body", "data", "scheduled_at", "created_at"}


async def test_no_cookie_is_kept_between_deliveries(server, sender: WebhookSender) -> None:
    """One process sends for every client: a cookie a receiver set while answering one
    client's delivery must not ride along on the next delivery to that host (another
    client's, perhaps). By name, not IP: aiohttp's jar ignores cookies from IP hosts."""
    base, seen = server
    by_name = base.replace("127.0.0.1", "localhost")
    for _ in range(2):
        result = await sender.send({"url": f"{by_name}/200"}, MESSAGE)
        assert result.outcome is Outcome.DELIVERED
    assert [h.get("Cookie") for _, h, _ in seen] == [None, None]


async def test_destination_headers_cannot_override_framing_or_protocol(server, sender) -> None:
    base, seen = server
    own = {
        "Host": "evil.example",
        "Content-Length": "3",
        "Transfer-Encoding": "chunked",
        "Connection": "close",
        "Expect": "100-continue",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Keep-Alive": "timeout=1",
        "Proxy-Authorization": "Basic eA==",
        "Content-Type": "text/plain",
        "webhook-id": "forged",
        "X-Team": "ops",
    }
    result = await sender.send({"url": f"{base}/200", "headers": own}, MESSAGE)
    assert result.outcome is Outcome.DELIVERED
    _, headers, body = seen[0]
    assert headers["X-Team"] == "ops" and headers["webhook-id"] == str(MESSAGE.id)
    assert headers["Content-Type"] == "application/json"
    assert headers["Host"].startswith("127.0.0.1") and "Transfer-Encoding" not in headers
    assert int(headers["Content-Length"]) == len(body) and b'"body":"hi"' in body
    assert "Proxy-Authorization" not in headers and "Upgrade" not in headers


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"X Test": "1"}, "'X Test' is not an HTTP token"),
        ({": x": "1"}, "is not an HTTP token"),
        ({"X-A\r\nX-B": "1"}, "is not an HTTP token"),
        ({"X-A": "1\r\nX-B: 2"}, "X-A: the value holds a control character"),
        ({"X-A": 1}, "X-A: the value must be a string"),
    ],
)
async def test_unsendable_headers_end_the_job_with_a_clear_error(
    server, sender, headers, says
) -> None:
    base, seen = server
    result = await sender.send({"url": f"{base}/200", "headers": headers}, MESSAGE)
    assert result.outcome is Outcome.PERMANENT and says in result.error
    assert "URL" not in result.error and "X-B: 2" not in result.error  # no value echoed
    assert seen == []


@pytest.mark.parametrize(
    ("code", "outcome", "retry_after"),
    [
        (500, Outcome.RETRY, None),
        (503, Outcome.RETRY, 7.0),
        (429, Outcome.RETRY, 7.0),
        (408, Outcome.RETRY, None),
        (400, Outcome.PERMANENT, None),
        (404, Outcome.PERMANENT, None),
        (410, Outcome.PERMANENT, None),
        (302, Outcome.PERMANENT, None),
    ],
)
async def test_status_classes(server, sender, code, outcome, retry_after) -> None:
    base, seen = server
    result = await sender.send({"url": f"{base}/{code}"}, MESSAGE)
    assert (result.outcome, result.status_code, result.retry_after_s) == (
        outcome,
        code,
        retry_after,
    )
    assert str(code) in result.error
    assert len(seen) == 1  # a redirect is not followed


async def test_slow_receiver_is_cut_at_the_timeout(server, sender: WebhookSender) -> None:
    base, _ = server
    started = time.monotonic()
    result = await sender.send({"url": f"{base}/0"}, MESSAGE)
    assert result.outcome is Outcome.RETRY and "timed out" in result.error
    assert time.monotonic() - started < 2


async def test_connection_refused_is_retried(sender: WebhookSender) -> None:
    result = await sender.send({"url": f"http://127.0.0.1:{free_port()}/"}, MESSAGE)
    assert result.outcome is Outcome.RETRY and "connection" in result.error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.1.2.3"])
async def test_private_destinations_are_blocked_by_default(server, host: str) -> None:
    base, seen = server
    port = base.rsplit(":", 1)[1]
    policy = AddressPolicy()
    async with HttpClient(policy) as session:
        result = await WebhookSender(session, 1).send({"url": f"http://{host}:{port}/200"}, MESSAGE)
    assert result.outcome is Outcome.PERMANENT
    assert "allowed_networks" in result.error
    assert seen == []


async def test_a_name_that_resolves_to_a_private_address_is_blocked(server) -> None:
    """A resolver that answers like a rebinding DNS name would: public-looking name, loopback IP."""
    base, seen = server
    port = int(base.rsplit(":", 1)[1])

    class Rebinding(aiohttp.abc.AbstractResolver):
        async def resolve(self, host, port=0, family=socket.AF_INET):
            return [
                {
                    "hostname": host,
                    "host": "127.0.0.1",
                    "port": port,
                    "family": family,
                    "proto": 0,
                    "flags": 0,
                }
            ]

        async def close(self) -> None:
            pass

    async with HttpClient(AddressPolicy(), resolver=Rebinding()) as client:
        result = await WebhookSender(client, 1).send(
            {"url": f"http://hooks.example.com:{port}/200"}, MESSAGE
        )
    assert result.outcome is Outcome.PERMANENT and "127.0.0.1" in result.error
    assert seen == []
