"""The router role: consumes `notification.accepted`, publishes what is due now as delivery
jobs and writes the rest to the outbox; commits offsets only after that is durable.

While Postgres or the bus is away the router keeps the records it fetched and tries again with
back-off; it never commits an offset for work that was not made durable, and a stop in the
meantime leaves those records to be read again by whoever takes the partition next."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Protocol
from uuid import UUID

import structlog

from notifi import events, metrics
from notifi.bus import Bus, Consumer, Record
from notifi.model import DeliveryJob
from notifi.outage import BUS_AWAY, POSTGRES_AWAY, Backoff, Outage, StopRequested
from notifi.runtime import Actor

log = structlog.get_logger(__name__)


class RouteStore(Protocol):
    """What the router needs from the store."""

    async def route(self, ids: Sequence[UUID], horizon_s: float) -> tuple[list[DeliveryJob], int]:
        """Routes accepted notifications once: the jobs due within `horizon_s`, and how many
        went to the outbox for later."""
        ...


def next_offsets(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """Per partition, the next offset to read after `records`."""
    offsets: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return offsets


class Router(Actor):
    backoff = Backoff()  # between tries while Postgres or the bus is away

    def __init__(
        self,
        name: str,
        bus: Bus,
        store: RouteStore,
        *,
        source: str,
        group: str,
        target: str,
        horizon_s: float,
        fetch_max: int,
    ) -> None:
        super().__init__(name)
        self._bus, self._store = bus, store
        self._source, self._group, self._target = source, group, target
        self._horizon_s, self._fetch_max = horizon_s, fetch_max
        self._consumer: Consumer | None = None

    async def on_start(self) -> None:
        self._consumer = self._bus.consumer(self._source, self._group)
        await self._consumer.start()

    async def run(self) -> None:
        assert self._consumer is not None
        self._postgres = Outage("postgres", self.name, POSTGRES_AWAY, self.backoff)
        self._bus_outage = Outage("bus", self.name, BUS_AWAY, self.backoff)
        while not self.should_stop:
            records = await self._consumer.fetch(self._fetch_max, timeout_s=0.2)
            if not records:
                continue
            try:
                await self._route(self._decode(records))
            except StopRequested:
                log.warning("router_stopped_uncommitted", actor=self.name, records=len(records))
                return
            await self._consumer.commit(next_offsets(records))
            if (lag := await self._consumer.lag()) is not None:
                metrics.consumer_lag.set({"group": self._group}, lag)

    async def _route(self, ids: list[UUID]) -> None:
        """Makes the routing of `ids` durable, waiting out Postgres or the bus being away."""
        if not ids:
            return
        route = partial(self._store.route, ids, self._horizon_s)
        jobs, scheduled = await self._postgres.call(route, self.sleep)
        if jobs:
            # Routed already (a second route finds routed_at set), so only the publish is
            # tried again; if the router is stopped first, the back-stop re-queues the jobs.
            publish = partial(self._bus.publish, self._target, events.delivery_due(jobs))
            await self._bus_outage.call(publish, self.sleep)
        metrics.routed.add({"route": "immediate"}, len(jobs))
        metrics.routed.add({"route": "scheduled"}, scheduled)

    def _decode(self, records: Sequence[Record]) -> list[UUID]:
        ids = []
        for record in records:
            try:
                ids.append(events.read_accepted(record.value))
            except events.BadEvent as exc:
                log.error(
                    "bad_event_skipped",
                    actor=self.name,
                    error=str(exc),
                    topic=record.topic,
                    offset=record.offset,
                )
        return ids

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
