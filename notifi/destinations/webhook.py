"""Webhooks: a JSON POST with the Standard Webhooks headers (`webhook-id`, `-timestamp`,
`-signature`), classified into delivered, retry or permanent.

Header policy: a destination's own `headers` are added to the request, except the names that
frame the request or belong to the protocol (`RESERVED_HEADERS`, `Proxy-*`, `webhook-*`),
which are dropped so they can never override ours. A name that is not an HTTP token, or a
value holding a control character, cannot be sent: the job ends as a permanent failure."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from notifi.destinations.base import Outcome, SendResult, bounded
from notifi.destinations.http_client import BadResponse, ConnectFailed, HttpClient, Response
from notifi.destinations.network import BlockedAddress
from notifi.model import Notification

SECRET_PREFIX = "whsec_"
USER_AGENT = "Notifi/0.1"
_RETRYABLE = {408, 425, 429}


def retryable_status(status: int) -> bool:
    """Whether a webhook's HTTP answer is tried again: 5xx, 408, 425 and 429."""
    return status in _RETRYABLE or status >= 500


# Framing and protocol headers: set by the client library and by us, never by a destination.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "expect",
        "te",
        "upgrade",
        "keep-alive",
        "content-type",
        "trailer",
    }
)
RESERVED_PREFIXES = ("proxy-", "webhook-")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but HTAB (RFC 9110 field-value)


class UnsendableHeader(ValueError):
    """A destination header that cannot be put on the wire (says which, never its value)."""


def is_reserved_header(name: str) -> bool:
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith(RESERVED_PREFIXES)


def destination_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The destination's headers that may be sent, reserved names dropped; raises
    `UnsendableHeader` for a name or value that cannot be sent."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise UnsendableHeader(f"header name {name!r} is not an HTTP token")
        if is_reserved_header(name):
            continue
        if not isinstance(value, str):
            raise UnsendableHeader(f"header {name}: the value must be a string")
        if _BAD_VALUE.search(value):
            raise UnsendableHeader(f"header {name}: the value holds a control character")
        out[name] = value
    return out


def webhook_payload(n: Notification) -> bytes:
    """The webhook body: the notification as JSON, encoded once per attempt."""
    return orjson.dumps(
        {
            "id": str(n.id),
            "type": "notification",
            "title": n.title,
            "body": n.body,
            "data": n.data,
            "scheduled_at": n.scheduled_at,
            "created_at": n.created_at,
        }
    )


def validate_secret(secret: str) -> str | None:
    """What is wrong with a signing secret, or None: whsec_ + base64 of 24 to 64 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return f"must start with {SECRET_PREFIX}"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return f"must be {SECRET_PREFIX} followed by base64"
    if not 24 <= len(key) <= 64:
        return "must encode 24 to 64 bytes"
    return None


def sign(secret: str, msg_id: str, timestamp: int, payload: bytes) -> str:
    """The Standard Webhooks signature: v1,base64(HMAC-SHA256(key, id.timestamp.payload))."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signatures(
    secret: str, previous: str | None, msg_id: str, timestamp: int, payload: bytes
) -> str:
    """The `webhook-signature` value: one signature, or during a rotation's overlap (a stored
    destination's `previous_secret`) two, space-separated and new first, as the Standard
    Webhooks spec allows, so a receiver verifying with either secret passes."""
    signed = sign(secret, msg_id, timestamp, payload)
    if previous and previous != secret:
        return f"{signed} {sign(previous, msg_id, timestamp, payload)}"
    return signed


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)


class WebhookSender:
    def __init__(self, client: HttpClient, timeout_s: float):
        self._client = client
        self._timeout_s = timeout_s

    async def send(self, destination: Mapping[str, Any], notification: Notification) -> SendResult:
        return await self.post(destination, str(notification.id), webhook_payload(notification))

    async def post(self, destination: Mapping[str, Any], msg_id: str, payload: bytes) -> SendResult:
        """POSTs an encoded JSON body to `destination` (url, optional secret and headers) with
        `msg_id` as the stable `webhook-id`."""
        started = time.perf_counter()
        result = await self._post(destination, msg_id, payload)
        duration_ms = (time.perf_counter() - started) * 1000
        return SendResult(
            result.outcome, result.status_code, result.error, result.retry_after_s, duration_ms
        )

    async def _post(
        self, destination: Mapping[str, Any], msg_id: str, payload: bytes
    ) -> SendResult:
        timestamp = int(time.time())
        try:
            own = destination_headers(destination.get("headers"))
        except UnsendableHeader as exc:
            return SendResult(Outcome.PERMANENT, error=bounded(f"cannot send: {exc}"))
        headers = {
            **own,
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if not any(name.lower() == "user-agent" for name in own):  # theirs replaces ours
            headers["user-agent"] = USER_AGENT
        if secret := destination.get("secret"):
            headers["webhook-signature"] = signatures(
                secret, destination.get("previous_secret"), msg_id, timestamp, payload
            )
        try:
            response = await self._client.post(
                destination["url"], headers, payload, timeout_s=self._timeout_s
            )
        except BlockedAddress as exc:
            return SendResult(Outcome.PERMANENT, error=bounded(str(exc)))
        except ConnectFailed as exc:
            return SendResult(Outcome.RETRY, error=bounded(f"connection failed: {exc}"))
        except ValueError as exc:
            return SendResult(Outcome.PERMANENT, error=bounded(f"invalid URL: {exc}"))
        except TimeoutError:
            return SendResult(Outcome.RETRY, error=f"timed out after {self._timeout_s:g}s")
        except (BadResponse, OSError) as exc:
            return SendResult(Outcome.RETRY, error=bounded(f"{type(exc).__name__}: {exc}"))
        return _classify(response)


def _classify(response: Response) -> SendResult:
    status = response.status
    if 200 <= status < 300:
        return SendResult(Outcome.DELIVERED, status)
    text = response.body.decode(errors="replace").strip()
    error = bounded(f"HTTP {status}: {text}" if text else f"HTTP {status}")
    if retryable_status(status):
        after = retry_after_s(response.headers.get("retry-after"))
        return SendResult(Outcome.RETRY, status, error, after)
    if 300 <= status < 400:
        error = bounded(
            f"HTTP {status}: redirects are not followed ({response.headers.get('location', '')})"
        )
    return SendResult(Outcome.PERMANENT, status, error)
