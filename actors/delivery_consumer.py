"""The delivery role's consumer: fetches `delivery.due` jobs, loads what they need in one query
per batch, and hands them to the workers (actors/delivery.py): at once when they are due, else
at their due time from one timer (`notifi.holding`). Jobs come up to `poller.lookahead` ahead of
their time, so work due while Postgres is briefly away is already here, loaded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import structlog

from actors.consumer import ConsumingActor, Message
from actors.delivery import Record, Work
from notifi import events, metrics
from notifi.bus import Bus
from notifi.bus import Record as BusRecord
from notifi.bus.base import TopicPartition
from notifi.claims import job_token
from notifi.holding import Holder
from notifi.model import OPEN_STATUSES, DeliveryJob
from notifi.outage import POSTGRES_AWAY, Backoff, Outage
from notifi.runtime import Mailbox

Key = tuple[UUID, int]
log = structlog.get_logger(__name__)


class JobLoader(Protocol):
    """What the consumer needs of the store."""

    async def load_jobs(self, keys: Sequence[Key]) -> Mapping[Key, Mapping[str, Any]]: ...


def is_open(row: Mapping[str, Any] | None) -> bool:
    """Whether a loaded job still has something to do (not gone, deleted or finished)."""
    return row is not None and row["deleted_at"] is None and row["status"] in OPEN_STATUSES


class DeliveryConsumer(ConsumingActor[DeliveryJob]):
    """Fetches jobs, loads what they need in one query per batch (waiting out Postgres being
    away), hands them to the workers (waiting when their mailbox is full), and commits offsets
    below the oldest job still in flight (actors/consumer.py)."""

    backoff = Backoff()  # between tries while Postgres is away
    # Jobs loaded at most this many at a time, and only while fewer wait for a worker: a job
    # that waits long after its load is read again by its worker (RECHECK_AFTER_S), so under a
    # backlog loading a whole fetch at once cost one more query for nearly every job.
    load_ahead = 64
    room_poll_s = 0.005  # how often a full outbox is looked at again
    # A job due later than this after its load is held by the timer, not handed to a worker
    # that would sleep on it (a worker still never starts one early).
    hold_from = timedelta(milliseconds=5)

    def __init__(
        self,
        name: str,
        bus: Bus,
        store: JobLoader,
        outbox: Mailbox[Work],
        *,
        topic: str,
        group: str,
        fetch_max: int,
        instance_id: str,
        process_token: str,
        drain_timeout_s: float,
        requeue: Mailbox[Record] | None = None,
    ) -> None:
        super().__init__(
            name,
            bus,
            topic=topic,
            group=group,
            fetch_max=fetch_max,
            drain_timeout_s=drain_timeout_s,
        )
        self._store, self._outbox = store, outbox
        self._instance_id, self._process_token = instance_id, process_token
        self._held: Holder[tuple[TopicPartition, Work]] = Holder(self._release)
        # On a stop, jobs still held go back to the outbox through the recorder (None: they
        # are given up, to be read again from the last commit): an in-process bus keeps
        # nothing across a restart, and a successor then need not read them again.
        self._requeue = requeue

    async def on_start(self) -> None:
        self._postgres = Outage("postgres", self.name, POSTGRES_AWAY, self.backoff)
        await super().on_start()

    def decode(self, record: BusRecord) -> DeliveryJob:
        return events.read_delivery_due(record.value)

    async def handle(self, messages: list[Message[DeliveryJob]]) -> None:
        for start in range(0, len(messages), self.load_ahead):
            await self._wait_for_room()
            await self._load_and_hand_over(messages[start : start + self.load_ahead])

    async def _wait_for_room(self) -> None:
        """Until fewer than `load_ahead` jobs wait for a worker (or a stop: then on as before,
        the workers drain the mailbox)."""
        while self._outbox.qsize() >= self.load_ahead:
            if await self.sleep(self.room_poll_s):
                return

    def _release(self, held: list[tuple[TopicPartition, Work]]) -> None:
        self._outbox.admit([work for _, work in held])  # admitted when loaded
        metrics.jobs_held.set({}, len(self._held))

    def give_up_held(self, partitions: set[TopicPartition] | None = None) -> int:
        if partitions is None:
            return len(self._held.clear())
        return self._held.drop(lambda held: held[0] in partitions)

    async def hand_back_held(self) -> int:
        if self._requeue is None:
            return self.give_up_held()
        held = self._held.clear()
        for _, work in held:
            await self._requeue.put(Record(work, requeue=work.job))  # acked once written
        if held:
            log.info("held_jobs_requeued", actor=self.name, count=len(held))
        metrics.jobs_held.set({}, 0)
        return 0

    async def _load(self, keys: list[Key]) -> tuple[datetime, Mapping[Key, Mapping[str, Any]]]:
        """The rows, and when the read began: what a job was loaded with is the state as of
        no earlier than that (a worker that cannot reach Postgres later trusts the change marks
        written since, `notifi.marks`)."""
        began = datetime.now(UTC)
        return began, await self._store.load_jobs(keys)

    async def _load_and_hand_over(self, messages: list[Message[DeliveryJob]]) -> None:
        keys = [m.value.key for m in messages]
        loaded_at, rows = await self._postgres.call(lambda: self._load(keys), self.sleep)
        hold_after = datetime.now(UTC) + self.hold_from
        # Decide every message before handing any over: nothing below may raise once a job
        # is with the workers (the consuming actor would otherwise handle it again).
        handed, finished = [], []
        for m in messages:
            row = rows.get(m.value.key)
            if is_open(row):
                handed.append((m, row))
            else:
                finished.append(m)  # gone, deleted, or already finished: nothing to do
        for m in finished:
            m.ack()
        for m, row in handed:
            r = m.record
            token = job_token(
                self._instance_id, self._process_token, r.topic, r.partition, r.offset
            )
            work = Work(m.value, row, token, m.hand_over(), loaded_at)
            if m.value.due_at > hold_after:
                self._held.hold(m.value.due_at, ((r.topic, r.partition), work))
            else:
                await self._outbox.put(work)
        metrics.jobs_held.set({}, len(self._held))
