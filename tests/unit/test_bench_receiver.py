"""The bench's receiver: every webhook answered 204 on a kept-alive connection, the first
arrival of each marker kept and repeats counted per phase, read back over HTTP; a request it
cannot parse is answered 400 and its connection closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bench.bench_receiver import Arrivals, ReceiverProtocol


@pytest.fixture
async def receiver() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    arrivals = Arrivals()
    server = await loop.create_server(lambda: ReceiverProtocol(arrivals), "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def test_webhooks_are_counted_per_phase_first_arrival_kept(receiver: str) -> None:
    async with aiohttp.ClientSession() as http:
        for marker in ("steady:1", "steady:2", "steady:1", "burst:1"):
            async with http.post(f"{receiver}/hook", json={"body": marker}) as r:
                assert r.status == 204 and await r.read() == b""
        async with http.get(f"{receiver}/count?phase=steady") as r:
            assert await r.json() == {"distinct": 2, "repeats": 1}
        async with http.get(f"{receiver}/arrivals?phase=burst") as r:
            got = await r.json()
        async with http.get(f"{receiver}/count?phase=none") as r:
            assert await r.json() == {"distinct": 0, "repeats": 0}
        async with http.get(f"{receiver}/elsewhere") as r:
            assert r.status == 404
    assert list(got["first"]) == ["burst:1"] and got["repeats"] == 0


async def test_two_webhooks_on_one_connection_get_two_answers(receiver: str) -> None:
    host, port = receiver.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    for marker in (b"k:1", b"k:2"):
        body = b'{"body":"' + marker + b'"}'
        writer.write(
            b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert answer == b"HTTP/1.1 204 No Content\r\n\r\n"  # kept open: no Connection: close
    writer.close()


async def test_connection_close_is_honoured(receiver: str) -> None:
    host, port = receiver.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"body":"x:1"}'
    writer.write(
        b"POST /hook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: the receiver closed it
    assert answer.startswith(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    writer.close()


async def test_bytes_that_are_not_http_get_a_400_and_the_connection_closed(receiver: str) -> None:
    host, port = receiver.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00\x01 not a request\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    writer.close()
