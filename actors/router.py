"""The router role: consumes `notification.accepted`, publishes what is due now as delivery
jobs and writes the rest to the outbox; commits offsets only after that is durable."""

from __future__ import annotations

import structlog

from notifi import events, metrics
from notifi.bus import Bus, Consumer
from notifi.runtime import Actor
from notifi.store import Store

log = structlog.get_logger(__name__)


class Router(Actor):
    def __init__(
        self,
        name: str,
        bus: Bus,
        store: Store,
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
        while not self.should_stop:
            records = await self._consumer.fetch(self._fetch_max, timeout_s=0.2)
            if not records:
                continue
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
            jobs, scheduled = await self._store.route(ids, self._horizon_s) if ids else ([], 0)
            if jobs:
                await self._bus.publish(self._target, events.delivery_due(jobs))
            metrics.routed.add({"route": "immediate"}, len(jobs))
            metrics.routed.add({"route": "scheduled"}, scheduled)
            offsets: dict[tuple[str, int], int] = {}
            for r in records:
                tp = (r.topic, r.partition)
                offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
            await self._consumer.commit(offsets)
            if (lag := await self._consumer.lag()) is not None:
                metrics.consumer_lag.set({"group": self._group}, lag)

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
