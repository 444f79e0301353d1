"""The delivery role's recorder: writes the workers' outcomes in batches (one transaction),
then releases claims, acks the jobs and publishes the operational events (a stored destination
the batch disabled announces itself once, as `destination.disabled`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from uuid import UUID

import structlog

from actors.delivery import Record
from notifi import events, metrics
from notifi.bus import Bus, BusError
from notifi.model import DeliveryJob, DeliveryStatus
from notifi.outage import POSTGRES_AWAY
from notifi.runtime import Actor, Mailbox
from notifi.store import Finished

log = structlog.get_logger(__name__)

Key = tuple[UUID, int]


class OutcomeWriter(Protocol):
    """What the recorder needs of the store."""

    async def record(
        self, finished: Sequence[Finished], requeued: Sequence[DeliveryJob]
    ) -> Sequence[Mapping[str, Any]] | None:
        """Writes the batch; returns the stored destinations it disabled."""
        ...


class ClaimRelease(Protocol):
    """What the recorder needs of the claims."""

    async def release(self, items: Sequence[tuple[Key, str]]) -> None: ...


class Recorder(Actor):
    """Writes outcomes in batches (one transaction), then releases claims and acks the jobs.
    While Postgres is down it keeps the batch and tries again: nothing is acked unwritten."""

    def __init__(
        self,
        name: str,
        inbox: Mailbox[Record],
        *,
        store: OutcomeWriter,
        claims: ClaimRelease,
        batch: int,
        bus: Bus,
        events_topic: str,
        linger_s: float,
    ) -> None:
        super().__init__(name, inbox)
        self._store, self._claims, self._batch = store, claims, batch
        # Waiting a little for more outcomes costs no arrival (each was sent and marked in
        # Redis before it came here) and saves a write, a claims call and an events publish per
        # outcome at low rates; only the acks, the API's status and the events come that later.
        self._linger_s = linger_s
        self._bus, self._events_topic = bus, events_topic

    async def run(self) -> None:
        while True:  # until stopped with an empty mailbox: every outcome is written
            async with self.receive_batch(self._batch, self._linger_s) as records:
                await self._write(records)

    async def _write(self, records: list[Record]) -> None:
        finished = [r.finished for r in records if r.finished is not None]
        requeued = [r.requeue for r in records if r.requeue is not None]
        delay_s = 0.1
        while True:
            try:
                disabled = await self._store.record(finished, requeued) or []
                break
            except POSTGRES_AWAY as exc:
                log.warning("record_failed_retrying", actor=self.name, error=str(exc))
                await asyncio.sleep(delay_s)  # keeps trying while draining too: acks wait
                delay_s = min(delay_s * 2, 2.0)
        await self._claims.release(
            [
                (r.work.job.key, r.work.token)
                for r in records
                if r.finished is not None and r.finished.new_status is not DeliveryStatus.DELIVERED
            ]
        )
        for r in records:
            r.work.ack()
        await self._publish_events(records, disabled)

    async def _publish_events(
        self, records: list[Record], disabled: Sequence[Mapping[str, Any]]
    ) -> None:
        """Operational events, after the record is durable; best effort (the database is the
        record, the topic a feed for other systems)."""
        causes = {
            r.finished.destination_id: r.disable.kind
            for r in records
            if r.disable is not None and r.finished is not None
        }
        out = []
        for row in disabled:
            cause = str(causes.get(row["id"], "failing"))
            log.warning(
                "destination_disabled",
                destination_id=str(row["id"]),
                client_id=row["client_id"],
                reason=row["disabled_reason"],
            )
            metrics.destinations_disabled.inc({"reason": cause})
            out.append(events.destination_disabled(row, cause))
        out += [
            events.delivery_outcome(
                r.event,
                r.finished.job,
                client_id=r.work.row["client_id"],
                channel=r.work.row["kind"],
                status_code=r.finished.status_code,
                error=r.finished.error,
            )
            for r in records
            if r.event is not None and r.finished is not None
        ]
        if out:
            try:
                await self._bus.publish(self._events_topic, out)
            except BusError as exc:
                log.warning("events_publish_failed", error=str(exc), count=len(out))
