"""The poller role: moves due outbox rows of one partition range to the deliveries topic,
and the back-stop that re-queues work nobody routed or whose job was lost.

Both ride out Postgres or the bus being briefly away: they log once, count the outage, wait
with a capped back-off and carry on, instead of crashing into the supervisor's restart
intensity. A failed publish rolls the claimed rows back, so nothing is lost meanwhile.

Expired work needs nothing here: every outbox row is due no later than its notification's
expiry (a schedule must be before it, a retry that would start at or after it ends the
delivery instead, and a worker defers no later than it), so the poller publishes it like any
other and the delivery worker that takes it, which has the expiry from the load it does anyway,
ends it `expired` without an attempt. No join with notifications on this hot path, no sweep."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from notifi import events, metrics
from notifi.bus import Bus
from notifi.model import DeliveryJob
from notifi.outage import BUS_AWAY, POSTGRES_AWAY, Backoff, Outage
from notifi.runtime import Actor

log = structlog.get_logger(__name__)


class OutboxStore(Protocol):
    """What a poller needs from the store."""

    def claim_due(
        self, lo: int, hi: int, horizon_s: float, limit: int
    ) -> AbstractAsyncContextManager[list[DeliveryJob]]:
        """Due outbox rows of a partition range, removed when the block exits without error."""
        ...


class BackstopStore(Protocol):
    """What the back-stop needs from the store."""

    async def backstop(self, lo: int, hi: int, grace_s: float, limit: int) -> tuple[int, int]:
        """Re-queues (unrouted, stuck) work of a partition range; returns how much of each."""
        ...

    async def expire_idempotency_keys(
        self, lo: int, hi: int, retention_s: float, limit: int
    ) -> int: ...


class Poller(Actor):
    """Every interval: take due rows (FOR UPDATE SKIP LOCKED), publish, then delete them in
    the same transaction; a failed publish rolls the rows back for the next poll."""

    backoff = Backoff()  # between tries while Postgres or the bus is away

    def __init__(
        self,
        name: str,
        bus: Bus,
        store: OutboxStore,
        *,
        lo: int,
        hi: int,
        target: str,
        interval_s: float,
        batch: int,
        lookahead_s: float = 0.0,
    ) -> None:
        super().__init__(name)
        self._bus, self._store, self._target = bus, store, target
        self.lo, self.hi = lo, hi
        self._interval_s, self._batch = interval_s, batch
        # Rows due within this are published now: at least one interval (the next poll would
        # be late), and `poller.lookahead` so a delivery process holds them before they are due.
        self._horizon_s = max(interval_s, lookahead_s)
        self._labels = {"range": f"{lo}-{hi}"}

    async def run(self) -> None:
        postgres = Outage("postgres", self.name, POSTGRES_AWAY, self.backoff)
        bus = Outage("bus", self.name, BUS_AWAY, self.backoff)
        while not self.should_stop:
            started = time.monotonic()
            try:
                jobs = await self._poll_once()
            except _PublishFailed as exc:
                wait_s = bus.failed(exc.__cause__ or exc)
            except POSTGRES_AWAY as exc:
                wait_s = postgres.failed(exc)
            else:
                postgres.recovered()
                if jobs:
                    bus.recovered()
                self._observe(jobs)
                if len(jobs) >= self._batch:
                    continue  # a full batch means more is due: go again at once
                wait_s = self._interval_s - (time.monotonic() - started)
            if await self.sleep(wait_s):
                return

    async def _poll_once(self) -> list[DeliveryJob]:
        async with self._store.claim_due(self.lo, self.hi, self._horizon_s, self._batch) as jobs:
            if jobs:
                try:
                    await self._bus.publish(self._target, events.delivery_due(jobs))
                except BUS_AWAY as exc:
                    # Raised through the block, so the claimed rows roll back for the next poll.
                    raise _PublishFailed() from exc
        return jobs

    def _observe(self, jobs: list[DeliveryJob]) -> None:
        if jobs:
            metrics.dispatched.add(self._labels, len(jobs))
            oldest = min(j.due_at for j in jobs)
            lag = (datetime.now(UTC) - oldest).total_seconds()
            metrics.poller_lag.set(self._labels, max(lag, 0.0))
        else:
            metrics.poller_lag.set(self._labels, 0.0)


class _PublishFailed(Exception):
    """The bus did not take a poller's jobs (the cause says why)."""


