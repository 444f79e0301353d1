"""The webhook receiver of `make bench`, a process of its own (its CPU is not the system's):
records the first arrival time of every marker (the notification's `body`, "<phase>:<n>") and
counts repeats, per phase. The bench reads it over HTTP.

It shares the machine's cores with the system under test, so it does as little as an HTTP/1.1
server can: an asyncio protocol with httptools' parser (llhttp, as Notifi's own webhook client),
keep-alive, a fixed 204 for every webhook. aiohttp's server did the same for 0.14 ms of CPU a
webhook at 1,000/s (2026-12-07), CPU the system under test did not have in the throughput
phases; this costs a fraction of it (README, Benchmark).

    python -m bench.bench_receiver   # prints its port, then serves until killed
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from typing import cast
from urllib.parse import parse_qs, urlsplit

import httptools
import orjson
import uvloop

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n"  # no Content-Length: a 204 has no body (RFC 9110)
CLOSE = b"Connection: close\r\n"


class Arrivals:
    def __init__(self) -> None:
        self.first: dict[str, dict[str, float]] = defaultdict(dict)  # phase -> marker -> time
        self.repeats: dict[str, int] = defaultdict(int)

    def hook(self, body: bytes, at: float) -> None:
        marker = orjson.loads(body)["body"]
        phase = marker.partition(":")[0]
        seen = self.first[phase]
        if marker in seen:
            self.repeats[phase] += 1
        else:
            seen[marker] = at

    def count(self, phase: str) -> dict[str, int]:
        return {"distinct": len(self.first.get(phase, {})), "repeats": self.repeats.get(phase, 0)}

    def arrivals(self, phase: str) -> dict[str, object]:
        return {"first": self.first.get(phase, {}), "repeats": self.repeats.get(phase, 0)}


def _response(status: str, body: bytes, keep_alive: bool) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + (b"" if keep_alive else CLOSE) + b"\r\n" + body


class ReceiverProtocol(asyncio.Protocol):
    """One connection: requests parsed as they come, each answered in order."""

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.write(_response("400 Bad Request", b"{}", keep_alive=False))
            self._transport.close()

    # httptools' callbacks

    def on_message_begin(self) -> None:
        self._url, self._body = b"", []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        keep_alive = self._parser.should_keep_alive()
        self._transport.write(self._answer(keep_alive))
        if not keep_alive:
            self._transport.close()

    def _answer(self, keep_alive: bool) -> bytes:
        method = self._parser.get_method()
        if method == b"POST" and self._url == b"/hook":  # every webhook: nothing else parsed
            self._arrivals.hook(b"".join(self._body), time.time())
            return NO_CONTENT + (b"" if keep_alive else CLOSE) + b"\r\n"
        url = urlsplit(self._url.decode("latin-1"))
        phase = parse_qs(url.query).get("phase", [""])[0]
        if method == b"GET" and url.path == "/count":
            return _response("200 OK", orjson.dumps(self._arrivals.count(phase)), keep_alive)
        if method == b"GET" and url.path == "/arrivals":
            return _response("200 OK", orjson.dumps(self._arrivals.arrivals(phase)), keep_alive)
        return _response("404 Not Found", b"{}", keep_alive)


async def serve() -> None:
    arrivals = Arrivals()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ReceiverProtocol(arrivals), "127.0.0.1", 0, backlog=4096
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(uvloop.run(serve()))
