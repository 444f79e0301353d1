"""The one RFC 3339 reader of the API (bodies and query parameters)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notifi.api.dates import parse_rfc3339


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2026-11-24T18:00:00Z", datetime(2026, 11, 24, 18, tzinfo=UTC)),
        ("2026-11-24t19:00:00+01:00", datetime(2026, 11, 24, 18, tzinfo=UTC)),
        ("2026-11-24T18:00:00.250-00:30", datetime(2026, 11, 24, 18, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_read_in_utc(text: str, when: datetime) -> None:
    assert parse_rfc3339(text) == when


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-24",  # a date, no time
        "2026-11-24 18:00:00Z",  # no T
        "2026-11-24T18:00:00",  # no offset
        "tomorrow",
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
    ],
)
def test_refused(text: str) -> None:
    assert parse_rfc3339(text) is None
