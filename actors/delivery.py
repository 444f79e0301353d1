"""The delivery role: a consumer of `delivery.due` jobs feeding a pool of workers, and a
recorder that writes their outcomes in batches before the jobs' offsets are committed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import structlog

from notifi import events, metrics
from notifi.bus import Bus, BusError, Consumer
from notifi.claims import Claim, Claims
from notifi.destinations.base import Message, Outcome, Sender
from notifi.hosts import BUSY_PATIENCE_S, HostGate
from notifi.model import DeliveryJob, DeliveryStatus
from notifi.offsets import OffsetTracker
from notifi.retry import RetryPolicy
from notifi.runtime import Actor, Mailbox
from notifi.store import Finished, Store

log = structlog.get_logger(__name__)

_OPEN = {DeliveryStatus.PENDING, DeliveryStatus.SCHEDULED, DeliveryStatus.DELIVERING}


@dataclass(slots=True)
class Work:
    job: DeliveryJob
    row: Mapping[str, Any]  # the notification and destination (load_jobs)
    token: str  # names this published job in this process (the claim's owner)
    ack: Callable[[], None]  # marks the job's offset committable
    loaded_at: datetime


@dataclass(slots=True)
class Record:
    """What the recorder writes for one job: an outcome, or the job sent back to the outbox."""

    work: Work
    finished: Finished | None = None
    requeue: DeliveryJob | None = None


class DeliveryConsumer(Actor):
    """Fetches jobs, loads what they need in one query per batch, hands them to the workers
    (waiting when their mailbox is full), and commits offsets as jobs become durable."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        store: Store,
        outbox: Mailbox[Work],
        *,
        topic: str,
        group: str,
        fetch_max: int,
        process_token: str,
        drain_timeout_s: float,
    ) -> None:
        super().__init__(name)
        self._bus, self._store, self._outbox = bus, store, outbox
        self._topic, self._group, self._fetch_max = topic, group, fetch_max
        self._process_token, self._drain_timeout_s = process_token, drain_timeout_s
        self._consumer: Consumer | None = None
        self._tracker = OffsetTracker()

    async def on_start(self) -> None:
        self._consumer = self._bus.consumer(self._topic, self._group)
        await self._consumer.start()

    async def run(self) -> None:
        assert self._consumer is not None
        last_commit = time.monotonic()
        while not self.should_stop:
            records = await self._consumer.fetch(self._fetch_max, timeout_s=0.1)
            if records:
                await self._dispatch(records)
            if time.monotonic() - last_commit > 0.2:
                await self._commit()
                last_commit = time.monotonic()
                if (lag := await self._consumer.lag()) is not None:
                    metrics.consumer_lag.set({"group": self._group}, lag)
        # Drain: stop fetching, let the workers finish what they hold, commit what they did.
        deadline = time.monotonic() + self._drain_timeout_s
        while self._tracker.in_flight() and time.monotonic() < deadline:
            await self._commit()
            await asyncio.sleep(0.05)
        await self._commit()

    async def _commit(self) -> None:
        assert self._consumer is not None
        offsets = self._tracker.committable()
        if offsets:
            await self._consumer.commit(offsets)

    async def _dispatch(self, records: list) -> None:
        jobs = []
        for record in records:
            ack = self._tracker.track((record.topic, record.partition), record.offset)
            try:
                job = events.read_delivery_due(record.value)
            except events.BadEvent as exc:
                log.error(
                    "bad_event_skipped",
                    actor=self.name,
                    error=str(exc),
                    topic=record.topic,
                    offset=record.offset,
                )
                ack()
                continue
            token = f"{self._process_token}:{record.topic}:{record.partition}:{record.offset}"
            jobs.append((job, token, ack))
        rows = await self._store.load_jobs([job.key for job, _, _ in jobs])
        now = datetime.now(UTC)
        for job, token, ack in jobs:
            row = rows.get(job.key)
            if row is None or row["deleted_at"] is not None or row["status"] not in _OPEN:
                ack()  # gone, deleted, or already finished: nothing to do
                continue
            await self._outbox.put(Work(job, row, token, ack, now))

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


