"""RFC 3339 date-times as the API reads them, in bodies and in query parameters alike."""

from __future__ import annotations

from datetime import UTC, datetime

from notifi.errors import InvalidRequest, Problem

EXAMPLE = "2026-11-24T18:00:00Z"


def parse_rfc3339(text: str) -> datetime | None:
    """The instant `text` names, in UTC; None unless it is a date-time with a `T` and an offset
    that lies within the years 1 to 9999 once in UTC (`0001-01-01T00:00:00+14:00` does not)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None or "T" not in text.upper():
        return None
    try:
        return when.astimezone(UTC)
    except OverflowError:
        return None


def instant(
    text: str, name: str, pointer: str, problem: type[Problem] = InvalidRequest
) -> datetime:
    """`text` read as above, or `problem` (a 422 in a body, a 400 in a query) naming `name`."""
    when = parse_rfc3339(text)
    if when is None:
        raise problem(
            f"{name} must be an RFC 3339 date-time with an offset, such as {EXAMPLE}",
            pointer=pointer,
        )
    return when
