"""A notification's lifecycle after it was accepted: the pure rules of a reschedule (has any
delivery started, and when is the moved notification due). The store does the I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notifi.model import DeliveryStatus

# Statuses a delivery that has not started may have: scheduled, or due now and not yet tried.
NOT_STARTED = frozenset({DeliveryStatus.SCHEDULED, DeliveryStatus.PENDING})


@dataclass(frozen=True, slots=True)
class Started:
    """The first delivery that has started (or ended), and why it counts as started."""

    position: int
    status: str
    reason: str


def started(deliveries: Sequence[Mapping[str, Any]]) -> Started | None:
    """The first delivery (by position) that rules a reschedule out, or None when none has
    started: each is still scheduled or pending, was never attempted (no attempt counted, no
    attempt row) and nobody holds its Postgres lease (a worker is at it while Redis is away)."""
    for d in deliveries:
        position, status = d["position"], d["status"]
        if status not in NOT_STARTED:
            reason = f"destination {position} is already {status}"
        elif d["attempts"] > 0 or d["tried"]:
            reason = f"destination {position} has already been attempted"
        elif d["leased"]:
            reason = f"destination {position} is being attempted now"
        else:
            continue
        return Started(position, status, reason)
    return None


def due_at(scheduled_at: datetime | None, now: datetime) -> datetime:
    """When a notification moved to `scheduled_at` is due: then, or now (None or past)."""
    return now if scheduled_at is None or scheduled_at < now else scheduled_at