def destination_host(row: Mapping[str, Any]) -> str:
    """The host a delivery talks to, for the per-host bound and breaker."""
    destination = row["destination"]
    if "url" in destination:
        return urlsplit(destination["url"]).hostname or ""
    return str(row["kind"])  # channels without a URL share one server (e.g. the SMTP relay)


def webhook_payload(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": str(row["notification_id"]),
            "type": "notification",
            "title": row["title"],
            "body": row["body"],
            "data": row["data"],
            "scheduled_at": row["scheduled_at"],
            "created_at": row["created_at"],
        }
    )


class DeliveryWorker(Actor):
    """Waits until a job is due (never early), re-checks deletion, claims, sends, and hands
    the outcome to the recorder."""

    def __init__(
        self,
        name: str,
        inbox: Mailbox[Work],
        recorder: Mailbox[Record],
        *,
        store: Store,
        claims: Claims,
        senders: Mapping[str, Sender],
        policy: RetryPolicy,
        claim_ttl_s: float,
        gate: HostGate,
    ) -> None:
        super().__init__(name, inbox)
        self._recorder, self._store, self._claims = recorder, store, claims
        self._senders, self._policy, self._claim_ttl_s = senders, policy, claim_ttl_s
        self._gate = gate

    async def run(self) -> None:
        while True:  # until stopped with an empty mailbox
            async with self.receive() as work:
                with structlog.contextvars.bound_contextvars(
                    actor=self.name,
                    notification_id=str(work.job.notification_id),
                    client_id=work.row["client_id"],
                ):
                    await self._handle(work)

    async def _handle(self, work: Work) -> None:
        job = work.job
        wait_s = (job.due_at - datetime.now(UTC)).total_seconds()
        if wait_s > 0 and await self.sleep(wait_s):
            return  # stopping: the job stays uncommitted and comes back after the restart
        # Loaded before it was due: a delete may have come since (checked at load otherwise).
        if job.due_at > work.loaded_at and await self._store.is_deleted(job.notification_id):
            work.ack()
            return
        host = destination_host(work.row)
        wait_s = await self._gate.acquire(host, BUSY_PATIENCE_S)
        if wait_s is not None:  # the host is paused or at its bound: wait in the outbox
            metrics.deferred.inc({"reason": str(self._gate.state(host))})
            later = DeliveryJob(
                job.notification_id,
                job.position,
                job.attempt,
                datetime.now(UTC) + timedelta(seconds=wait_s),
            )
            await self._recorder.put(Record(work, requeue=later))
            return
        host_failed: bool | None = None
        try:
            host_failed = await self._claim_and_send(work)
        finally:
            self._gate.release(host, host_failed=host_failed)

    async def _claim_and_send(self, work: Work) -> bool | None:
        """Returns whether the host failed (None when nothing was sent)."""
        job = work.job
        claim = await self._claims.claim((job.key, work.token))
        if claim is Claim.DELIVERED:
            metrics.claims_skipped.inc({"reason": "delivered"})
            finished = Finished(job, DeliveryStatus.DELIVERED)  # Postgres catches up
            await self._recorder.put(Record(work, finished=finished))
            return None
        if claim is Claim.BUSY:
            metrics.claims_skipped.inc({"reason": "busy"})
            later = DeliveryJob(
                job.notification_id,
                job.position,
                job.attempt,
                datetime.now(UTC) + timedelta(seconds=self._claim_ttl_s),
            )
            await self._recorder.put(Record(work, requeue=later))
            return None
        finished = await self._attempt(work)
        await self._recorder.put(Record(work, finished=finished))
        return finished.outcome == Outcome.RETRY

    async def _attempt(self, work: Work) -> Finished:
        job, row, kind = work.job, work.row, work.row["kind"]
        started = datetime.now(UTC)
        metrics.delivery_lateness.observe({}, max((started - job.due_at).total_seconds(), 0.0))
        message = Message(id=str(job.notification_id), payload=webhook_payload(row))
        result = await self._senders[kind].send(row["destination"], message)
        metrics.delivery_attempts.inc({"channel": kind, "outcome": str(result.outcome)})
        metrics.delivery_latency.observe({"channel": kind}, result.duration_ms / 1000)
        common = dict(
            started_at=started,
            duration_ms=result.duration_ms,
            outcome=str(result.outcome),
            status_code=result.status_code,
            error=result.error,
        )
        log.log(
            logging.DEBUG if result.outcome is Outcome.DELIVERED else logging.INFO,
            "delivery_attempted",
            position=job.position,
            attempt=job.attempt,
            channel=kind,
            outcome=str(result.outcome),
            status_code=result.status_code,
            error=result.error,
            duration_ms=round(result.duration_ms, 2),
        )
        if result.outcome is Outcome.DELIVERED:
            await self._claims.mark_delivered(job.key)
            return Finished(job, DeliveryStatus.DELIVERED, **common)
        if result.outcome is Outcome.RETRY:
            delay = self._policy.delay_after(job.attempt, result.retry_after_s)
            if delay is not None:
                metrics.retries_scheduled.inc({})
                due = datetime.now(UTC) + timedelta(seconds=delay)
                return Finished(job, DeliveryStatus.DELIVERING, next_attempt_at=due, **common)
            metrics.deliveries_failed.inc({"reason": "exhausted"})
        else:
            metrics.deliveries_failed.inc({"reason": "permanent"})
        return Finished(job, DeliveryStatus.FAILED, **common)


