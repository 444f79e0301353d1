"""In-memory fakes of the store's and the bus's ports, for unit tests of the actors.

`FakeStore` implements exactly what the router, the pollers and the accept writer ask of
`notifi.store.Store` (see the Protocols next to each actor), with the same meaning as its SQL
on a small in-memory model; `go_down()` makes every call fail the way an unreachable Postgres
does. `FakeBus` is the real in-process bus, recording publishes and commits, with failures on
demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from notifi.bus import BusError, MemoryBus
from notifi.bus.base import Record, RevokedHook, TopicPartition
from notifi.bus.memory import MemoryConsumer
from notifi.model import DeliveryJob, NewNotification
from notifi.runtime import Actor, Stopped
from notifi.store import Accepted, AcceptOutcome

OPEN = ("pending", "scheduled", "delivering")


def postgres_down() -> BaseException:
    """What asyncpg raises when the server is unreachable."""
    return asyncpg.PostgresConnectionError("connection refused (fake)")


class Clock:
    """A settable wall clock, so due times and grace periods need no real waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeDelivery:
    status: str
    attempts: int
    next_attempt_at: datetime


@dataclass
class FakeNotification:
    new: NewNotification
    deliveries: list[FakeDelivery]
    routed_at: datetime | None = None
    deleted_at: datetime | None = None

    @property
    def partition_key(self) -> int:
        return self.new.partition_key


@dataclass
class OutboxRow:
    notification_id: UUID
    position: int
    attempt: int
    due_at: datetime
    partition_key: int

    @property
    def job(self) -> DeliveryJob:
        return DeliveryJob(self.notification_id, self.position, self.attempt, self.due_at)


