"""What one delivery attempt means: a pure decision from the job, the send result, the retry
policy, the notification's expiry and the time, to the delivery's new status, its next attempt
and the event to publish; and the worker's other small decisions about a job (expired, moved by
a reschedule, deferred no later than the expiry), and for a stored destination whether a job
goes at all (disabled: paused; deleted: cancelled) and when an attempt disables it. The
delivery worker does the I/O around them; this module does none."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from notifi import events
from notifi.destinations.base import Outcome, SendResult, bounded
from notifi.model import DeliveryJob, DeliveryStatus
from notifi.retry import RetryPolicy

# A job due this much before its notification's current schedule was made for an older one (a
# PATCH moved it later). Not zero: a time that went through a message must not read as moved.
MOVED_TOLERANCE = timedelta(milliseconds=1)

# A job whose handling crashed its worker this many times is set aside (quarantined), not
# handed to a fresh worker again: it would crash that one too.
QUARANTINE_AFTER_CRASHES = 3


class FailureReason(StrEnum):
    """Why a delivery ended failed (the `reason` label of the failed-deliveries metric)."""

    PERMANENT = "permanent"  # the destination (or the content) can never take it
    EXHAUSTED = "exhausted"  # the retry schedule ran out
    QUARANTINED = "quarantined"  # its handling kept crashing the worker


@dataclass(frozen=True, slots=True)
class Decision:
    """The end of one attempt: the delivery's new status, when it is tried next (retry only),
    the operational event to publish (None: none), and why it failed (None: it did not)."""

    status: DeliveryStatus
    next_attempt_at: datetime | None = None
    event: str | None = None
    failure: FailureReason | None = None

    @property
    def retry(self) -> bool:
        return self.next_attempt_at is not None


# Ended at its notification's expiry, attempted or not (not a failure of the destination).
EXPIRED = Decision(DeliveryStatus.EXPIRED, event=events.EXPIRED)
# Waits for its stored destination to be enabled again (which re-drives it): not a failure,
# no delivery event (the destination's own `destination.disabled` says why).
PAUSED = Decision(DeliveryStatus.PAUSED)


def decide(
    job: DeliveryJob,
    result: SendResult,
    policy: RetryPolicy,
    now: datetime,
    rand: Callable[[], float] = random.random,
    expires_at: datetime | None = None,
) -> Decision:
    """Delivered, retried on the policy's schedule, expired (the next attempt would start at
    or after `expires_at`), or failed (permanent or exhausted)."""
    if result.outcome is Outcome.DELIVERED:
        return Decision(DeliveryStatus.DELIVERED, event=events.SUCCEEDED)
    if result.outcome is Outcome.RETRY:
        delay_s = policy.delay_after(job.attempt, result.retry_after_s, rand)
        if delay_s is not None:
            next_attempt_at = now + timedelta(seconds=delay_s)
            if is_expired(expires_at, next_attempt_at):
                return EXPIRED
            return Decision(DeliveryStatus.DELIVERING, next_attempt_at)
        return Decision(
            DeliveryStatus.FAILED, event=events.EXHAUSTED, failure=FailureReason.EXHAUSTED
        )
    return Decision(DeliveryStatus.FAILED, event=events.FAILED, failure=FailureReason.PERMANENT)


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    """Whether an attempt starting at `now` would start too late: at or after the expiry."""
    return expires_at is not None and now >= expires_at


def not_after(due_at: datetime, expires_at: datetime | None) -> datetime:
    """When a deferred job is due again: no later than the expiry, so that whoever takes it
    then ends it expired instead of leaving an open delivery nobody looks at in time."""
    return due_at if expires_at is None or due_at < expires_at else expires_at


def moved_later(job: DeliveryJob, scheduled_at: datetime | None) -> datetime | None:
    """The notification's current schedule when it is later than the job's due time (the job
    was published for a time a PATCH moved away from); None when the job is still good."""
    if scheduled_at is not None and scheduled_at > job.due_at + MOVED_TOLERANCE:
        return scheduled_at
    return None


QUARANTINED = Decision(
    DeliveryStatus.FAILED, event=events.FAILED, failure=FailureReason.QUARANTINED
)


def should_quarantine(crashes: int) -> bool:
    return crashes >= QUARANTINE_AFTER_CRASHES


def quarantine_error(crashes: int) -> str:
    return f"quarantined: handling this job crashed the delivery worker {crashes} times"


def crash_result(exc: Exception, duration_ms: float = 0.0) -> SendResult:
    """A send that raised: a permanent failure naming the error's type (its text may quote
    content or headers, so it goes to the log, not to the attempt record)."""
    error = bounded(f"internal error while rendering or sending: {type(exc).__name__}")
    return SendResult(Outcome.PERMANENT, error=error, duration_ms=duration_ms)


# -- stored destinations ----------------------------------------------------------------


class Gate(StrEnum):
    """What becomes of a loaded job before anything else, from its stored destination."""

    SEND = "send"  # an inline or named destination, or a stored one that is enabled
    PAUSE = "pause"  # its stored destination is disabled: the delivery waits (paused)
    CANCEL = "cancel"  # its stored destination was deleted: nothing to send it to
    RELOAD = "reload"  # its stored destination changed since the load: load the job again


def gate(row: Mapping[str, Any]) -> Gate:
    """Whether a job loaded as `row` (Store.load_jobs) may go on to be sent."""
    if row.get("destination_id") is None:
        return Gate.SEND
    if row.get("destination_gone"):
        return Gate.CANCEL
    if not row.get("destination_enabled"):
        return Gate.PAUSE
    return Gate.RELOAD if row.get("destination_changed") else Gate.SEND


class DisableKind(StrEnum):
    """Why a stored destination was disabled automatically (the metric's `reason` label)."""

    GONE = "gone"  # it answered 410 Gone
    FAILING = "failing"  # no success for `delivery.disable_after` seconds


@dataclass(frozen=True, slots=True)
class Disable:
    kind: DisableKind
    reason: str  # shown on the destination resource and in its event


GONE_REASON = "the endpoint answered 410 Gone"


def auto_disable(
    result: SendResult,
    failing_since: datetime | None,
    now: datetime,
    disable_after_s: float,
) -> Disable | None:
    """Whether an attempt at a stored destination disables it: a 410 Gone at once (the
    receiver says the endpoint is no more), or any failure once it has been failing without a
    success since longer than `disable_after_s` (0: never by time). `failing_since` is as
    loaded with the job: the first failure sets it, so the first one never disables."""
    if result.status_code == 410 and result.outcome is not Outcome.DELIVERED:
        return Disable(DisableKind.GONE, GONE_REASON)
    if result.outcome is Outcome.DELIVERED or failing_since is None or disable_after_s <= 0:
        return None
    if now - failing_since >= timedelta(seconds=disable_after_s):
        return Disable(
            DisableKind.FAILING,
            f"failing without a success since {failing_since.isoformat(timespec='seconds')}",
        )
    return None


def when_disabled(decision: Decision, disable: Disable) -> Decision:
    """The attempt's decision once it disables its destination: what would be tried again, and
    the 410 itself, waits paused (enabling the destination re-drives it); what ended (failed
    for good, expired) stays ended."""
    ends_here = decision.status is DeliveryStatus.EXPIRED
    if (decision.retry or disable.kind is DisableKind.GONE) and not ends_here:
        return PAUSED
    return decision


def failing_change(failing_since: datetime | None, result: SendResult) -> bool | None:
    """What an attempt changes of a stored destination's failing streak, as loaded: a failure
    starts one (True), a success ends one (False), anything else writes nothing (None)."""
    if result.outcome is Outcome.DELIVERED:
        return False if failing_since is not None else None
    return True if failing_since is None else None
