"""The rules of a reschedule (notifi.lifecycle), table by table: which delivery rules a move
out and why, and when a moved notification is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifi.lifecycle import Started, due_at, started

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)


def delivery(
    position: int = 0,
    status: str = "scheduled",
    attempts: int = 0,
    tried: bool = False,
    leased: bool = False,
) -> dict[str, Any]:
    return {
        "position": position,
        "status": status,
        "attempts": attempts,
        "tried": tried,
        "leased": leased,
    }


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        ([delivery()], None),
        ([delivery(0), delivery(1, "pending")], None),
        ([delivery(0), delivery(1, "delivering", 1)],
         Started(1, "delivering", "destination 1 is already delivering")),
        ([delivery(0, "delivered", 1), delivery(1, "failed", 1)],
         Started(0, "delivered", "destination 0 is already delivered")),
        ([delivery(0, "cancelled")], Started(0, "cancelled", "destination 0 is already cancelled")),
        ([delivery(0, "expired")], Started(0, "expired", "destination 0 is already expired")),
        # pending, yet attempted: a counted attempt, or an attempt row the recorder wrote
        ([delivery(0, "pending", attempts=1)],
         Started(0, "pending", "destination 0 has already been attempted")),
        ([delivery(0, "pending", tried=True)],
         Started(0, "pending", "destination 0 has already been attempted")),
        # a worker holds its Postgres lease (Redis away): being attempted now
        ([delivery(0), delivery(1, "pending", leased=True)],
         Started(1, "pending", "destination 1 is being attempted now")),
    ],
)  # fmt: skip
def test_started(deliveries: list[dict[str, Any]], expected: Started | None) -> None:
    assert started(deliveries) == expected


@pytest.mark.parametrize(
    ("scheduled_in_s", "due_in_s"),
    [(None, 0), (-60, 0), (0, 0), (60, 60)],
)
def test_due_at_is_the_new_time_or_now(scheduled_in_s: float | None, due_in_s: float) -> None:
    scheduled_at = None if scheduled_in_s is None else NOW + timedelta(seconds=scheduled_in_s)
    assert due_at(scheduled_at, NOW) == NOW + timedelta(seconds=due_in_s)
