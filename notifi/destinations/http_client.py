"""The delivery process's HTTP/1.1 client: POSTs over keep-alive connections pooled per origin,
responses parsed by httptools (llhttp, the parser of Node.js). It does what a send to a
destination needs and nothing more (no redirects, cookies, proxies or compression), so a POST
costs less than half the client CPU it cost through aiohttp's `ClientSession`, until then the
largest single share of the delivery role (README, Benchmark).

Every address is checked against the `AddressPolicy` before it is connected to: IP literals as
written, names on what they resolve to (remembered for `DNS_TTL_S`). A connection is reused only
after a complete response that allows it, and never after sitting idle for `IDLE_S`, so a
receiver that drops idle connections after 5 s (Node.js's default) is not raced."""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohappyeyeballs
import httptools
from aiohttp.abc import AbstractResolver
from yarl import URL

from notifi.destinations.network import AddressPolicy, BlockedAddress, GuardedResolver, literal_ip

IDLE_S = 4.0
DNS_TTL_S = 10.0
CONNECT_STAGGER_S = 0.25  # aiohttp's
MAX_HEAD_BYTES = 65536  # a response's status line and headers (aiohttp: 8190 per line)
_HEAD_SLICE = 8192
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ConnectFailed(OSError):
    """No connection could be opened to any address of the destination's host."""


class BadResponse(Exception):
    """The receiver closed the connection or answered with something that is not HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-case; of a repeated name, the first value
    body: bytes  # at most the client's read limit


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's request goes: the origin to connect to and the request's first lines."""

    tls: bool
    host: str  # the name or address connected to (IPv6 without brackets)
    ip: str | None  # the host when it is an IP literal, as the policy checks it
    port: int
    head: bytes  # "POST <path> HTTP/1.1\r\nHost: ...\r\n"


@functools.lru_cache(maxsize=1024)
def target(url: str) -> Target:
    """A URL's origin and request line; ValueError when it is not an absolute http(s) URL."""
    parsed = URL(url)
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.raw_host:
        raise ValueError(f"not an absolute http or https URL: {url[:200]!r}")
    host = parsed.raw_host  # IDNA-encoded, as sent
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    ip = literal_ip(host)
    authority = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[parsed.scheme]:
        authority = f"{authority}:{port}"
    path = parsed.raw_path_qs or "/"
    head = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n".encode("ascii")
    return Target(parsed.scheme == "https", host, None if ip is None else str(ip), port, head)


