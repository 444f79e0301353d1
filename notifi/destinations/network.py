"""The block on private, loopback and link-local destinations (SSRF), checked on the resolved
address at connect time so a DNS name cannot smuggle one in; and the shape of a destination URL,
checked at submit time, which refuses IP literals in any but their canonical form."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_CHARS = 2048
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# A label that C's inet_aton (and the WHATWG URL parser) reads as a number: decimal, octal
# with a leading 0, or hex with 0x.
_NUMBER_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
# Addresses and URLs whose checks are remembered (each check is a pure function of its text;
# every accept and every send of the same destination would otherwise parse it again).
_CACHED_ADDRESSES = 4096
_CACHED_URLS = 1024


class BlockedAddress(OSError):
    """The destination resolves only to addresses Notifi may not call."""


class AddressPolicy:
    def __init__(self, allowed_networks: Sequence[str] = ()) -> None:
        self.allowed = []
        # The decision per address as written, since every send to an IP literal asks again
        # (the policy never changes after start; bounded, as addresses come from clients).
        self._allowed_text: dict[str, bool] = {}
        for cidr in allowed_networks:
            try:
                self.allowed.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise ValueError(f"delivery.allowed_networks: {cidr!r} is not a CIDR") from None

    def is_allowed(self, ip: IPAddress) -> bool:
        if any(ip in net for net in self.allowed if net.version == ip.version):
            return True
        return not _is_internal(ip)

    def check(self, host: str, ip_text: str) -> None:
        allowed = self._allowed_text.get(ip_text)
        if allowed is None:
            allowed = self.is_allowed(ipaddress.ip_address(ip_text.split("%", 1)[0]))  # no zone id
            if len(self._allowed_text) >= _CACHED_ADDRESSES:
                self._allowed_text.clear()
            self._allowed_text[ip_text] = allowed
        if not allowed:
            ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
            raise BlockedAddress(
                f"{host} is {ip}, a private, loopback or link-local address; "
                "add it to delivery.allowed_networks to allow it"
            )


def _is_internal(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo or (None, None))[1]
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and int(ip) >> 32 == 0 and int(ip) > 1:  # IPv4-compatible ::a.b.c.d
            embedded = ipaddress.IPv4Address(int(ip))
        if embedded is not None and _is_internal(embedded):
            return True
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return True
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if self._policy.is_allowed(literal_ip(r["host"]))]
        if not allowed:
            self._policy.check(host, found[0]["host"])  # raises, naming the address
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _inet_aton(host: str) -> str | None:
    """The dotted quad C's inet_aton reads `host` as (it takes 127.1, 0x7f.1, 2130706433, …)."""
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def ipv4_literal_problem(written: str, connected: str) -> str | None:
    """What is wrong with a host that is, or could be read as, an IPv4 address but is not
    written as the canonical dotted quad — or None. `written` is the host as given (lowercase),
    `connected` the one the webhook client connects to (IDNA-mapped by yarl: full-width digits
    become ASCII).

    Such a host means one thing to Notifi's checks and another to a resolver or a proxy, so it
    is refused instead of guessed at; a canonical literal passes on to the address policy."""
    labels = written.removesuffix(".").split(".")
    ipish = (
        _NUMBER_LABEL.fullmatch(labels[-1]) is not None
        or _NUMBER_LABEL.fullmatch(connected.removesuffix(".").split(".")[-1]) is not None
        or _inet_aton(written) is not None
    )
    if not ipish:
        return None
    try:
        canonical = str(ipaddress.IPv4Address(written))
    except ValueError:
        canonical = None
    if canonical == written == connected:
        return None
    read_as = _inet_aton(connected) or _inet_aton(written)
    seen = f" (a resolver would read it as {read_as})" if read_as else ""
    return (
        f"host {written!r} is not a canonical IPv4 address{seen}; write an IPv4 address as "
        "four decimal numbers 0-255 without leading zeros, such as 192.0.2.1"
    )


def check_url(url: str) -> str | None:
    """What is wrong with a destination URL's shape (no DNS here), or None."""
    if len(url) > MAX_URL_CHARS:
        return f"must be at most {MAX_URL_CHARS} characters"
    return _check_url_shape(url)


@functools.lru_cache(maxsize=_CACHED_URLS)
def _check_url_shape(url: str) -> str | None:
    if any(c.isspace() for c in url):
        return "must not contain spaces"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        return "must not contain control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
        # yarl maps a non-ASCII host (IDNA: full-width digits become ASCII) as the client will.
        connected = parts.hostname if (parts.hostname or "").isascii() else URL(url).host
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not parts.hostname or not connected:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (use headers or a secret)"
    if port == 0:
        return "must not use port 0"
    host = parts.hostname
    if ":" in host:  # an IPv6 literal (urlsplit has already checked it parses)
        return None
    if "%" in host:
        return f"host {host!r} must not be percent-encoded"
    return ipv4_literal_problem(host, connected.lower())
