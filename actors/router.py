"""The router role: consumes `notification.accepted`, publishes what is due now as delivery
jobs and writes the rest to the outbox; its offsets are committed only after that is durable
(the consuming actor, actors/consumer.py, does the fetching, committing and setting aside).

While Postgres or the bus is away the router keeps the records it fetched and tries again with
back-off; it never commits an offset for work that was not made durable, and a stop in the
meantime leaves those records to be read again by whoever takes the partition next."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Protocol
from uuid import UUID

import structlog

from actors.consumer import ConsumingActor, Message
from notifi import events, metrics
from notifi.bus import Bus, Record
from notifi.model import DeliveryJob
from notifi.outage import BUS_AWAY, POSTGRES_AWAY, Backoff, Outage

log = structlog.get_logger(__name__)


class RouteStore(Protocol):
    """What the router needs from the store."""

    async def route(self, ids: Sequence[UUID], horizon_s: float) -> tuple[list[DeliveryJob], int]:
        """Routes accepted notifications once: the jobs due within `horizon_s`, and how many
        went to the outbox for later."""
        ...


class Router(ConsumingActor[UUID]):
    backoff = Backoff()  # between tries while Postgres or the bus is away
    # Each batch's work is durable before the next fetch, and reading it again is harmless (a
    # second route finds routed_at set and publishes nothing), so offsets are committed at most
    # every 0.2 s: a commit per batch was a broker round trip per few notifications at low rates.
    commit_interval_s = 0.2

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
        super().__init__(name, bus, topic=source, group=group, fetch_max=fetch_max)
        self._store, self._target, self._horizon_s = store, target, horizon_s

    async def on_start(self) -> None:
        # Made here, not in __init__: `backoff` may be set on the instance in between.
        self._postgres = Outage("postgres", self.name, POSTGRES_AWAY, self.backoff)
        self._bus_outage = Outage("bus", self.name, BUS_AWAY, self.backoff)
        await super().on_start()

    def decode(self, record: Record) -> UUID:
        return events.read_accepted(record.value)

    async def handle(self, messages: list[Message[UUID]]) -> None:
        await self._route([m.value for m in messages])
        for m in messages:
            m.ack()

    async def _route(self, ids: list[UUID]) -> None:
        """Makes the routing of `ids` durable, waiting out Postgres or the bus being away."""
        route = partial(self._store.route, ids, self._horizon_s)
        jobs, scheduled = await self._postgres.call(route, self.sleep)
        if jobs:
            # Routed already (a second route finds routed_at set), so only the publish is
            # tried again; if the router is stopped first, the back-stop re-queues the jobs.
            publish = partial(self._bus.publish, self._target, events.delivery_due(jobs))
            await self._bus_outage.call(publish, self.sleep)
        metrics.routed.add({"route": "immediate"}, len(jobs))
        metrics.routed.add({"route": "scheduled"}, scheduled)