class Backstop(Actor):
    """Every interval: re-queue what nobody routed or whose job was lost, and forget
    idempotency keys past their retention.

    With `bus_resets` (the bus's reset count, `Bus.resets`), it also knows when the broker lost
    its data: then it re-queues at once, without waiting for the grace period, everything that
    was accepted or due before the reset (plus `reset_lookahead_s`, for jobs a poller published
    ahead of their due time) and is neither routed nor queued nor leased, sweep after sweep
    until a sweep comes back short. Work in flight at that moment may be queued twice: the
    delivery claims stop the second send."""

    backoff = Backoff()  # between tries while Postgres is away
    reset_check_s = 0.25  # how often the reset count is looked at between sweeps

    def __init__(
        self,
        name: str,
        store: BackstopStore,
        *,
        lo: int,
        hi: int,
        interval_s: float,
        grace_s: float,
        batch: int,
        idempotency_retention_s: float = 86_400.0,
        bus_resets: Callable[[], int] | None = None,
        reset_lookahead_s: float = 0.0,
    ) -> None:
        super().__init__(name)
        self._store = store
        self._lo, self._hi = lo, hi
        self._interval_s, self._grace_s, self._batch = interval_s, grace_s, batch
        self._retention_s = idempotency_retention_s
        self._resets = bus_resets
        self._lookahead_s = reset_lookahead_s
        self._resets_seen = self._reset_count()  # when built: a reset after that is caught up

    async def run(self) -> None:
        postgres = Outage("postgres", self.name, POSTGRES_AWAY, self.backoff)
        seen = self._resets_seen
        catch_up_to: datetime | None = None  # after a reset: re-queue what is older than this
        wait_s = self._interval_s
        while not self.should_stop:
            if await self._wait(wait_s, seen):
                break
            if (resets := self._reset_count()) != seen:
                seen = resets
                catch_up_to = datetime.now(UTC) + timedelta(seconds=self._lookahead_s)
                log.warning(
                    "backstop_catching_up_after_bus_reset",
                    actor=self.name,
                    resets=resets,
                    why="the broker lost its data: open work is re-queued from Postgres now",
                )
            grace_s = self._grace_s
            if catch_up_to is not None:
                grace_s = (datetime.now(UTC) - catch_up_to).total_seconds()
            try:
                full = await self._sweep(grace_s)
            except POSTGRES_AWAY as exc:
                wait_s = postgres.failed(exc)  # sooner than the interval: catch up once back
                continue
            postgres.recovered()
            if full:
                wait_s = 0.0  # a full batch means more is waiting: go again at once
                continue
            catch_up_to = None
            wait_s = self._interval_s

    def _reset_count(self) -> int:
        return self._resets() if self._resets is not None else 0

    async def _wait(self, seconds: float, resets_seen: int) -> bool:
        """Sleeps `seconds`, waking early when the bus reports a reset; True on a stop."""
        deadline = time.monotonic() + seconds
        while True:
            if self._reset_count() != resets_seen:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return self.should_stop
            step = min(left, self.reset_check_s) if self._resets is not None else left
            if await self.sleep(step):
                return True

    async def _sweep(self, grace_s: float) -> bool:
        """One sweep; whether it hit the batch bound (more may be waiting)."""
        unrouted, stuck = await self._store.backstop(self._lo, self._hi, grace_s, self._batch)
        if unrouted or stuck:
            log.warning("backstop_requeued", actor=self.name, unrouted=unrouted, stuck=stuck)
            metrics.backstop_requeued.add({"kind": "unrouted"}, unrouted)
            metrics.backstop_requeued.add({"kind": "stuck"}, stuck)
        await self._store.expire_idempotency_keys(
            self._lo, self._hi, self._retention_s, self._batch
        )
        return unrouted >= self._batch or stuck >= self._batch
