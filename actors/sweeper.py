"""The retention sweeper (poller role): every `retention.interval` seconds it walks its
process's partition range, oldest id first, and removes finished notifications past
retention in short bounded steps (see notifi.store.retention).

It rides out Postgres being away: the outage is logged and counted once, and the sweep is
tried again at the next interval (nothing is urgent about retention). A step that met a row
lock it did not expect gives up on this sweep the same way, without waiting on the lock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

import asyncpg
import structlog

from notifi import metrics
from notifi.outage import POSTGRES_AWAY, Outage
from notifi.runtime import Actor
from notifi.store import ID_MIN
from notifi.store.retention import Removed, RetentionPolicy, Step

log = structlog.get_logger(__name__)

# A step that hit its lock timeout or a deadlock: try the range again next interval.
CONTENDED: tuple[type[BaseException], ...] = (
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,
)


class SweepStore(Protocol):
    """What the sweeper needs from the store (notifi.store.retention.RetentionStore)."""

    async def step(
        self, after: UUID, before: UUID, lo: int, hi: int, batch: int, policy: RetentionPolicy
    ) -> Step: ...


class Sweeper(Actor):
    def __init__(
        self,
        name: str,
        store: SweepStore,
        *,
        lo: int,
        hi: int,
        policy: RetentionPolicy,
        interval_s: float,
        batch: int,
    ) -> None:
        super().__init__(name)
        self._store = store
        self.lo, self.hi = lo, hi
        self._policy, self._interval_s, self._batch = policy, interval_s, batch

    async def run(self) -> None:
        if self._policy.keeps_everything:  # each sweep then returns at once
            log.info("retention_off", actor=self.name)
        postgres = Outage("postgres", self.name, POSTGRES_AWAY)
        while not self.should_stop:
            try:
                removed = await self.sweep()
            except POSTGRES_AWAY as exc:
                postgres.failed(exc)  # logs and counts the first failure of an outage only
            except CONTENDED as exc:
                postgres.recovered()
                log.info("retention_contended", actor=self.name, error=repr(exc))
            else:
                postgres.recovered()
                if removed.notifications:
                    log.info("retention_swept", actor=self.name, **removed.by_table())
            if await self.sleep(self._interval_s):
                return

    async def sweep(self) -> Removed:
        """One walk over the range, step by step; stops between steps when asked to."""
        total = Removed()
        before = self._policy.horizon(datetime.now(UTC))
        if before is None:
            return total
        after = ID_MIN
        while not self.should_stop:
            step = await self._store.step(
                after, before, self.lo, self.hi, self._batch, self._policy
            )
            total += step.removed
            for table, count in step.removed.by_table().items():
                if count:
                    metrics.retention_removed.add({"table": table}, count)
            if step.last_id is None or step.scanned < self._batch:
                break
            after = step.last_id
        return total