class Recorder(Actor):
    """Writes outcomes in batches (one transaction), then releases claims and acks the jobs.
    While Postgres is down it keeps the batch and tries again: nothing is acked unwritten."""

    def __init__(
        self,
        name: str,
        inbox: Mailbox[Record],
        *,
        store: Store,
        claims: Claims,
        batch: int,
        bus: Bus,
        events_topic: str,
    ) -> None:
        super().__init__(name, inbox)
        self._store, self._claims, self._batch = store, claims, batch
        self._bus, self._events_topic = bus, events_topic

    async def run(self) -> None:
        while True:  # until stopped with an empty mailbox: every outcome is written
            async with self.receive_batch(self._batch, 0.002) as records:
                await self._write(records)

    async def _write(self, records: list[Record]) -> None:
        finished = [r.finished for r in records if r.finished is not None]
        requeued = [r.requeue for r in records if r.requeue is not None]
        delay_s = 0.1
        while True:
            try:
                await self._store.record(finished, requeued)
                break
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("record_failed_retrying", actor=self.name, error=str(exc))
                await asyncio.sleep(delay_s)  # keeps trying while draining too: acks wait
                delay_s = min(delay_s * 2, 5.0)
        await self._claims.release(
            [
                (r.work.job.key, r.work.token)
                for r in records
                if r.finished is not None and r.finished.new_status is not DeliveryStatus.DELIVERED
            ]
        )
        for r in records:
            r.work.ack()
        await self._publish_events(records)

    async def _publish_events(self, records: list[Record]) -> None:
        """Operational events, after the record is durable; best effort (the database is the
        record, the topic a feed for other systems)."""
        out = []
        for r in records:
            f = r.finished
            if f is None or f.outcome is None:
                continue  # nothing was attempted
            if f.new_status is DeliveryStatus.DELIVERED:
                kind = events.SUCCEEDED
            elif f.new_status is DeliveryStatus.FAILED:
                kind = events.EXHAUSTED if f.outcome == Outcome.RETRY else events.FAILED
            else:
                continue
            out.append(
                events.delivery_outcome(
                    kind,
                    f.job,
                    client_id=r.work.row["client_id"],
                    channel=r.work.row["kind"],
                    status_code=f.status_code,
                    error=f.error,
                )
            )
        if out:
            try:
                await self._bus.publish(self._events_topic, out)
            except BusError as exc:
                log.warning("events_publish_failed", error=str(exc), count=len(out))