@dataclass
class FakeStore:
    """The store's ports over dicts and lists; one event loop, so no locking is needed except
    the rows a claim holds (FOR UPDATE SKIP LOCKED)."""

    clock: Clock = field(default_factory=Clock)
    notifications: dict[UUID, FakeNotification] = field(default_factory=dict)
    outbox: list[OutboxRow] = field(default_factory=list)
    idempotency: dict[tuple[str, str], tuple[UUID, bytes, datetime]] = field(default_factory=dict)
    refused: set[UUID] = field(default_factory=set)  # ids whose write Postgres refuses
    calls: list[str] = field(default_factory=list)
    down: BaseException | None = None
    _failures: dict[str, list[BaseException]] = field(default_factory=dict)
    _locked: set[int] = field(default_factory=set)  # id() of outbox rows held by a claim

    # -- failure injection -------------------------------------------------------------

    def go_down(self, error: BaseException | None = None) -> None:
        """Every call fails with `error` (a connection error by default) until `come_back`."""
        self.down = error or postgres_down()

    def come_back(self) -> None:
        self.down = None

    def fail_next(self, method: str, *errors: BaseException) -> None:
        """The next calls of `method` fail with `errors`, one each, in order."""
        self._failures.setdefault(method, []).extend(errors)

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if self.down is not None:
            raise self.down
        if queued := self._failures.get(method):
            raise queued.pop(0)

    # -- api ---------------------------------------------------------------------------

    async def accept(self, batch: Sequence[NewNotification]) -> list[Accepted]:
        self._enter("accept")
        await asyncio.sleep(0)  # a real write yields to the loop
        if refused := [n.id for n in batch if n.id in self.refused]:
            # One transaction: a refused row fails the whole batch.
            raise asyncpg.CharacterNotInRepertoireError(f"refused (fake): {refused[0]}")
        results = []
        for n in batch:
            if n.idempotency_key is not None:
                seen = self.idempotency.get((n.client_id, n.idempotency_key))
                if seen is not None:
                    same = seen[1] == n.request_hash
                    outcome = AcceptOutcome.REPLAYED if same else AcceptOutcome.CONFLICT
                    results.append(Accepted(outcome, seen[0]))
                    continue
                self.idempotency[(n.client_id, n.idempotency_key)] = (
                    n.id,
                    n.request_hash,
                    n.created_at,
                )
            status = "scheduled" if n.due_at() > n.created_at else "pending"
            deliveries = [FakeDelivery(status, 0, n.due_at()) for _ in n.destinations]
            self.notifications[n.id] = FakeNotification(n, deliveries)
            results.append(Accepted(AcceptOutcome.CREATED, n.id))
        return results

    # -- router ------------------------------------------------------------------------

    async def route(self, ids: Sequence[UUID], horizon_s: float) -> tuple[list[DeliveryJob], int]:
        self._enter("route")
        now = self.clock()
        jobs, later = [], 0
        for notification_id in ids:
            n = self.notifications.get(notification_id)
            if n is None or n.routed_at is not None or n.deleted_at is not None:
                continue
            n.routed_at = now
            due = max(n.new.scheduled_at or now, now)
            for position, d in enumerate(n.deliveries):
                if d.status not in ("pending", "scheduled"):
                    continue
                if due > now + timedelta(seconds=horizon_s):
                    self.outbox.append(
                        OutboxRow(notification_id, position, d.attempts + 1, due, n.partition_key)
                    )
                    later += 1
                else:
                    jobs.append(DeliveryJob(notification_id, position, d.attempts + 1, due))
        return jobs, later

    # -- poller ------------------------------------------------------------------------

    @asynccontextmanager
    async def claim_due(
        self, lo: int, hi: int, horizon_s: float, limit: int
    ) -> AsyncIterator[list[DeliveryJob]]:
        self._enter("claim_due")
        until = self.clock() + timedelta(seconds=horizon_s)
        due = sorted(
            (
                r
                for r in self.outbox
                if lo <= r.partition_key <= hi and r.due_at <= until and id(r) not in self._locked
            ),
            key=lambda r: r.due_at,
        )[:limit]
        held = {id(r) for r in due}
        self._locked |= held
        try:
            yield [r.job for r in due]
            self._enter("claim_due.commit")  # the commit can fail too: the rows stay
            self.outbox = [r for r in self.outbox if id(r) not in held]
        finally:
            self._locked -= held  # commit or roll back: the locks go

    async def backstop(self, lo: int, hi: int, grace_s: float, limit: int) -> tuple[int, int]:
        self._enter("backstop")
        now = self.clock()
        before = now - timedelta(seconds=grace_s)
        in_range = [n for n in self.notifications.values() if lo <= n.partition_key <= hi]
        unrouted = 0
        for n in [
            n
            for n in in_range
            if n.routed_at is None and n.deleted_at is None and n.new.created_at < before
        ][:limit]:
            n.routed_at = now
            due = max(n.new.scheduled_at or now, now)
            for position, d in enumerate(n.deliveries):
                if d.status in ("pending", "scheduled"):
                    self._queue(n, position, d.attempts + 1, due)
                    unrouted += 1
        queued = {(r.notification_id, r.position) for r in self.outbox}
        stuck_rows = [
            (n, position, d)
            for n in in_range
            if n.routed_at is not None and n.deleted_at is None
            for position, d in enumerate(n.deliveries)
            if d.status in OPEN
            and d.next_attempt_at < before
            and (n.new.id, position) not in queued
        ][:limit]
        for n, position, d in stuck_rows:
            d.next_attempt_at = now
            self._queue(n, position, d.attempts + 1, now)
        return unrouted, len(stuck_rows)

    async def expire_idempotency_keys(
        self, lo: int, hi: int, retention_s: float, limit: int
    ) -> int:
        self._enter("expire_idempotency_keys")
        before = self.clock() - timedelta(seconds=retention_s)
        expired = [
            key
            for key, (notification_id, _, created_at) in self.idempotency.items()
            if created_at < before and lo <= self.notifications[notification_id].partition_key <= hi
        ][:limit]
        for key in expired:
            del self.idempotency[key]
        return len(expired)

    # -- helpers for tests -------------------------------------------------------------

    def _queue(self, n: FakeNotification, position: int, attempt: int, due: datetime) -> None:
        self.outbox.append(OutboxRow(n.new.id, position, attempt, due, n.partition_key))

    def schedule(self, job: DeliveryJob, partition_key: int = 0) -> None:
        """An outbox row as a router or a retry would have written it."""
        self.outbox.append(
            OutboxRow(job.notification_id, job.position, job.attempt, job.due_at, partition_key)
        )

    def add(self, n: NewNotification) -> None:
        """A committed notification, as `accept` would leave it (no call is counted)."""
        status = "scheduled" if n.due_at() > n.created_at else "pending"
        self.notifications[n.id] = FakeNotification(
            n, [FakeDelivery(status, 0, n.due_at()) for _ in n.destinations]
        )


