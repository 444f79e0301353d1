"""The delivery role's workers: wait until a job is due (never early), re-check it, claim,
send, and hand the outcome to the recorder (actors/recorder.py). The jobs come from the
delivery consumer (actors/delivery_consumer.py)."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar
from uuid import UUID

import structlog

from notifi import metrics, outcome
from notifi.claims import Claim
from notifi.destination_limits import DestinationLimits
from notifi.destinations.base import Outcome, Sender, SendResult
from notifi.destinations.http_client import target
from notifi.hosts import BUSY_PATIENCE_S, HostGate
from notifi.marks import ChangeMarks
from notifi.model import (
    DeliveryJob,
    DeliveryStatus,
    DestinationState,
    Notification,
    NotificationState,
)
from notifi.outage import POSTGRES_AWAY
from notifi.retry import RetryPolicy
from notifi.runtime import Actor, Letter, Mailbox
from notifi.store import Finished

log = structlog.get_logger(__name__)

Key = tuple[UUID, int]
T = TypeVar("T")
# A job that sat this long between its load and its turn (a backlog in the workers' mailbox) is
# re-checked like one loaded before it was due: a delete or a reschedule may have come since.
RECHECK_AFTER_S = 0.25
# Postgres (or the network) briefly away: wait and try again, never fail or drop the job.


class StateCheck(Protocol):
    """What a worker needs of the store: a notification's state now, deleted and schedule, and
    a stored destination's, gone or enabled (each batched across workers)."""

    def state_of(self, notification_id: UUID, /) -> Awaitable[NotificationState]: ...

    def destination_state_of(self, destination_id: UUID, /) -> Awaitable[DestinationState]: ...


class JobClaims(Protocol):
    """What a worker needs of the claims: claim a job, remember it delivered (each an
    awaitable: `notifi.claims` answers with a coalesced batch's future)."""

    def claim(self, item: tuple[Key, str], /) -> Awaitable[Claim]: ...

    def mark_delivered(self, key: Key, /) -> Awaitable[bool]: ...


@dataclass(slots=True)
class Work:
    job: DeliveryJob
    row: Mapping[str, Any]  # the notification and destination (load_jobs)
    token: str  # names this published job in this process (the claim's owner)
    ack: Callable[[], None]  # marks the job's offset committable
    loaded_at: datetime


@dataclass(slots=True)
class Record:
    """What the recorder writes for one job: an outcome, or the job sent back to the outbox;
    `event` is the operational event to publish once it is written (None: none)."""

    work: Work
    finished: Finished | None = None
    requeue: DeliveryJob | None = None
    event: str | None = None
    disable: outcome.Disable | None = None  # this attempt disabled its stored destination


def destination_host(row: Mapping[str, Any]) -> str:
    """The server a delivery talks to, for the per-host bound and breaker: host and port, since
    one host often runs unrelated services on different ports (a dead one must not pause the
    others)."""
    destination = row["destination"]
    if "url" in destination:
        try:
            sent_to = target(str(destination["url"]))  # the client's reading, remembered
        except ValueError:  # a malformed URL: the sender ends the job, the gate has no host
            return ""
        return f"{sent_to.host}:{sent_to.port}"
    return str(row["kind"])  # channels without a URL share one server (e.g. the SMTP relay)


