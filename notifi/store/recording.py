"""The delivery recorder's transaction: a batch of outcomes and requeued jobs, and what they
change of stored destinations (failing_since, automatic disabling, paused deliveries), written
together so that a crash leaves all of it or none."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from notifi.model import DeliveryJob, DeliveryStatus
from notifi.store.sql import query


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of one delivery attempt, or of a job that found the work already done."""

    job: DeliveryJob
    new_status: DeliveryStatus
    started_at: datetime | None = None  # None: no attempt was made (recovered record)
    duration_ms: float = 0.0
    outcome: str | None = None
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    # A stored destination's: its id, whether this attempt starts (True) or ends (False) its
    # failing streak (None: no change to write), and why this attempt disabled it (None: it
    # did not). notifi.store.recording writes them.
    destination_id: UUID | None = None
    failing: bool | None = None
    disable_reason: str | None = None


async def record(
    conn: asyncpg.Connection, finished: Sequence[Finished], requeued: Sequence[DeliveryJob]
) -> list[asyncpg.Record]:
    """Writes the batch in the caller's transaction (none is needed when `one_statement` says
    so); returns the destinations it disabled."""
    disabled: list[asyncpg.Record] = []
    changing = _changing(finished)
    if changing:
        ids = sorted({f.destination_id for f in changing if f.destination_id is not None})
        locked = await conn.fetch(query("lock_destinations"), ids)
        still_off = {r["id"] for r in locked if not r["enabled"]}
        streaks = [f for f in changing if f.failing is not None]
        if streaks:
            await conn.execute(
                query("track_failing"),
                [f.destination_id for f in streaks],
                [f.started_at for f in streaks],
                [not f.failing for f in streaks],
            )
        reasons = {f.destination_id: f.disable_reason for f in changing if f.disable_reason}
        if reasons:
            disabled = await conn.fetch(
                query("disable_destinations"), list(reasons), list(reasons.values())
            )
        still_off |= {r["id"] for r in disabled}
        finished, requeued = unpause(finished, requeued, still_off, datetime.now(UTC))
    if finished:
        await conn.execute(query("record_outcomes"), *_outcome_columns(finished))
    if requeued:
        await conn.execute(
            query("requeue"),
            [j.notification_id for j in requeued],
            [j.position for j in requeued],
            [j.attempt for j in requeued],
            [j.due_at for j in requeued],
        )
    return disabled


def one_statement(finished: Sequence[Finished], requeued: Sequence[DeliveryJob]) -> bool:
    """Whether `record` writes the batch in one statement, its own transaction: outcomes only,
    none of which writes to its stored destination (the common batch)."""
    return not requeued and not _changing(finished)


def _changing(finished: Sequence[Finished]) -> list[Finished]:
    """The outcomes that write to their stored destination (under its row lock)."""
    return [f for f in finished if f.destination_id is not None and _changes(f)]


def _outcome_columns(finished: Sequence[Finished]) -> tuple[list[Any], ...]:
    """record_outcomes' parameters: one array per column."""
    jobs = [f.job for f in finished]
    return (
        [j.notification_id for j in jobs],
        [j.position for j in jobs],
        [j.attempt for j in jobs],
        [f.started_at for f in finished],
        [f.duration_ms for f in finished],
        [f.outcome for f in finished],
        [f.status_code for f in finished],
        [f.error for f in finished],
        [str(f.new_status) for f in finished],
        [f.next_attempt_at for f in finished],
        [f.destination_id for f in finished],
    )


def _changes(f: Finished) -> bool:
    """Whether an outcome writes to its stored destination (or must see it locked)."""
    return (
        f.failing is not None
        or f.disable_reason is not None
        or f.new_status is DeliveryStatus.PAUSED
    )


def unpause(
    finished: Sequence[Finished],
    requeued: Sequence[DeliveryJob],
    disabled: Collection[UUID],
    now: datetime,
) -> tuple[list[Finished], list[DeliveryJob]]:
    """Pauses only what waits on a destination that is disabled, as seen under its row lock:
    one enabled in the meantime (or deleted) would never resume it. An attempted delivery is
    tried again now instead; a job paused before its attempt goes back to the outbox, due now
    (a deleted destination's job then ends cancelled when it is loaded)."""
    kept, back = [], list(requeued)
    for f in finished:
        if f.new_status is not DeliveryStatus.PAUSED or f.destination_id in disabled:
            kept.append(f)
        elif f.outcome is None:
            back.append(f.job.later(now))
        else:
            kept.append(
                dataclasses.replace(f, new_status=DeliveryStatus.DELIVERING, next_attempt_at=now)
            )
    return kept, back
