"""In-memory fakes of what the delivery actors need (the job store, the claims, senders) and a
harness that runs a recorder and a worker under a real supervisor on them, with the memory
bus. For unit tests: no Postgres, Redis or broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson

from actors.delivery import DeliveryWorker, Record, Work
from actors.recorder import Recorder
from notifi.bus import MemoryBus
from notifi.claims import Claim
from notifi.destinations.base import Outcome, Sender, SendResult
from notifi.hosts import HostGate
from notifi.model import DeliveryJob, DestinationState, Notification, NotificationState
from notifi.retry import RetryPolicy
from notifi.runtime import ChildSpec, Mailbox, Supervisor
from notifi.store import Finished

Key = tuple[UUID, int]
EVENTS = "t.events"


def job_row(
    notification_id: UUID | None = None,
    *,
    position: int = 0,
    kind: str = "webhook",
    destination: Mapping[str, Any] | None = None,
    status: str = "pending",
    deleted_at: datetime | None = None,
    title: str = "Deploy",
    body: str = "api is live",
    data: Mapping[str, Any] | None = None,
    scheduled_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """A row as `Store.load_jobs` returns it."""
    now = datetime.now(UTC)
    return {
        "notification_id": notification_id or uuid4(),
        "position": position,
        "client_id": "client-a",
        "title": title,
        "body": body,
        "data": dict(data or {"service": "api"}),
        "scheduled_at": scheduled_at,
        "created_at": now,
        "deleted_at": deleted_at,
        "expires_at": expires_at,
        "kind": kind,
        "destination": dict(destination or {"type": kind, "url": "https://hooks.example/x"}),
        "status": status,
        "attempts": 0,
    }


def stored_row(
    *,
    enabled: bool = True,
    gone: bool = False,
    failing_since: datetime | None = None,
    rate_limit: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """A row as `Store.load_jobs` returns it for a delivery to a stored destination."""
    row = job_row(**kwargs)
    row.update(
        destination_id=uuid4(),
        destination_gone=gone,
        destination_enabled=None if gone else enabled,
        failing_since=failing_since,
        rate_limit=rate_limit,
    )
    return row


class FakeMarks:
    """Redis's change marks as a worker sees them (notifi.marks): `vouch` is the answer; the
    calls are recorded as (loaded_at, notification id, destination id)."""

    def __init__(self, vouch: bool) -> None:
        self.vouch = vouch
        self.calls: list[tuple[datetime, UUID, UUID | None]] = []
        self.marked: list[UUID] = []  # destinations marked changed (an automatic disable)

    @asynccontextmanager
    async def changing(
        self, *, notifications: Iterable[UUID] = (), destinations: Iterable[UUID] = ()
    ) -> AsyncIterator[None]:
        self.marked += [*notifications, *destinations]
        yield

    async def unchanged(
        self, loaded_at: datetime, notification_id: UUID, destination_id: UUID | None
    ) -> bool:
        self.calls.append((loaded_at, notification_id, destination_id))
        return self.vouch


class FakeLimits:
    """The shared rate limits: answers each admit with the next of `waits` (the last
    repeats; None: go now) and records what it was asked."""

    def __init__(self, *waits: float | None) -> None:
        self.waits, self.asked = list(waits) or [None], []

    async def admit(
        self, destination_id: UUID, rate_per_s: float, key: Key, attempt: int
    ) -> float | None:
        self.asked.append((destination_id, rate_per_s, key, attempt))
        return self.waits[min(len(self.asked), len(self.waits)) - 1]


class FakeJobStore:
    """The store as the delivery actors see it: loaded rows, deletions, schedules moved since
    the load (`scheduled`), recorded outcomes. `down_for` makes the next calls raise `OSError`
    (Postgres away) that many times."""

    def __init__(self) -> None:
        self.rows: dict[Key, dict[str, Any]] = {}
        self.deleted: set[UUID] = set()
        self.scheduled: dict[UUID, datetime | None] = {}
        self.finished: list[Finished] = []
        self.requeued: list[DeliveryJob] = []
        self.down_for = 0
        self.calls: list[str] = []
        self.disabled: set[UUID] = set()  # stored destinations the recorder disabled
        # Stored destinations changed since their jobs were loaded: enabled now (None: deleted).
        self.destinations_now: dict[UUID, bool | None] = {}
        self.destinations_updated: dict[UUID, datetime] = {}  # their fields changed at

    def add(self, row: dict[str, Any]) -> Key:
        key = (row["notification_id"], row["position"])
        self.rows[key] = row
        return key

    def _maybe_down(self, call: str) -> None:
        self.calls.append(call)
        if self.down_for > 0:
            self.down_for -= 1
            raise ConnectionRefusedError("postgres is down")

    async def load_jobs(self, keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
        self._maybe_down("load_jobs")
        return {k: self.rows[k] for k in keys if k in self.rows}

    async def state_of(self, notification_id: UUID) -> NotificationState:
        self._maybe_down("state_of")
        if notification_id in self.scheduled:
            scheduled_at = self.scheduled[notification_id]
        else:
            rows = [r for (n, _), r in self.rows.items() if n == notification_id]
            scheduled_at = rows[0]["scheduled_at"] if rows else None
        return NotificationState(notification_id in self.deleted, scheduled_at)

    async def destination_state_of(self, destination_id: UUID) -> DestinationState:
        self._maybe_down("destination_state_of")
        if destination_id in self.destinations_now:
            enabled = self.destinations_now[destination_id]
            return DestinationState(gone=enabled is None, enabled=bool(enabled))
        rows = [r for r in self.rows.values() if r.get("destination_id") == destination_id]
        if not rows or rows[0]["destination_gone"]:
            return DestinationState(gone=True)
        updated_at = self.destinations_updated.get(
            destination_id, rows[0].get("destination_updated_at")
        )
        return DestinationState(False, bool(rows[0]["destination_enabled"]), updated_at)

    async def record(
        self, finished: Sequence[Finished], requeued: Sequence[DeliveryJob]
    ) -> list[dict[str, Any]]:
        self._maybe_down("record")
        self.finished.extend(finished)
        self.requeued.extend(requeued)
        disabled = []
        for f in finished:
            if f.disable_reason and f.destination_id not in self.disabled:
                self.disabled.add(f.destination_id)
                disabled.append(
                    {
                        "id": f.destination_id,
                        "client_id": "client-a",
                        "name": None,
                        "kind": "webhook",
                        "disabled_reason": f.disable_reason,
                        "disabled_at": datetime.now(UTC),
                    }
                )
        return disabled

    def finished_for(self, key: Key) -> Finished | None:
        return next((f for f in self.finished if f.job.key == key), None)


class FakeClaims:
    """Claims with Redis's semantics: a lease per key held by a token, delivered marks.
    `crash_claims` makes the next claims raise `RuntimeError` (a bug, not an outage)."""

    def __init__(self) -> None:
        self.holders: dict[Key, str] = {}
        self.delivered: set[Key] = set()
        self.released: list[tuple[Key, str]] = []
        self.crash_claims = 0

    async def claim(self, item: tuple[Key, str]) -> Claim:
        key, token = item
        if self.crash_claims > 0:
            self.crash_claims -= 1
            raise RuntimeError("claims bug")
        if key in self.delivered:
            return Claim.DELIVERED
        if self.holders.setdefault(key, token) != token:
            return Claim.BUSY
        return Claim.CLAIMED

    async def mark_delivered(self, key: Key) -> bool:
        self.delivered.add(key)
        self.holders.pop(key, None)
        return True

    async def release(self, items: Sequence[tuple[Key, str]]) -> None:
        for key, token in items:
            self.released.append((key, token))
            if self.holders.get(key) == token:
                del self.holders[key]


@dataclass
class Sent:
    destination: Mapping[str, Any]
    notification: Notification
    at: datetime


@dataclass
class ScriptedSender:
    """Answers each send with the next result of `script` (the last repeats); a result that is
    an exception is raised. Records what it was given and when."""

    script: list[SendResult | BaseException] = field(
        default_factory=lambda: [SendResult(Outcome.DELIVERED, 200, duration_ms=1.0)]
    )
    sent: list[Sent] = field(default_factory=list)

    async def send(self, destination: Mapping[str, Any], notification: Notification) -> SendResult:
        self.sent.append(Sent(destination, notification, datetime.now(UTC)))
        answer = self.script[min(len(self.sent), len(self.script)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def gate(**overrides: Any) -> HostGate:
    kwargs = dict(max_in_flight=8, failure_threshold=5, cooldown_s=30, max_cooldown_s=60)
    kwargs.update(overrides)
    return HostGate(**kwargs)


class DeliveryHarness:
    """A recorder and one worker (real actors, real supervisor) on the fakes and a memory bus.
    Use as `async with DeliveryHarness(...) as h:`; `h.submit(row)` hands in a job."""

    def __init__(
        self,
        senders: Mapping[str, Sender] | None = None,
        *,
        store: FakeJobStore | None = None,
        claims: FakeClaims | None = None,
        policy: RetryPolicy | None = None,
        host_gate: HostGate | None = None,
        claim_ttl_s: float = 30.0,
        max_restarts: int = 5,
        limits: Any = None,
        disable_after_s: float = 0.0,
        marks: Any = None,
    ) -> None:
        self.sender = ScriptedSender()
        self.senders = senders if senders is not None else {"webhook": self.sender}
        self.store = store or FakeJobStore()
        self.claims = claims or FakeClaims()
        self.bus = MemoryBus()
        self.work: Mailbox[Work] = Mailbox("work", 100)
        self.records: Mailbox[Record] = Mailbox("records", 100)
        self.crashes: list[str] = []
        self.gate = host_gate or gate()
        self.supervisor = Supervisor(
            [
                ChildSpec(
                    "recorder",
                    lambda: Recorder(
                        "recorder",
                        self.records,
                        store=self.store,
                        claims=self.claims,
                        batch=10,
                        linger_s=0.002,
                        bus=self.bus,
                        events_topic=EVENTS,
                    ),
                    shutdown_timeout_s=1,
                ),
                ChildSpec(
                    "worker",
                    lambda: DeliveryWorker(
                        "worker",
                        self.work,
                        self.records,
                        store=self.store,
                        claims=self.claims,
                        senders=self.senders,
                        policy=policy or RetryPolicy.of([1, 5], 0),
                        claim_ttl_s=claim_ttl_s,
                        gate=self.gate,
                        limits=limits,
                        disable_after_s=disable_after_s,
                        marks=marks,
                    ),
                    shutdown_timeout_s=1,
                ),
            ],
            max_restarts=max_restarts,
            period_s=10,
            backoff_initial_s=0.001,
            on_crash=lambda child, exc: self.crashes.append(child),
        )
        self._running: asyncio.Task | None = None
        self._events = self.bus.consumer(EVENTS, "test")

    async def __aenter__(self) -> DeliveryHarness:
        await self._events.start()
        self._running = asyncio.create_task(self.supervisor.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> bool:
        """Stops the tree; whether it ended cleanly (the supervisor did not give up)."""
        assert self._running is not None
        self.supervisor.stop()
        return (await self._running).ok

    async def submit(
        self,
        row: dict[str, Any],
        *,
        due_in_s: float = 0.0,
        attempt: int = 1,
        token: str = "token-1",
    ) -> asyncio.Event:
        """Hands the job of `row` to the worker, as loaded now; returns its ack event."""
        self.store.add(row)
        now = datetime.now(UTC)
        job = DeliveryJob(row["notification_id"], row["position"], attempt, now)
        job = job.later(now + timedelta(seconds=due_in_s))
        acked = asyncio.Event()
        await self.work.put(Work(job, row, token, acked.set, now))
        return acked

    async def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in await self._events.fetch(100, timeout_s=0.05)]


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 5.0
) -> None:
    """Polls `predicate` until it holds (generous: these run on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)
