"""Reading a request body, guarded: a `Content-Length` over the limit is answered 413 before a
byte of the body is read (aiohttp's own `client_max_size` is checked only while reading, and
ignores the declared length), also for `Expect: 100-continue`; the body must arrive within its
timeout (else 408, connection closed); a `Content-Encoding` other than those aiohttp decodes is
415, one that does not decode is 400; JSON that does not decode is 400, or 422 when it nests
deeper than orjson's `MAX_BODY_NESTING` levels."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import HttpVersion11, web
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD

from notifi.api.responses import problem_response
from notifi.errors import (
    InvalidRequest,
    MalformedRequest,
    PayloadTooLarge,
    Problem,
    RequestTimeout,
    UnreadableBody,
    UnsupportedMediaType,
)

# orjson refuses to decode deeper nesting; shallower but still too deep `data` is validation's
# (api.max_data_depth), with a pointer.
MAX_BODY_NESTING = 1024
# What aiohttp decodes (auto_decompress); anything else would reach us still encoded.
BODY_ENCODINGS = frozenset(
    {"identity", "gzip", "deflate"}
    | ({"br"} if HAS_BROTLI else set())
    | ({"zstd"} if HAS_ZSTD else set())
)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The body is larger than {max_bytes} bytes.")


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The (decoded) body, at most `max_bytes` of it, arrived within `timeout_s`."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if encoding not in BODY_ENCODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:40]!r} is not supported; "
            f"send one of {', '.join(sorted(BODY_ENCODINGS))}.",
            pointer="Content-Encoding",
        )
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise _too_large(max_bytes)
    content = request.content
    if content.is_eof() and content.exception() is None:
        # The whole body came with the head (the usual small POST): no waiting, so no timer.
        body = content.read_nowait()
        if len(body) > max_bytes:  # decoded bytes, as below
            raise _too_large(max_bytes)
        return body
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                size += len(chunk)  # decoded bytes, so a small zip bomb stops here too
                if size > max_bytes:
                    raise _too_large(max_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"The body did not arrive within {timeout_s:g} seconds.") from None
    except web.RequestPayloadError:
        # aiohttp's payload errors: a body that does not decode as its Content-Encoding, or
        # broken chunked framing.
        detail = "The body could not be read"
        if encoding != "identity":
            detail += f" as Content-Encoding {encoding}"
        raise UnreadableBody(f"{detail}.", pointer="Content-Encoding") from None
    return b"".join(chunks)


def expect_within(limit: int) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """An Expect handler for a route taking bodies up to `limit` bytes: a `100-continue` with
    a larger Content-Length gets its 413 at once, instead of an invitation to send the body
    (curl asks so before any body over 1 MB). Otherwise it does what aiohttp's default does."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        declared = request.content_length
        if declared is not None and declared > limit:
            return problem_response(_too_large(limit))
        if request.version != HttpVersion11:
            return None
        if request.headers.get("Expect", "").lower() != "100-continue":
            problem = Problem("Only Expect: 100-continue is understood.", pointer="Expect")
            problem.status, problem.title, problem.slug = 417, "Expectation failed", "expectation"
            return problem_response(problem)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own: the response has not started
        return None

    return expect


def decode_json(raw: bytes) -> Any:
    """JSON from a request body, or a problem: nothing that fails here reaches a 500."""
    too_deep = f"The body nests deeper than {MAX_BODY_NESTING} levels."
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            raise InvalidRequest(too_deep, pointer="") from None
        raise MalformedRequest(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(too_deep, pointer="") from None
    return body