def _raised_at(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""


class DeliveryWorker(Actor):
    """Waits until a job is due (never early, never past the notification's expiry), re-checks
    deletion and the schedule (a job published for a time a PATCH moved later goes back to the
    outbox for the new time), ends it `expired` when the expiry came first, claims, checks the
    expiry once more, sends, and hands the outcome to the recorder. Rendering and sending one
    job cannot crash it: an exception there ends that job as a permanent failure; a job that
    crashed workers anyway (elsewhere) `outcome.QUARANTINE_AFTER_CRASHES` times is set aside as
    failed instead of tried again."""

    def __init__(
        self,
        name: str,
        inbox: Mailbox[Work],
        recorder: Mailbox[Record],
        *,
        store: StateCheck,
        claims: JobClaims,
        senders: Mapping[str, Sender],
        policy: RetryPolicy,
        claim_ttl_s: float,
        gate: HostGate,
        limits: DestinationLimits | None = None,
        disable_after_s: float = 0.0,
        marks: ChangeMarks | None = None,
    ) -> None:
        super().__init__(name, inbox)
        self._recorder, self._store, self._claims = recorder, store, claims
        self._senders, self._policy, self._claim_ttl_s = senders, policy, claim_ttl_s
        self._gate = gate
        # Stored destinations: the shared rate limits (None: not enforced, in tests) and how
        # long one may fail without a success before it is disabled (0: never by time).
        self._limits, self._disable_after_s = limits, disable_after_s
        # What vouches for a job loaded early while Postgres is away (None: nothing does).
        self._marks = marks

    async def run(self) -> None:
        # The worker's task has a context of its own: its name is bound once, a job's ids for
        # that job (bound_contextvars per job read the whole context each time).
        structlog.contextvars.bind_contextvars(actor=self.name)
        while True:  # until stopped with an empty mailbox
            letter: Letter[Work]
            async with self.receive_letter() as letter:
                work = letter.item
                bound = structlog.contextvars.bind_contextvars(
                    notification_id=str(work.job.notification_id),
                    client_id=work.row["client_id"],
                )
                try:
                    if outcome.should_quarantine(letter.redeliveries):
                        await self._quarantine(work, letter.redeliveries)
                    else:
                        await self._handle(work)
                finally:
                    structlog.contextvars.reset_contextvars(**bound)

    async def _quarantine(self, work: Work, crashes: int) -> None:
        job, kind = work.job, str(work.row["kind"])
        error = outcome.quarantine_error(crashes)
        log.error("delivery_quarantined", position=job.position, channel=kind, crashes=crashes)
        metrics.deliveries_quarantined.inc({"channel": kind})
        await self._finish(
            work,
            outcome.QUARANTINED,
            SendResult(Outcome.PERMANENT, error=error),
            datetime.now(UTC),
        )

    async def _until_stored(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """`call()`, waiting out a Postgres outage instead of crashing (a crash would count
        against the job); None when a stop comes first."""
        delay_s = 0.1
        while True:
            try:
                return await call()
            except POSTGRES_AWAY as exc:
                log.warning("store_unavailable_waiting", error=str(exc))
                if await self.sleep(delay_s):
                    return None
                delay_s = min(delay_s * 2, 2.0)

    async def _handle(self, work: Work) -> None:
        job, expires_at = work.job, work.row.get("expires_at")
        if await self._stopped_at(outcome.gate(work.row), work):
            return
        if (moved := outcome.moved_later(job, work.row["scheduled_at"])) is not None:
            await self._move(work, moved)  # moved before the job was loaded
            return
        # Woken at the due time, or at the expiry when that comes first (then it ends below).
        if await self._sleep_until(outcome.not_after(job.due_at, expires_at)):
            return  # stopping: the job stays uncommitted and comes back after the restart
        # Loaded before it was due (or long before its turn): a delete, a reschedule or a change
        # of its stored destination may have come since (checked at load otherwise).
        waited_s = (datetime.now(UTC) - work.loaded_at).total_seconds()
        recheck = job.due_at > work.loaded_at or waited_s > RECHECK_AFTER_S
        if recheck and await self._recheck(work) is not False:
            return  # ended, moved, or (None) stopping: uncommitted, comes back
        if outcome.is_expired(expires_at, datetime.now(UTC)):
            await self._expire(work)
            return
        if (wait_s := await self._rate_wait(work)) is not None:  # over the destination's budget
            metrics.deferred.inc({"reason": "rate_limit"})
            await self._requeue(work, datetime.now(UTC) + timedelta(seconds=wait_s))
            return
        host = destination_host(work.row)
        wait_s = await self._gate.acquire(host, BUSY_PATIENCE_S)
        if wait_s is not None:  # the host is paused or at its bound: wait in the outbox
            metrics.deferred.inc({"reason": str(self._gate.state(host))})
            later = datetime.now(UTC) + timedelta(seconds=wait_s)
            await self._requeue(work, later)
            return
        host_failed: bool | None = None
        try:
            host_failed = await self._claim_and_send(work)
        finally:
            self._gate.release(host, host_failed=host_failed)

    async def _stopped_at(self, gate: outcome.Gate, work: Work) -> bool:
        """Ends a job its stored destination stops (deleted: cancelled, disabled: paused);
        whether it did."""
        match gate:
            case outcome.Gate.CANCEL:
                await self._cancel(work)
            case outcome.Gate.PAUSE:
                await self._pause(work)
            case outcome.Gate.RELOAD:
                log.info("delivery_job_reloaded", position=work.job.position)
                await self._requeue(work, datetime.now(UTC))
            case _:
                return False
        return True

    async def _recheck(self, work: Work) -> bool | None:
        """Reads again what may have changed since the load (deleted, moved later, the stored
        destination disabled, deleted or changed) and acts on it: whether the job ended or went
        back to the outbox (None: a stop came first). While Postgres is away, Redis's change
        marks may vouch that nothing changed (notifi.marks); otherwise this waits for it."""
        job = work.job
        try:
            state = await self._store.state_of(job.notification_id)
            gate = await self._gate_now(work)
        except POSTGRES_AWAY as exc:
            if self._marks is not None and await self._marks.unchanged(
                work.loaded_at, job.notification_id, work.row.get("destination_id")
            ):
                metrics.rechecks_vouched.inc({})
                return False
            log.warning("store_unavailable_waiting", error=str(exc), vouched=False)
            state = await self._until_stored(lambda: self._store.state_of(job.notification_id))
            gate = await self._until_stored(lambda: self._gate_now(work))
            if state is None or gate is None:
                return None
        if state.deleted:
            work.ack()
            return True
        if (moved := outcome.moved_later(job, state.scheduled_at)) is not None:
            await self._move(work, moved)
            return True
        return await self._stopped_at(gate, work)

    async def _gate_now(self, work: Work) -> outcome.Gate:
        """The gate again, on the stored destination as it is now: it may have been disabled,
        deleted or changed since the job was loaded."""
        destination_id = work.row.get("destination_id")
        if destination_id is None:
            return outcome.Gate.SEND
        state = await self._store.destination_state_of(destination_id)
        return outcome.gate(
            {
                **work.row,
                "destination_gone": state.gone,
                "destination_enabled": state.enabled,
                "destination_changed": state.updated_at != work.row.get("destination_updated_at"),
            }
        )

    async def _rate_wait(self, work: Work) -> float | None:
        """Seconds until a job to a rate-limited stored destination may go (its slot reserved
        meanwhile: notifi.destination_limits), or None when it may go now."""
        rate, destination_id = work.row.get("rate_limit"), work.row.get("destination_id")
        if self._limits is None or not rate or destination_id is None:
            return None
        job = work.job
        return await self._limits.admit(destination_id, float(rate), job.key, job.attempt)

    async def _cancel(self, work: Work) -> None:
        """Ends the delivery `cancelled` without an attempt: its stored destination is gone."""
        log.info("delivery_cancelled", position=work.job.position, reason="destination_deleted")
        finished = Finished(work.job, DeliveryStatus.CANCELLED)
        await self._recorder.put(Record(work, finished=finished))

    async def _pause(self, work: Work) -> None:
        """Pauses the delivery without an attempt: its stored destination is disabled. The
        recorder pauses it only if the destination is still disabled under its row lock (else
        the job goes back to the outbox), and enabling the destination resumes it."""
        log.info("delivery_paused", position=work.job.position, stage="load")
        metrics.deliveries_paused.inc({"stage": "load"})
        finished = Finished(
            work.job, DeliveryStatus.PAUSED, destination_id=work.row["destination_id"]
        )
        await self._recorder.put(Record(work, finished=finished))

    async def _sleep_until(self, when: datetime) -> bool:
        """Sleeps until the wall clock reads `when` (again if a timer fired a little early);
        True when a stop came first."""
        while (wait_s := (when - datetime.now(UTC)).total_seconds()) > 0:
            if await self.sleep(wait_s):
                return True
        return False

    async def _requeue(self, work: Work, due_at: datetime) -> None:
        """Back to the outbox, due no later than the expiry (then it ends expired there)."""
        later = work.job.later(outcome.not_after(due_at, work.row.get("expires_at")))
        await self._recorder.put(Record(work, requeue=later))

    async def _move(self, work: Work, due_at: datetime) -> None:
        """Sends a job published for an older schedule back to the outbox for the new one."""
        log.info("delivery_job_moved", position=work.job.position, due_at=due_at.isoformat())
        metrics.jobs_moved.inc({})
        await self._requeue(work, due_at)

    async def _expire(self, work: Work) -> None:
        """Ends the delivery `expired` without an attempt (a claim it holds is released)."""
        log.info("delivery_expired", position=work.job.position, stage="due")
        metrics.deliveries_expired.inc({"stage": "due"})
        finished = Finished(work.job, DeliveryStatus.EXPIRED)
        await self._recorder.put(Record(work, finished=finished, event=outcome.EXPIRED.event))

    async def _claim_and_send(self, work: Work) -> bool | None:
        """Returns whether the host failed (None when nothing was sent)."""
        job = work.job
        claim = await self._until_stored(lambda: self._claims.claim((job.key, work.token)))
        if claim is None:
            return None  # stopping: uncommitted, comes back
        if claim is Claim.DELIVERED:
            metrics.claims_skipped.inc({"reason": "delivered"})
            finished = Finished(job, DeliveryStatus.DELIVERED)  # Postgres catches up
            await self._recorder.put(Record(work, finished=finished))
            return None
        if claim is Claim.BUSY:
            metrics.claims_skipped.inc({"reason": "busy"})
            await self._requeue(work, datetime.now(UTC) + timedelta(seconds=self._claim_ttl_s))
            return None
        started = datetime.now(UTC)
        # The last moment before the send: a claim that waited on Redis or Postgres may have
        # carried the job past its expiry.
        expires_at = work.row.get("expires_at")
        if outcome.is_expired(expires_at, started):
            await self._expire(work)
            return None
        metrics.delivery_lateness.observe({}, max((started - job.due_at).total_seconds(), 0.0))
        result = await self._send(work)
        now = datetime.now(UTC)
        decision = outcome.decide(job, result, self._policy, now, expires_at=expires_at)
        disable = None
        if work.row.get("destination_id") is not None:
            failing_since = work.row.get("failing_since")
            disable = outcome.auto_disable(result, failing_since, now, self._disable_after_s)
            if disable is not None:
                decision = outcome.when_disabled(decision, disable)
        if decision.status is DeliveryStatus.DELIVERED:
            # Durable first (Redis, or Postgres when Redis is away), before anything that can
            # wait: a crash from here on cannot send it again. Shielded: a shutdown's
            # cancellation must not cut the mark short.
            await asyncio.shield(self._claims.mark_delivered(job.key))
        await self._finish(work, decision, result, started, disable)
        return result.outcome is Outcome.RETRY

    async def _send(self, work: Work) -> SendResult:
        """Renders and sends one job: whatever its content does, this returns an outcome."""
        kind = work.row["kind"]
        began = time.perf_counter()
        try:
            notification = Notification.from_row(work.row)
            return await self._senders[kind].send(work.row["destination"], notification)
        except Exception as exc:  # the one job's failure, never the worker's (cancel passes)
            duration_ms = (time.perf_counter() - began) * 1000
            # The type and where it was raised, not the message or a traceback with locals:
            # those may quote the content, a secret or a header value.
            log.error(
                "delivery_send_raised",
                channel=kind,
                error_type=type(exc).__name__,
                raised_at=_raised_at(exc),
            )
            metrics.delivery_errors.inc({"channel": str(kind)})
            return outcome.crash_result(exc, duration_ms)

    async def _finish(
        self,
        work: Work,
        decision: outcome.Decision,
        result: SendResult,
        started: datetime,
        disable: outcome.Disable | None = None,
    ) -> None:
        job, kind = work.job, str(work.row["kind"])
        metrics.delivery_attempts.inc({"channel": kind, "outcome": str(result.outcome)})
        metrics.delivery_latency.observe({"channel": kind}, result.duration_ms / 1000)
        if decision.retry:
            metrics.retries_scheduled.inc({})
        if decision.failure is not None:
            metrics.deliveries_failed.inc({"reason": str(decision.failure)})
        if decision.status is DeliveryStatus.EXPIRED:  # the next attempt would start too late
            metrics.deliveries_expired.inc({"stage": "retry"})
        if decision.status is DeliveryStatus.PAUSED:
            metrics.deliveries_paused.inc({"stage": "attempt"})
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
        finished = Finished(
            job,
            decision.status,
            started_at=started,
            duration_ms=result.duration_ms,
            outcome=str(result.outcome),
            status_code=result.status_code,
            error=result.error,
            next_attempt_at=decision.next_attempt_at,
            **_stored(work.row, result, disable),
        )
        record = Record(work, finished=finished, event=decision.event, disable=disable)
        if disable is None or self._marks is None:
            await self._recorder.put(record)
            return
        # Disabling it: marked first, so a job to it loaded earlier is not vouched for while
        # Postgres is away (a mark that fails is owed from when the record is handed over).
        async with self._marks.changing(destinations=[work.row["destination_id"]]):
            await self._recorder.put(record)


def _stored(
    row: Mapping[str, Any], result: SendResult, disable: outcome.Disable | None
) -> dict[str, Any]:
    """What an attempt writes about its stored destination (nothing for inline ones)."""
    if (destination_id := row.get("destination_id")) is None:
        return {}
    return {
        "destination_id": destination_id,
        "failing": outcome.failing_change(row.get("failing_since"), result),
        "disable_reason": disable.reason if disable is not None else None,
    }
