"""Retention: removing finished notifications (with their deliveries, attempts, outbox rows and
idempotency keys) once they ended longer ago than `retention.delivered` / `retention.failed`.

The sweep walks one partition range by id, oldest first, in bounded steps: each step is one
short transaction over at most `batch` notifications (a range scan of the primary key), whose
locks are taken with SKIP LOCKED and held only for that step, so accepts and API calls never
wait on it. The SQL is `retention_sweep` in queries.sql, which says what "ended" means.

Every sweep starts again from the oldest id, because what stayed last time (still open, or
inside the longer failed window) may have become due since; the walk stops at the id of the
shortest window, so it reads only what is older than that, plus what stays. Migration 0003
explains why the child rows are removed explicitly rather than by foreign-key cascades.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from notifi.store import ID_MIN, id_at
from notifi.store.sql import query

TABLES = ("notifications", "deliveries", "delivery_attempts", "outbox")
# A step never waits long for a row lock it did not expect (a late delivery outcome on a
# notification being removed): it gives up, and the next sweep tries that range again.
LOCK_TIMEOUT = "500ms"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long finished notifications are kept, in seconds; 0 keeps them forever."""

    delivered_s: float
    failed_s: float  # applies when any delivery failed

    @property
    def keeps_everything(self) -> bool:
        return self.delivered_s <= 0 and self.failed_s <= 0

    def horizon(self, now: datetime) -> UUID | None:
        """The id below which a notification may be old enough to go (None: nothing may go).
        A notification ends after it was made, so one made within the shortest window cannot
        have ended longer ago than it."""
        windows = [w for w in (self.delivered_s, self.failed_s) if w > 0]
        if not windows:
            return None
        return id_at(now - timedelta(seconds=min(windows)))


@dataclass(frozen=True, slots=True)
class Removed:
    """Rows removed, by table."""

    notifications: int = 0
    deliveries: int = 0
    delivery_attempts: int = 0
    outbox: int = 0

    def __add__(self, other: Removed) -> Removed:
        return Removed(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def by_table(self) -> dict[str, int]:
        return {t: getattr(self, t) for t in TABLES}


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a sweep: where the walk got to (None: nothing left in the range), how many
    notifications it examined, and what it removed."""

    last_id: UUID | None
    scanned: int
    removed: Removed


class RetentionStore:
    """The sweep's reads and writes, on the process's connection pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def step(
        self, after: UUID, before: UUID, lo: int, hi: int, batch: int, policy: RetentionPolicy
    ) -> Step:
        """Examines the next `batch` notifications of [lo, hi] with ids in (after, before) and
        removes those past retention, in one short transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            row = await conn.fetchrow(
                query("retention_sweep"),
                after,
                before,
                lo,
                hi,
                batch,
                float(policy.delivered_s),
                float(policy.failed_s),
            )
        assert row is not None
        removed = Removed(*(row[t] for t in TABLES))
        return Step(row["last_id"], row["scanned"], removed)

    async def sweep(
        self, lo: int, hi: int, batch: int, policy: RetentionPolicy, now: datetime | None = None
    ) -> Removed:
        """One whole sweep of [lo, hi], step after step (a convenience for tests and the
        benchmark; the sweeper actor drives the steps itself so that it can stop between)."""
        total = Removed()
        before = policy.horizon(now or datetime.now(UTC))
        if before is None:
            return total
        after = ID_MIN
        while True:
            step = await self.step(after, before, lo, hi, batch, policy)
            total += step.removed
            if step.last_id is None or step.scanned < batch:
                return total
            after = step.last_id
