"""aiohttp's connection protocol, hardened: a deadline for a request's line and headers, and
every error the server itself produces (the HTTP parser's included) as a problem document.

aiohttp has no header read timeout of its own: its keep-alive timer (an hour by default, so
it outlives a reverse proxy's idle connections) is all that closes a connection whose request
never completes. `GuardedRequestHandler` keeps that timer for idle keep-alive connections and
adds a head timer: armed when a connection opens and when the first byte of a new request
arrives on an idle one, cancelled when the parser has the whole head. When it fires while the
connection is still waiting for that head, a 408 problem is queued as the next "message" (the
way aiohttp itself queues a parser error), answered, and the connection closed. A body that
dribbles in is the handler's to time out (`api.body_timeout`, see `notifi.api.app`).

Known limit: bytes of a second, pipelined request that arrive while the first one is being
handled are only bounded by the keep-alive timeout (the parser does not say whether bytes it
buffered begin a head), as are connections in that state.

This leans on aiohttp internals (`RequestHandler._waiter`, `_messages`, `_ErrInfo`), pinned by
the aiohttp version in pyproject.toml and exercised by tests/integration/test_http_hygiene.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog
from aiohttp import http_exceptions, web
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from notifi.errors import (
    BadHttpRequest,
    InternalError,
    Problem,
    RequestTimeout,
    UnsupportedMediaType,
)

log = structlog.get_logger(__name__)

DEFAULT_HEADER_TIMEOUT_S = 10.0
LINGERING_TIME_S = 2.0  # how long an unread body is drained before the connection closes


class HeadTimeout(http_exceptions.HttpProcessingError):
    code = 408
    message = "Request head timeout"


def _parser_problem(exc: BaseException | None, max_line_size: int) -> Problem:
    """A parser error as a problem. The detail never echoes the client's bytes: aiohttp's own
    message quotes the start of an over-long line, which may be an Authorization header."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return BadHttpRequest(
            f"A request line or header line is longer than {max_line_size} bytes."
        )
    if isinstance(exc, http_exceptions.ContentEncodingError):
        # Raised at head time only for a codec this build lacks (br, zstd).
        return UnsupportedMediaType(
            "This Content-Encoding is not supported; send gzip, deflate or identity.",
            pointer="Content-Encoding",
        )
    if isinstance(exc, http_exceptions.InvalidURLError):
        return BadHttpRequest("The request target is not a valid URL.")
    if isinstance(exc, http_exceptions.BadStatusLine):
        return BadHttpRequest("The request line is malformed.")
    if isinstance(exc, http_exceptions.InvalidHeader):
        return BadHttpRequest("A header is malformed.")
    if isinstance(exc, http_exceptions.TransferEncodingError | http_exceptions.ContentLengthError):
        return BadHttpRequest("The message framing (Content-Length/Transfer-Encoding) is invalid.")
    return BadHttpRequest()


def problem_for(status: int, exc: BaseException | None, max_line_size: int = 8190) -> Problem:
    """What the server answers when aiohttp's protocol, not a handler, produced the error."""
    if isinstance(exc, HeadTimeout) or status == 408:
        return RequestTimeout("The request's line and headers did not arrive in time.")
    if status == 500:
        return InternalError()
    if isinstance(exc, http_exceptions.HttpProcessingError) and status == 400:
        return _parser_problem(exc, max_line_size)
    problem = Problem(f"The server could not handle this request (HTTP {status}).")
    problem.status = status
    return problem


def problem_document_response(problem: Problem) -> web.Response:
    response = web.Response(
        body=orjson.dumps(problem.document()),
        status=problem.status,
        content_type="application/problem+json",
        headers=problem.headers,
    )
    response.force_close()
    return response


class GuardedRequestHandler(RequestHandler):
    """aiohttp's RequestHandler with a head timeout and problem-document errors."""

    __slots__ = ("_head_timeout_s", "_head_timer")

    def __init__(self, manager: web.Server, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is closed as well

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:
            self._disarm_head_timer()
        elif data and self._head_timer is None and self._awaiting_head():
            self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        """start() is waiting for the next request and none is queued."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self._loop.call_later(self._head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close or self._close:
            return
        if not self._awaiting_head():
            return  # a handler is running: the body timeout is its business
        exc = HeadTimeout()
        self._messages.append((_ErrInfo(status=408, exc=exc, message=exc.message), EMPTY_PAYLOAD))
        self._close = True  # parse nothing more; the 408 closes the connection
        waiter = self._waiter
        assert waiter is not None  # _awaiting_head() checked it
        waiter.set_result(None)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Same contract as aiohttp's (a response that closes the connection), as a problem
        document, logged without the client's bytes."""
        problem = problem_for(status, exc, self.max_line_size)
        if problem.status >= 500:
            log.error("http_server_error", status=problem.status, peer=request.remote, exc_info=exc)
        else:
            log.info(
                "http_request_rejected",
                status=problem.status,
                error=type(exc).__name__ if exc else None,
                peer=request.remote,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; cannot send the error")
        return problem_document_response(problem)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs a body that failed to decode (met again while draining it) as an
        "Unhandled exception" with a traceback; it is the client's error, already answered."""
        exc = kw.get("exc_info")
        if isinstance(exc, http_exceptions.HttpProcessingError | web.RequestPayloadError):
            log.info("http_request_body_dropped", error=type(exc).__name__)
            return
        super().log_exception(*args, **kw)


class GuardedServer(web.Server):
    """web.Server whose connections are GuardedRequestHandlers."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self, loop=self._loop, header_timeout_s=self._header_timeout_s, **self._kwargs
        )


class GuardedAppRunner(web.AppRunner):
    """An AppRunner serving through GuardedServer (aiohttp offers no protocol-class hook)."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("lingering_time", LINGERING_TIME_S)
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        built = await super()._make_server()
        # Rebuilt with the same handler, request factory and protocol arguments.
        return GuardedServer(
            built.request_handler,
            request_factory=built.request_factory,
            handler_cancellation=built.handler_cancellation,
            loop=asyncio.get_running_loop(),
            header_timeout_s=self._header_timeout_s,
            **built._kwargs,
        )
