"""Notifi's exception hierarchy; the docstrings double as default messages.

Every error that reaches a client is a `Problem`, rendered as an RFC 9457 problem document.
"""

from __future__ import annotations

from typing import Any


class NotifiError(Exception):
    """Something went wrong in Notifi."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or (self.__doc__ or "").strip())
        self.detail = str(self.args[0])


class Problem(NotifiError):
    """The request cannot be served."""

    status = 400
    title = "Bad request"
    slug = "bad-request"
    # The rest of such a request is not worth waiting for, or cannot be read at all: the answer
    # closes the connection rather than let a client reuse it.
    closes_connection = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        pointer: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.pointer = pointer  # JSON pointer (or parameter name) of the offending input
        self.headers = headers or {}
        self.extra = extra

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": f"https://notifi.dev/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.pointer is not None:
            doc["errors"] = [{"pointer": self.pointer, "detail": self.detail}]
        doc.update(self.extra)
        return doc


class MalformedRequest(Problem):
    """The request body is not valid JSON."""

    title = "Malformed request"
    slug = "malformed-request"


class UnreadableBody(MalformedRequest):
    """The body could not be read (bad Content-Encoding data or broken chunked framing)."""

    closes_connection = True


class InvalidRequest(Problem):
    """The request does not satisfy the API's schema."""

    status = 422
    title = "Invalid request"
    slug = "invalid-request"


class InvalidParameter(Problem):
    """A query parameter has a value the API cannot use."""

    title = "Invalid parameter"
    slug = "invalid-parameter"


class NotFound(Problem):
    """No such resource."""

    status = 404
    title = "Not found"
    slug = "not-found"


class MethodNotAllowed(Problem):
    """This method is not allowed on this resource."""

    status = 405
    title = "Method not allowed"
    slug = "method-not-allowed"


class Conflict(Problem):
    """The Idempotency-Key was used before with a different request."""

    status = 409
    title = "Conflict"
    slug = "idempotency-conflict"


class RequestTimeout(Problem):
    """The request did not arrive in time; the connection is closed."""

    status = 408
    title = "Request timeout"
    slug = "request-timeout"
    closes_connection = True


class BadHttpRequest(Problem):
    """The request is not valid HTTP/1.1."""

    title = "Bad HTTP request"
    slug = "bad-http-request"


class InternalError(Problem):
    """An unexpected error occurred; it has been logged."""

    status = 500
    title = "Internal error"
    slug = "internal-error"


class PayloadTooLarge(Problem):
    """The request body is larger than the API accepts."""

    status = 413
    title = "Payload too large"
    slug = "payload-too-large"
    closes_connection = True


class UnsupportedMediaType(Problem):
    """The request body must be application/json."""

    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class TooManyRequests(Problem):
    """This client is over its request rate; try again after Retry-After seconds."""

    status = 429
    title = "Too many requests"
    slug = "rate-limited"


class Unavailable(Problem):
    """Notifi cannot take this request right now; try again shortly."""

    status = 503
    title = "Service unavailable"
    slug = "unavailable"
