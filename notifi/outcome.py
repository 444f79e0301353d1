"""What one delivery attempt means: a pure decision from the job, the send result, the retry
policy and the time, to the delivery's new status, its next attempt and the event to publish.
The delivery worker does the I/O around it; this module does none."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from notifi import events
from notifi.destinations.base import Outcome, SendResult, bounded
from notifi.model import DeliveryJob, DeliveryStatus
from notifi.retry import RetryPolicy

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


def decide(
    job: DeliveryJob,
    result: SendResult,
    policy: RetryPolicy,
    now: datetime,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """Delivered, retried on the policy's schedule, or failed (permanent or exhausted)."""
    if result.outcome is Outcome.DELIVERED:
        return Decision(DeliveryStatus.DELIVERED, event=events.SUCCEEDED)
    if result.outcome is Outcome.RETRY:
        delay_s = policy.delay_after(job.attempt, result.retry_after_s, rand)
        if delay_s is not None:
            return Decision(DeliveryStatus.DELIVERING, now + timedelta(seconds=delay_s))
        return Decision(
            DeliveryStatus.FAILED, event=events.EXHAUSTED, failure=FailureReason.EXHAUSTED
        )
    return Decision(DeliveryStatus.FAILED, event=events.FAILED, failure=FailureReason.PERMANENT)


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