class _RecordingConsumer:
    """A memory-bus consumer that records commits and lets a test revoke its partition."""

    def __init__(self, inner: MemoryConsumer, bus: FakeBus, instance_id: str | None) -> None:
        self._inner, self._bus = inner, bus
        self.instance_id = instance_id
        self._hooks: list[RevokedHook] = []

    def assignment(self) -> set[TopicPartition]:
        return self._inner.assignment()

    def on_revoked(self, hook: RevokedHook) -> None:
        self._hooks.append(hook)

    async def revoke(self) -> None:
        """Runs the revoke hooks as a rebalance would, for the one partition."""
        for hook in self._hooks:
            await hook(self.assignment())

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def fetch(self, max_records: int, timeout_s: float) -> list[Record]:
        return await self._inner.fetch(max_records, timeout_s)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._bus.commits.append(dict(offsets))
        await self._inner.commit(offsets)

    async def lag(self) -> int | None:
        return await self._inner.lag()


class FakeBus(MemoryBus):
    """The in-process bus, recording every publish and commit, failing publishes on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.published: dict[str, list[tuple[bytes | None, bytes]]] = {}
        self.publishes = 0  # publish calls that succeeded
        self.commits: list[dict[TopicPartition, int]] = []
        self.consumers: list[_RecordingConsumer] = []
        self.down: BaseException | None = None
        self._failures: list[BaseException] = []

    def go_down(self, error: BaseException | None = None) -> None:
        self.down = error or BusError("broker unreachable (fake)")

    def come_back(self) -> None:
        self.down = None

    def fail_next(self, *errors: BaseException) -> None:
        self._failures.extend(errors)

    async def feed(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Puts messages on a topic as another role would: not recorded, never failing."""
        await super().publish(topic, messages)

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        if self.down is not None:
            raise self.down
        if self._failures:
            raise self._failures.pop(0)
        await super().publish(topic, messages)
        self.publishes += 1
        self.published.setdefault(topic, []).extend(messages)

    def consumer(  # type: ignore[override]
        self, topic: str, group: str, *, instance_id: str | None = None
    ) -> _RecordingConsumer:
        consumer = _RecordingConsumer(super().consumer(topic, group), self, instance_id)
        self.consumers.append(consumer)
        return consumer

    def committed(self, topic: str) -> int:
        """The highest offset (next to read) committed on partition 0 of `topic`."""
        return max((c[(topic, 0)] for c in self.commits if (topic, 0) in c), default=0)


@asynccontextmanager
async def running(actor: Actor) -> AsyncIterator[asyncio.Task[None]]:
    """Runs an actor as the supervisor would (on_start, run, on_stop); on exit it is asked to
    stop and must end by itself, without an error, within a few seconds."""
    await actor.on_start()
    task = asyncio.create_task(actor.run(), name=actor.name)
    try:
        yield task
    finally:
        actor.request_stop()
        try:
            with contextlib.suppress(Stopped):  # how a mailbox actor ends once drained
                await asyncio.wait_for(asyncio.shield(task), 5)
        finally:
            await actor.on_stop()


async def eventually(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    """Waits until `check()` is truthy, failing after `timeout_s` (generous on a loaded box)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: {check}")
        await asyncio.sleep(0.005)


def metric_value(metric: Any, labels: dict[str, str]) -> float:
    """A counter's or gauge's current value for `labels` (0 when never set)."""
    try:
        return float(metric.get(labels))
    except KeyError:
        return 0.0


def assert_implements(concrete: type, protocol: type) -> None:
    """Every method of `protocol` exists on `concrete` with the same parameters (names, kinds
    and order), and async where the protocol's is: a structural check without a type checker."""
    for name, member in vars(protocol).items():
        if name.startswith("_") or not callable(member):
            continue
        impl = getattr(concrete, name, None)
        assert impl is not None, f"{concrete.__name__} lacks {name}"
        want = [(p.name, p.kind) for p in inspect.signature(member).parameters.values()]
        have = [(p.name, p.kind) for p in inspect.signature(impl).parameters.values()]
        assert have == want, f"{concrete.__name__}.{name}{have} does not match {want}"
        assert inspect.iscoroutinefunction(impl) == inspect.iscoroutinefunction(member), name
