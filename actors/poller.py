"""The poller role: moves due outbox rows of one partition range to the deliveries topic,
and the back-stop that re-queues work nobody routed or whose job was lost."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import structlog

from notifi import events, metrics
from notifi.bus import Bus
from notifi.runtime import Actor
from notifi.store import Store

log = structlog.get_logger(__name__)


class Poller(Actor):
    """Every interval: take due rows (FOR UPDATE SKIP LOCKED), publish, then delete them in
    the same transaction; a failed publish rolls the rows back for the next poll."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        store: Store,
        *,
        lo: int,
        hi: int,
        target: str,
        interval_s: float,
        batch: int,
    ) -> None:
        super().__init__(name)
        self._bus, self._store, self._target = bus, store, target
        self.lo, self.hi = lo, hi
        self._interval_s, self._batch = interval_s, batch
        self._labels = {"range": f"{lo}-{hi}"}

    async def run(self) -> None:
        while not self.should_stop:
            started = time.monotonic()
            async with self._store.claim_due(
                self.lo, self.hi, self._interval_s, self._batch
            ) as jobs:
                if jobs:
                    await self._bus.publish(self._target, events.delivery_due(jobs))
            if jobs:
                metrics.dispatched.add(self._labels, len(jobs))
                oldest = min(j.due_at for j in jobs)
                lag = (datetime.now(UTC) - oldest).total_seconds()
                metrics.poller_lag.set(self._labels, max(lag, 0.0))
            else:
                metrics.poller_lag.set(self._labels, 0.0)
            if len(jobs) < self._batch:  # a full batch means more is due: go again at once
                await self.sleep(self._interval_s - (time.monotonic() - started))


class Backstop(Actor):
    def __init__(
        self,
        name: str,
        store: Store,
        *,
        lo: int,
        hi: int,
        interval_s: float,
        grace_s: float,
        batch: int,
        idempotency_retention_s: float = 86_400.0,
    ) -> None:
        super().__init__(name)
        self._store = store
        self._lo, self._hi = lo, hi
        self._interval_s, self._grace_s, self._batch = interval_s, grace_s, batch
        self._retention_s = idempotency_retention_s

    async def run(self) -> None:
        while not self.should_stop:
            if await self.sleep(self._interval_s):
                break
            unrouted, stuck = await self._store.backstop(
                self._lo, self._hi, self._grace_s, self._batch
            )
            if unrouted or stuck:
                log.warning("backstop_requeued", actor=self.name, unrouted=unrouted, stuck=stuck)
                metrics.backstop_requeued.add({"kind": "unrouted"}, unrouted)
                metrics.backstop_requeued.add({"kind": "stuck"}, stuck)
            await self._store.expire_idempotency_keys(
                self._lo, self._hi, self._retention_s, self._batch
            )
