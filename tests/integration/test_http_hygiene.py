"""The API's HTTP edge on a real socket (the HttpServer actor, real Postgres): slow or partial
requests are closed, oversized ones refused before their body, bad encodings and the
parser's own errors answered as problem documents, and no bad input is a 500."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import structlog
from aiohttp import web

from actors.http import HttpServer
from notifi import logs
from notifi.api.app import ApiContext, build_app
from notifi.api.health import health_app
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.store import Store
from tests.support.api import accepting

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_BODY = 65536
GENEROUS_S = 15.0  # upper bound for anything that should take about a second
HOOK = {"type": "webhook", "url": "https://example.com/hook"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict:
        assert self.headers.get("content-type", "").startswith("application/problem+json"), self
        return orjson.loads(self.body)


async def read_reply(reader: asyncio.StreamReader, timeout_s: float = GENEROUS_S) -> Reply:
    async with asyncio.timeout(timeout_s):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(status, headers, body)


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection (with nothing more sent) in good time."""
    async with asyncio.timeout(GENEROUS_S):
        return await reader.read() == b""


async def wait_closed(reader: asyncio.StreamReader, timeout_s: float = GENEROUS_S) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(timeout_s):
        return await reader.read(-1)


@pytest.fixture
async def port(store: Store) -> AsyncIterator[int]:
    async def ready() -> dict[str, bool]:
        return {"postgres": await store.ping()}

    async with accepting(store) as submit_:
        ctx = ApiContext(
            store=store,
            validator=Validator(Limits(20, 200, 10_000, 100_000), {}, 1024),
            submit=submit_,
            ready=ready,
            default_page_size=2,
            max_page_size=5,
            max_body_bytes=MAX_BODY,
            body_timeout_s=BODY_TIMEOUT_S,
        )
        server = HttpServer(
            "api",
            lambda: build_app(ctx, 2 * MAX_BODY),
            "127.0.0.1",
            0,
            header_timeout_s=HEADER_TIMEOUT_S,
        )
        await server.on_start()
        assert server.bound_port is not None
        yield server.bound_port
        await server.on_stop()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def post(body: bytes, *headers: str, path: str = "/api/notifications") -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "Host: test",
        "Content-Type: application/json",
        *headers,
    ]
    if not any(h.lower().startswith("content-length") for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_partial_headers_are_answered_408_and_closed(port: int) -> None:
    reader, writer = await connect(port)
    started = time.monotonic()
    writer.write(b"POST /api/notifications HTTP/1.1\r\nHost: test\r\nContent-Len")
    reply = await read_reply(reader)
    assert reply.status == 408 and await closed(reader)
    assert reply.problem()["type"].endswith("/request-timeout")
    assert HEADER_TIMEOUT_S * 0.9 <= time.monotonic() - started < GENEROUS_S
    writer.close()


async def test_dribbled_headers_meet_one_deadline_not_one_per_byte(port: int) -> None:
    reader, writer = await connect(port)
    started = time.monotonic()

    async def dribble() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 200:
            if writer.is_closing():
                return
            writer.write(bytes([byte]))
            await asyncio.sleep(HEADER_TIMEOUT_S / 5)

    dribbler = asyncio.create_task(dribble())
    try:
        sent = await wait_closed(reader)
    finally:
        dribbler.cancel()
    assert sent.startswith(b"HTTP/1.0 408"), sent
    assert time.monotonic() - started < GENEROUS_S
    writer.close()


async def test_a_silent_connection_is_closed(port: int) -> None:
    reader, writer = await connect(port)
    assert (await wait_closed(reader)).startswith(b"HTTP/1.0 408")
    writer.close()


async def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_timeout(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    assert (await read_reply(reader)).status == 200
    await asyncio.sleep(HEADER_TIMEOUT_S * 2.5)  # idle, between requests
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    assert (await read_reply(reader)).status == 200
    writer.close()


async def test_a_slow_body_is_answered_408_and_closed(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(post(b"", "Content-Length: 100") + b'{"body": ')
    reply = await read_reply(reader)
    assert reply.status == 408 and await closed(reader)
    assert "body" in reply.problem()["detail"]
    writer.close()


async def test_content_length_over_the_limit_is_413_before_the_body(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(post(b"", "Content-Length: 1000000000"))  # and not one byte of it
    reply = await read_reply(reader, timeout_s=BODY_TIMEOUT_S * 0.9 + 5)
    assert reply.status == 413 and await closed(reader)
    assert reply.problem()["type"].endswith("/payload-too-large")
    writer.close()


async def test_expect_100_continue_is_refused_at_once_when_too_large(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(post(b"", "Content-Length: 100000000", "Expect: 100-continue"))
    reply = await read_reply(reader)
    assert reply.status == 413 and await closed(reader)
    writer.close()
    body = orjson.dumps({"body": "b", "destinations": [HOOK]})
    reader, writer = await connect(port)
    writer.write(post(b"", f"Content-Length: {len(body)}", "Expect: 100-continue"))
    assert (await read_reply(reader)).status == 100
    writer.write(body)
    assert (await read_reply(reader)).status == 202
    writer.close()


async def test_a_chunked_body_over_the_limit_is_413(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(
        b"POST /api/notifications HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 4000
    for _ in range(MAX_BODY // len(chunk) + 2):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    reply = await read_reply(reader)
    assert reply.status == 413, reply
    assert reply.problem()["status"] == 413
    writer.close()


async def test_encodings(port: int) -> None:
    good = orjson.dumps({"body": "b", "destinations": [HOOK]})
    cases = [
        (gzip.compress(good), "gzip", 202),
        (b"this is not gzip", "gzip", 400),
        (b"nor deflate", "deflate", 400),
        (good, "identity", 202),
        (good, "compress", 415),
        (good, "gzip, gzip", 415),
        (good, "x-notifi-secret", 415),
    ]
    for body, encoding, status in cases:
        reader, writer = await connect(port)
        writer.write(post(body, f"Content-Encoding: {encoding}"))
        reply = await read_reply(reader)
        assert reply.status == status, (encoding, reply)
        if status >= 400:
            assert reply.problem()["status"] == status
        writer.close()


async def test_a_gzip_bomb_stops_at_the_body_limit(port: int) -> None:
    bomb = gzip.compress(b'{"body": "' + b"a" * 10_000_000 + b'"}')
    reader, writer = await connect(port)
    writer.write(post(bomb, "Content-Encoding: gzip"))
    reply = await read_reply(reader)
    assert reply.status == 413, reply
    writer.close()


async def test_an_over_long_header_line_is_a_problem_document_without_its_bytes(port: int) -> None:
    reader, writer = await connect(port)
    secret = "Bearer sk_live_" + "s" * 9000
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: test\r\nAuthorization: {secret}\r\n\r\n".encode())
    reply = await read_reply(reader)
    assert reply.status == 400 and await closed(reader)
    doc = reply.problem()
    assert "longer than" in doc["detail"]
    assert b"sk_live_" not in reply.body
    writer.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
)
async def test_parser_errors_are_problem_documents(port: int, raw: bytes) -> None:
    reader, writer = await connect(port)
    writer.write(raw)
    reply = await read_reply(reader)
    assert 400 <= reply.status < 500, reply
    assert reply.problem()["status"] == reply.status
    writer.close()


async def test_deep_nesting_is_never_a_500(port: int) -> None:
    for levels in (40, 300, 1000, 1100, 5000):
        data = b'{"x":' + b'{"a":' * levels + b"1" + b"}" * levels + b"}"
        body = b'{"body":"b","destinations":[{"type":"webhook","url":"https://example.com/h",'
        body += b'"secret":"whsec_deep","headers":{"Authorization":"Bearer t0k3n"}}],"data":'
        body += data + b"}"
        reader, writer = await connect(port)
        writer.write(post(body, path="/api/notifications"))
        reply = await read_reply(reader)
        assert reply.status == 422, (levels, reply)
        assert reply.problem()["status"] == reply.status
        writer.close()


async def test_the_metrics_endpoint_is_guarded_too() -> None:
    async def ready() -> dict[str, bool]:
        return {"ok": True}

    server = HttpServer(
        "metrics", lambda: health_app(ready), "127.0.0.1", 0, header_timeout_s=HEADER_TIMEOUT_S
    )
    await server.on_start()
    try:
        assert server.bound_port is not None
        reader, writer = await connect(server.bound_port)
        writer.write(b"GARBAGE\r\n\r\n")
        assert (await read_reply(reader)).problem()["status"] == 400
        writer.close()
        reader, writer = await connect(server.bound_port)
        writer.write(b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await read_reply(reader)).problem()["status"] == 404
        writer.close()
        reader, writer = await connect(server.bound_port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost")
        assert (await read_reply(reader)).status == 408
        writer.close()
    finally:
        await server.on_stop()


async def test_an_unexpected_error_is_a_quick_500_that_logs_no_secret(store: Store) -> None:
    """A handler that fails deep in a recursion, with a secret in its locals and in the body it
    read: a 500 problem document at once, and a log line without the secret or the locals."""
    secret = "whsec_unexpected_0123456789abcdef"
    stream = io.StringIO()
    logs.configure("console", "info", stream=stream)

    async def ready() -> dict[str, bool]:
        return {"ok": True}

    async def boom(request: web.Request) -> web.Response:
        body = await request.read()  # noqa: F841  # the body, in a local

        def dive(n: int, token: str) -> None:
            dive(n + 1, token)

        dive(0, secret)
        raise AssertionError("unreachable")

    ctx = ApiContext(
        store=store,
        validator=Validator(Limits(20, 200, 10_000, 100_000), {}, 1024),
        submit=None,  # type: ignore[arg-type]  # never reached
        ready=ready,
        default_page_size=2,
        max_page_size=5,
    )

    def make_app() -> web.Application:
        app = build_app(ctx)
        app.router.add_post("/boom", boom)
        return app

    server = HttpServer("api", make_app, "127.0.0.1", 0)
    await server.on_start()
    try:
        assert server.bound_port is not None
        reader, writer = await connect(server.bound_port)
        started = time.monotonic()
        body = orjson.dumps({"destinations": [{"secret": secret}]})
        writer.write(post(body, path="/boom"))
        reply = await read_reply(reader)
        assert reply.status == 500 and reply.problem()["type"].endswith("/internal-error")
        assert time.monotonic() - started < 5
        writer.close()
    finally:
        await server.on_stop()
        structlog.reset_defaults()
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == "notifi"]:
            root.removeHandler(handler)
    text = stream.getvalue()
    assert "api_request_failed" in text and "RecursionError" in text
    assert secret not in text and secret[6:] not in text
    assert len(text) < 20_000
