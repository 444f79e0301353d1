"""The delivery client against raw loopback servers that answer byte for byte: keep-alive and
when a connection is not reused, every way a response may be framed, receivers that misbehave,
the limits, the idle sweep and the address policy at connect time."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp.abc import AbstractResolver
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notifi.destinations import http_client
from notifi.destinations.http_client import BadResponse, ConnectFailed, HttpClient
from notifi.destinations.network import AddressPolicy, BlockedAddress
from tests.support.process import free_port

pytestmark = pytest.mark.timeout(30)
LOOPBACK = AddressPolicy(["127.0.0.0/8"])
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class RawServer:
    """Reads each request whole (headers and Content-Length body), then lets `answer` write
    what it likes; counts connections and keeps the requests."""

    answer: Callable[[asyncio.StreamWriter, int], Awaitable[None]]
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(writer, len(self.requests))
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.open_now -= 1
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    servers = []

    async def start(answer: Callable[[asyncio.StreamWriter, int], Awaitable[None]]) -> RawServer:
        raw = RawServer(answer)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(server)
        raw.port = server.sockets[0].getsockname()[1]
        return raw

    yield start
    for server in servers:
        server.close()


def writes(data: bytes, *, close: bool = False) -> Callable[..., Awaitable[None]]:
    async def answer(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()

    return answer


async def post(client: HttpClient, url: str, timeout_s: float = 5) -> http_client.Response:
    return await client.post(url, {"content-type": "application/json"}, b"{}", timeout_s=timeout_s)


async def test_keep_alive_serves_many_requests_on_one_connection(serve) -> None:
    raw = await serve(writes(OK))
    async with HttpClient(LOOPBACK) as client:
        for _ in range(5):
            response = await post(client, raw.url)
            assert (response.status, response.body) == (200, b"ok")
    assert raw.connections == 1 and len(raw.requests) == 5
    assert raw.requests[0].startswith(b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}" in raw.requests[0]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
)
async def test_a_connection_the_receiver_ends_is_not_reused(serve, answer: bytes) -> None:
    raw = await serve(writes(answer))
    async with HttpClient(LOOPBACK) as client:
        for _ in range(3):
            assert (await post(client, raw.url)).status == 200
    assert raw.connections == 3


async def test_a_chunked_body_is_read_and_the_connection_kept(serve) -> None:
    raw = await serve(
        writes(b"HTTP/1.1 503 No\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    )
    async with HttpClient(LOOPBACK) as client:
        response = await post(client, raw.url)
        assert (response.status, response.body) == (503, b"abc")
        await post(client, raw.url)
    assert raw.connections == 1


async def test_a_body_ended_by_the_close_is_read(serve) -> None:
    raw = await serve(writes(b"HTTP/1.1 400 Bad\r\nRetry-After: 3\r\n\r\nwhy not", close=True))
    async with HttpClient(LOOPBACK) as client:
        response = await post(client, raw.url)
    assert (response.status, response.body, response.headers["retry-after"]) == (
        400,
        b"why not",
        "3",
    )


async def test_only_the_read_limit_of_a_long_body_is_read_and_the_connection_dropped(
    serve,
) -> None:
    async def endless(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 20000)
        await writer.drain()  # and never the rest

    raw = await serve(endless)
    async with HttpClient(LOOPBACK, read_limit=100) as client:
        response = await post(client, raw.url, timeout_s=2)
        assert (response.status, response.body) == (500, b"x" * 100)
        await post(client, raw.url, timeout_s=2)
    assert raw.connections == 2


async def test_an_interim_response_is_skipped(serve) -> None:
    raw = await serve(writes(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    async with HttpClient(LOOPBACK) as client:
        assert (await post(client, raw.url)).body == b"ok"
        assert (await post(client, raw.url)).body == b"ok"
    assert raw.connections == 1


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"", "closed the connection"),
        (b"SMTP ready\r\n", "malformed"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
            "switched",
        ),
    ],
)
async def test_what_is_not_a_whole_response_is_a_bad_response(
    serve, answer: bytes, says: str
) -> None:
    raw = await serve(writes(answer, close=True))
    async with HttpClient(LOOPBACK) as client:
        with pytest.raises(BadResponse, match=says):
            await post(client, raw.url)


async def test_a_head_past_the_bound_is_a_bad_response(serve) -> None:
    header = b"X-Big: " + b"y" * 8000 + b"\r\n"
    raw = await serve(writes(b"HTTP/1.1 200 OK\r\n" + header * 10 + b"Content-Length: 0\r\n\r\n"))
    async with HttpClient(LOOPBACK) as client:
        with pytest.raises(BadResponse, match="head over"):
            await post(client, raw.url)


async def test_an_endless_header_line_is_refused_as_it_grows(serve) -> None:
    async def endless(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        for _ in range(200):  # 20 MB if nobody stops it, never a line end
            writer.write(b"a" * 100_000)
            await writer.drain()

    raw = await serve(endless)
    async with HttpClient(LOOPBACK) as client:
        with pytest.raises(BadResponse, match="head over 65536 bytes"):
            await post(client, raw.url, timeout_s=10)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok",  # and the rest never comes
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
)
async def test_a_success_is_settled_by_its_status_not_its_body(serve, answer: bytes) -> None:
    async def stalls(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(answer)
        await asyncio.sleep(2)

    raw = await serve(stalls)
    async with HttpClient(LOOPBACK) as client:
        started = asyncio.get_running_loop().time()
        assert (await post(client, raw.url, timeout_s=1)).status in (200, 204)
        assert asyncio.get_running_loop().time() - started < 0.5


async def test_an_error_is_settled_by_its_first_body_bytes_and_a_cut_success_counts(
    serve,
) -> None:
    async def partial(writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            writer.write(b"HTTP/1.1 503 No\r\nContent-Length: 100\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"try later")  # and the rest never comes
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
            writer.close()

    raw = await serve(partial)
    async with HttpClient(LOOPBACK) as client:
        response = await post(client, raw.url, timeout_s=1)
        assert (response.status, response.body) == (503, b"try later")
        assert (await post(client, raw.url, timeout_s=1)).status == 200
    assert raw.connections == 2


async def test_a_silent_receiver_is_cut_at_the_timeout_and_its_connection_dropped(serve) -> None:
    async def silent(writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await asyncio.sleep(1)
        writer.write(OK)

    raw = await serve(silent)
    async with HttpClient(LOOPBACK) as client:
        with pytest.raises(TimeoutError):
            await post(client, raw.url, timeout_s=0.3)
        assert (await post(client, raw.url)).status == 200
    assert raw.connections == 2


async def test_a_connection_closed_while_idle_is_not_used_again(serve) -> None:
    raw = await serve(writes(OK))
    async with HttpClient(LOOPBACK) as client:
        await post(client, raw.url)
        for conn in client._origins[(False, "127.0.0.1", raw.port)].idle:
            conn._transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        await asyncio.sleep(0.1)  # the close is seen
        assert (await post(client, raw.url)).status == 200
    assert raw.connections == 2


async def test_bytes_nobody_asked_for_end_the_connection(serve) -> None:
    raw = await serve(writes(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    async with HttpClient(LOOPBACK) as client:
        response = await post(client, raw.url)
        await post(client, raw.url)
    assert response.headers == {"content-length": "2"}
    assert raw.connections == 2


async def test_idle_connections_are_closed_by_the_sweep(serve, monkeypatch) -> None:
    monkeypatch.setattr(http_client, "IDLE_S", 0.2)
    raw = await serve(writes(OK))
    async with HttpClient(LOOPBACK) as client:
        await post(client, raw.url)
        assert raw.open_now == 1
        await asyncio.sleep(0.6)
        assert raw.open_now == 0 and client._origins == {}
        await post(client, raw.url)
    assert raw.connections == 2


async def test_connections_per_host_are_bounded(serve) -> None:
    async def slow(writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(0.05)
        writer.write(OK)

    raw = await serve(slow)
    async with HttpClient(LOOPBACK, limit_per_host=3) as client:
        await asyncio.gather(*(post(client, raw.url) for _ in range(12)))
    assert raw.most_open == 3 and len(raw.requests) == 12


async def test_a_refused_connection_is_connect_failed() -> None:
    async with HttpClient(LOOPBACK) as client:
        with pytest.raises(ConnectFailed, match=r"cannot connect to 127\.0\.0\.1"):
            await post(client, f"http://127.0.0.1:{free_port()}/")


async def test_addresses_are_checked_before_connecting(serve) -> None:
    raw = await serve(writes(OK))
    async with HttpClient(AddressPolicy()) as client:
        with pytest.raises(BlockedAddress, match="allowed_networks"):
            await post(client, raw.url)
    assert raw.connections == 0


class Counting(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses, self.calls = addresses, 0

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.calls += 1
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_names_are_resolved_through_the_policy_and_remembered(serve) -> None:
    raw = await serve(writes(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
    port = raw.port
    resolver = Counting("127.0.0.1")
    async with HttpClient(LOOPBACK, resolver=resolver) as client:
        for _ in range(3):
            assert (await post(client, f"http://hooks.example:{port}/hook")).status == 204
    assert resolver.calls == 1 and raw.connections == 3
    assert b"\r\nHost: hooks.example:" in raw.requests[0]
    async with HttpClient(AddressPolicy(), resolver=Counting("127.0.0.1")) as client:
        with pytest.raises(BlockedAddress):
            await post(client, f"http://hooks.example:{port}/hook")
    assert len(raw.requests) == 3


def self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and hooks.example, and its key, as files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("hooks.example")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


async def test_https_is_verified_against_the_trust_store(tmp_path) -> None:
    cert, key = self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    raw = RawServer(writes(OK))
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=served)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    try:
        async with HttpClient(LOOPBACK) as client:  # the system's store: not trusted
            with pytest.raises(ConnectFailed, match=r"CERTIFICATE_VERIFY_FAILED"):
                await post(client, url)
        trusting = ssl.create_default_context(cafile=cert)
        async with HttpClient(LOOPBACK, tls=trusting) as client:
            assert (await post(client, url)).body == b"ok"
            assert (await post(client, url)).body == b"ok"
        # A name written with the root's dot is checked without it, as aiohttp did.
        named = url.replace("127.0.0.1", "hooks.example.")
        async with HttpClient(LOOPBACK, tls=trusting, resolver=Counting("127.0.0.1")) as client:
            assert (await post(client, named)).body == b"ok"
        # the refused handshake never reached the handler; the first two sends shared one
        assert raw.connections == 2 and len(raw.requests) == 3
    finally:
        server.close()


async def test_an_address_that_refuses_is_passed_over_for_the_next(serve) -> None:
    raw = await serve(writes(OK))  # listening on 127.0.0.1 only
    port = raw.port
    async with HttpClient(LOOPBACK, resolver=Counting("127.0.0.2", "127.0.0.1")) as client:
        assert (await post(client, f"http://hooks.example:{port}/hook")).status == 200
    async with HttpClient(LOOPBACK, resolver=Counting("127.0.0.2", "127.0.0.3")) as client:
        with pytest.raises(ConnectFailed, match=r"cannot connect to hooks\.example"):
            await post(client, f"http://hooks.example:{port}/hook")
    assert raw.connections == 1


async def test_an_answer_before_the_whole_request_was_taken_ends_the_connection() -> None:
    connections = 0

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")  # the head only, never the body
        writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)  # and keeps the connection open

    server = await asyncio.start_server(early, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        async with HttpClient(LOOPBACK) as client:
            for _ in range(2):
                response = await client.post(url, {}, b"x" * 32_000_000, timeout_s=5)
                assert response.status == 413
        assert connections == 2
    finally:
        server.close()


async def test_a_timed_out_request_leaves_nothing_behind_for_a_receiver_that_stopped_reading() -> (
    None
):
    received = asyncio.get_running_loop().create_future()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.8)  # reads nothing until the client gave up
        size = 0
        try:
            while chunk := await reader.read(1 << 20):
                size += len(chunk)
        except ConnectionError:
            pass
        received.set_result(size)

    server = await asyncio.start_server(deaf, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        async with HttpClient(LOOPBACK) as client:
            with pytest.raises(TimeoutError):
                await client.post(url, {}, b"x" * 64_000_000, timeout_s=0.3)
            assert client._origins == {}
        # Dropped at once, its unsent bytes too (a graceful close would deliver all of them).
        assert await asyncio.wait_for(received, 5) < 64_000_000
    finally:
        server.close()


async def test_origins_nothing_is_open_to_are_forgotten(serve) -> None:
    closing = await serve(writes(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
    async with HttpClient(LOOPBACK) as client:
        await post(client, closing.url)
        with pytest.raises(ConnectFailed):
            await post(client, f"http://127.0.0.1:{free_port()}/")
        assert client._origins == {}