def request_bytes(t: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    """The whole request; ValueError for a header that would break the framing."""
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    block = "".join(lines)
    if block.count("\n") != len(lines) or block.count("\r") != len(lines):
        raise ValueError("a header name or value holds a line break")
    return b"".join((t.head, block.encode(), b"Content-Length: %d\r\n\r\n" % len(body), body))


def _addr_info(address: str, port: int) -> aiohappyeyeballs.AddrInfoType:
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; parses the response as it arrives."""

    def __init__(self, read_limit: int) -> None:
        self._read_limit = read_limit
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_len = 0
        self.reusable = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # nothing was asked: a receiver talking out of turn is not reused
            return
        try:
            if self._status >= 200:
                self._parser.feed_data(data)
            else:
                self._feed_head(data)
        except BadResponse as exc:
            self._fail(exc)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the receiver switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"malformed HTTP response: {exc}"))
        else:
            # The answer is known once its status is, and for an error its first body bytes
            # (as aiohttp's read gave them): the rest is not waited for, and the connection,
            # its response unfinished, is not used again.
            if self._status >= 200 and (self._status < 300 or self._body_len):
                self._finish(keep_alive=False)

    def _feed_head(self, data: bytes) -> None:
        """Feeds the parser in slices while the head is arriving, so that a head longer than
        `MAX_HEAD_BYTES` (one endless header line, say) is refused as it grows."""
        for start in range(0, len(data), _HEAD_SLICE):
            if self._status >= 200:
                self._parser.feed_data(data[start:])
                return
            piece = data[start : start + _HEAD_SLICE]
            self._head_bytes += len(piece)
            if self._head_bytes > MAX_HEAD_BYTES:
                raise BadResponse(f"response head over {MAX_HEAD_BYTES} bytes")
            self._parser.feed_data(piece)

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._status >= 200:
                self._finish(keep_alive=False)  # the answer was given; its body ended here
            else:
                waiter.set_exception(BadResponse("the receiver closed the connection"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # a second response to one request

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, chunk: bytes) -> None:
        room = self._read_limit - self._body_len
        if room > 0:
            part = chunk[:room]
            self._body.append(part)
            self._body_len += len(part)
        if self._body_len >= self._read_limit:
            self._finish(keep_alive=False)  # enough read; the rest is not waited for

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim response: the final one follows
            self._status, self._headers = 0, {}
            return
        self._finish(keep_alive=self._parser.should_keep_alive())

    # the client's side
    async def request(self, data: bytes) -> Response:
        assert self._transport is not None
        self._status, self._headers, self._head_bytes = 0, {}, 0
        self._body, self._body_len = [], 0
        self.reusable = False
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    @property
    def usable(self) -> bool:
        """Open and not closing: the transport says so at once, where `connection_lost` comes a
        loop turn after a FIN or a close."""
        return self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        """Drops the connection at once, unsent bytes too: a receiver that stopped reading
        must not keep it (and its buffer) open."""
        if self._transport is not None:
            self._transport.abort()

    def _finish(self, *, keep_alive: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        # Not when the receiver answered before taking the whole request (a 413, say).
        self.reusable = (
            keep_alive and self.usable and not self._transport.get_write_buffer_size()  # type: ignore[union-attr]
        )
        waiter.set_result(Response(self._status, self._headers, b"".join(self._body)))
        self._headers = {}  # bytes past the response must not reach the one returned

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()


class _Origin:
    """The connections of one (tls, host, port): its limit, its idle ones, its requests."""

    __slots__ = ("busy", "idle", "slots")

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit)
        self.idle: list[_Connection] = []
        self.busy = 0


class HttpClient:
    """POSTs to http(s) URLs, at most `limit` connections open and `limit_per_host` per origin,
    each request bounded by `timeout_s` from the first wait for a connection to the last byte
    read (as aiohttp's total timeout). Reads at most `read_limit` bytes of a response body.
    It keeps no cookies: it sends for every client, and a cookie one receiver set while
    answering one client's delivery must not go out with the next delivery to that host."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        limit: int = 512,
        limit_per_host: int = 64,
        read_limit: int = 4096,
        resolver: AbstractResolver | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = GuardedResolver(policy, resolver)
        self._read_limit = read_limit
        self._limit = asyncio.Semaphore(limit)
        self._limit_per_host = limit_per_host
        self._origins: dict[tuple[bool, str, int], _Origin] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._tls = tls  # the system's trust store when None, made at the first https send
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float
    ) -> Response:
        """One POST with exactly `headers` (plus Host and Content-Length). Raises ValueError (a
        URL or header that cannot be sent), BlockedAddress, ConnectFailed, BadResponse,
        TimeoutError or OSError."""
        t = target(url)
        data = request_bytes(t, headers, body)
        key = (t.tls, t.host, t.port)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(self._limit_per_host)
        origin.busy += 1
        try:
            async with asyncio.timeout(timeout_s), origin.slots, self._limit:
                conn = self._take_idle(origin) or await self._connect(t)
                try:
                    return await conn.request(data)
                finally:
                    self._put_back(origin, conn)
        finally:
            origin.busy -= 1
            if not origin.busy and not origin.idle:  # nothing open or asked: forget it
                self._origins.pop(key, None)

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()
        await self._resolver.close()

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = origin.idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable and now - conn.idle_since < IDLE_S:
                return conn
            conn.close()
        return None

    def _put_back(self, origin: _Origin, conn: _Connection) -> None:
        if not conn.reusable or not conn.usable or self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        origin.idle.append(conn)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(IDLE_S, self._close_stale)

    def _close_stale(self) -> None:
        """Closes connections idle for `IDLE_S` and forgets origins with nothing open or
        asked; runs every `IDLE_S` while any connection is idle."""
        self._sweep = None
        now = time.monotonic()
        for key, origin in list(self._origins.items()):
            stale = [c for c in origin.idle if not c.usable or now - c.idle_since >= IDLE_S]
            for conn in stale:
                conn.close()
                origin.idle.remove(conn)
            if not origin.idle and not origin.busy:
                del self._origins[key]
        if not self._closed and any(o.idle for o in self._origins.values()):
            self._sweep = asyncio.get_running_loop().call_later(IDLE_S, self._close_stale)

    async def _connect(self, t: Target) -> _Connection:
        """A new connection to one of the host's allowed addresses, tried as aiohttp does
        (Happy Eyeballs, RFC 8305: families interleaved, the next attempt started after
        `CONNECT_STAGGER_S` while the last one hangs)."""
        if t.ip is not None:
            self._policy.check(t.host, t.ip)
            addresses = [t.ip]
        else:
            addresses = await self._resolve(t.host, t.port)
        try:
            sock = await aiohappyeyeballs.start_connection(
                [_addr_info(address, t.port) for address in addresses],
                happy_eyeballs_delay=CONNECT_STAGGER_S,
                interleave=1,
            )
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {t.host}:{t.port} ({exc})") from exc
        tls = self._tls_context() if t.tls else None
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self._read_limit),
                sock=sock,
                ssl=tls,
                server_hostname=t.host.rstrip(".") if tls else None,  # as aiohttp: no root dot
            )
        except OSError as exc:  # the TLS handshake
            sock.close()
            raise ConnectFailed(f"cannot connect to {t.host}:{t.port} ({exc})") from exc
        return conn

    async def _resolve(self, host: str, port: int) -> list[str]:
        """The allowed addresses of `host` (raises BlockedAddress when there are none),
        remembered for `DNS_TTL_S`."""
        now = time.monotonic()
        known = self._dns.get((host, port))
        if known is not None and known[0] > now:
            return known[1]
        try:
            found = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
        except BlockedAddress:
            raise
        except OSError as exc:
            raise ConnectFailed(f"cannot resolve {host}: {exc.strerror or exc}") from exc
        addresses = list(dict.fromkeys(r["host"] for r in found))
        if len(self._dns) >= 4096:
            self._dns.clear()
        self._dns[(host, port)] = (now + DNS_TTL_S, addresses)
        return addresses

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls
