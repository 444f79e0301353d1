"""The decision after one attempt (notifi.outcome.decide), table by table: delivered, retried
on the schedule (and Retry-After), exhausted, permanent, expired; the quarantine threshold; and
the worker's small decisions about expiry, deferral and moved schedules; and for stored
destinations the gate at load, automatic disabling and the failing streak."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from notifi import events
from notifi.destinations.base import Outcome, SendResult
from notifi.model import OPEN_STATUSES, DeliveryJob, DeliveryStatus
from notifi.outcome import (
    EXPIRED,
    GONE_REASON,
    PAUSED,
    QUARANTINE_AFTER_CRASHES,
    QUARANTINED,
    Decision,
    Disable,
    DisableKind,
    FailureReason,
    Gate,
    auto_disable,
    crash_result,
    decide,
    failing_change,
    gate,
    is_expired,
    moved_later,
    not_after,
    should_quarantine,
    when_disabled,
)
from notifi.retry import RetryPolicy

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
POLICY = RetryPolicy.of([1, 5, 30], jitter=0.2)  # 4 attempts in all


def job(attempt: int) -> DeliveryJob:
    return DeliveryJob(UUID(int=7), 0, attempt, NOW - timedelta(seconds=1))


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def retry_at(seconds: float) -> Decision:
    return Decision(DeliveryStatus.DELIVERING, at(seconds))


DELIVERED = Decision(DeliveryStatus.DELIVERED, None, events.SUCCEEDED)
FAILED_PERMANENT = Decision(DeliveryStatus.FAILED, None, events.FAILED, FailureReason.PERMANENT)
FAILED_EXHAUSTED = Decision(DeliveryStatus.FAILED, None, events.EXHAUSTED, FailureReason.EXHAUSTED)


@pytest.mark.parametrize(
    ("attempt", "result", "rand", "expected"),
    [
        # delivered, whatever the attempt
        (1, SendResult(Outcome.DELIVERED, 200), 0.5, DELIVERED),
        (4, SendResult(Outcome.DELIVERED, 250), 0.5, DELIVERED),
        # retried on the schedule; no event until it ends
        (1, SendResult(Outcome.RETRY, 503), 0.5, retry_at(1)),
        (2, SendResult(Outcome.RETRY, 503), 0.5, retry_at(5)),
        (3, SendResult(Outcome.RETRY, None), 0.5, retry_at(30)),
        # jitter at its extremes: +/- 20 %
        (2, SendResult(Outcome.RETRY, 500), 0.0, retry_at(4)),
        (2, SendResult(Outcome.RETRY, 500), 1.0, retry_at(6)),
        # Retry-After pushes the next attempt out, never in
        (1, SendResult(Outcome.RETRY, 429, retry_after_s=60), 0.5, retry_at(60)),
        (2, SendResult(Outcome.RETRY, 429, retry_after_s=1), 0.5, retry_at(5)),
        # the schedule runs out
        (4, SendResult(Outcome.RETRY, 503), 0.5, FAILED_EXHAUSTED),
        (9, SendResult(Outcome.RETRY, None, retry_after_s=1), 0.5, FAILED_EXHAUSTED),
        # permanent at once, on any attempt
        (1, SendResult(Outcome.PERMANENT, 404), 0.5, FAILED_PERMANENT),
        (3, SendResult(Outcome.PERMANENT, 550), 0.5, FAILED_PERMANENT),
        (1, crash_result(ValueError("boom")), 0.5, FAILED_PERMANENT),
    ],
)  # fmt: skip
def test_decide(attempt: int, result: SendResult, rand: float, expected: Decision) -> None:
    decision = decide(job(attempt), result, POLICY, NOW, rand=lambda: rand)
    assert decision == expected
    assert decision.retry is (expected.next_attempt_at is not None)


def test_a_crash_names_the_error_type_but_not_its_text() -> None:
    result = crash_result(ValueError("Authorization: Bearer sekrit"))
    assert result.outcome is Outcome.PERMANENT
    assert "ValueError" in result.error and "sekrit" not in result.error


@pytest.mark.parametrize(
    ("crashes", "quarantine"),
    [
        (0, False),
        (QUARANTINE_AFTER_CRASHES - 1, False),
        (QUARANTINE_AFTER_CRASHES, True),
        (99, True),
    ],
)
def test_quarantine_after_a_few_crashes(crashes: int, quarantine: bool) -> None:
    assert should_quarantine(crashes) is quarantine


def test_quarantine_fails_the_delivery_with_its_own_reason() -> None:
    assert QUARANTINED.status is DeliveryStatus.FAILED and QUARANTINED.event == events.FAILED
    assert QUARANTINED.failure is FailureReason.QUARANTINED


@pytest.mark.parametrize(
    ("status", "open_"),
    [
        (DeliveryStatus.PENDING, True),
        (DeliveryStatus.SCHEDULED, True),
        (DeliveryStatus.DELIVERING, True),
        (DeliveryStatus.DELIVERED, False),
        (DeliveryStatus.FAILED, False),
        (DeliveryStatus.CANCELLED, False),
        (DeliveryStatus.EXPIRED, False),
    ],
)
def test_open_statuses(status: DeliveryStatus, open_: bool) -> None:
    assert (status in OPEN_STATUSES) is open_


def test_a_job_sent_back_later_keeps_its_attempt() -> None:
    later = job(2).later(at(30))
    assert later == DeliveryJob(UUID(int=7), 0, 2, at(30))


@pytest.mark.parametrize(
    ("attempt", "result", "expires_in_s", "expected"),
    [
        # no expiry: as ever
        (1, SendResult(Outcome.RETRY, 503), None, retry_at(1)),
        # the next attempt would start before the expiry: retried
        (1, SendResult(Outcome.RETRY, 503), 1.001, retry_at(1)),
        (2, SendResult(Outcome.RETRY, 503), 60, retry_at(5)),
        # at or after it: the delivery ends expired instead of being scheduled
        (1, SendResult(Outcome.RETRY, 503), 1, EXPIRED),
        (2, SendResult(Outcome.RETRY, 503), 4.9, EXPIRED),
        (1, SendResult(Outcome.RETRY, 429, retry_after_s=60), 30, EXPIRED),
        # already past: expired too (the attempt itself began before it)
        (1, SendResult(Outcome.RETRY, 503), -1, EXPIRED),
        # delivered, permanent and exhausted are what they are, expiry or not
        (1, SendResult(Outcome.DELIVERED, 200), -1, DELIVERED),
        (1, SendResult(Outcome.PERMANENT, 404), 0.5, FAILED_PERMANENT),
        (4, SendResult(Outcome.RETRY, 503), 0.5, FAILED_EXHAUSTED),
    ],
)  # fmt: skip
def test_decide_with_an_expiry(
    attempt: int, result: SendResult, expires_in_s: float | None, expected: Decision
) -> None:
    expires_at = None if expires_in_s is None else at(expires_in_s)
    decision = decide(job(attempt), result, POLICY, NOW, rand=lambda: 0.5, expires_at=expires_at)
    assert decision == expected


def test_expired_is_its_own_status_without_an_attempt_or_failure() -> None:
    assert EXPIRED.status is DeliveryStatus.EXPIRED
    assert EXPIRED.next_attempt_at is None and EXPIRED.failure is None and not EXPIRED.retry


@pytest.mark.parametrize(
    ("expires_in_s", "expired"),
    [(None, False), (0.001, False), (0, True), (-5, True)],
)
def test_is_expired_at_and_after_the_expiry(expires_in_s: float | None, expired: bool) -> None:
    expires_at = None if expires_in_s is None else at(expires_in_s)
    assert is_expired(expires_at, NOW) is expired


@pytest.mark.parametrize(
    ("due_in_s", "expires_in_s", "expected_in_s"),
    [(30, None, 30), (30, 60, 30), (30, 10, 10), (30, 30, 30)],
)
def test_a_deferral_is_due_no_later_than_the_expiry(
    due_in_s: float, expires_in_s: float | None, expected_in_s: float
) -> None:
    expires_at = None if expires_in_s is None else at(expires_in_s)
    assert not_after(at(due_in_s), expires_at) == at(expected_in_s)


@pytest.mark.parametrize(
    ("scheduled_in_s", "expected_in_s"),
    [
        (None, None),  # moved to now (or never scheduled)
        (-60, None),  # earlier: the job is late, not early
        (-1, None),  # exactly its own time
        (-1 + 0.0005, None),  # within the tolerance of a time that went through a message
        (0, 0),  # later than the job's due time: moved
        (3600, 3600),
    ],
)
def test_a_job_published_for_an_older_schedule_is_moved(
    scheduled_in_s: float | None, expected_in_s: float | None
) -> None:
    scheduled_at = None if scheduled_in_s is None else at(scheduled_in_s)
    expected = None if expected_in_s is None else at(expected_in_s)
    assert moved_later(job(1), scheduled_at) == expected  # job(1) is due at NOW - 1 s


# -- stored destinations: gate, auto-disable, the failing streak --------------------------

DAY_S = 86400.0
STORED = {"destination_id": UUID(int=9), "destination_gone": False}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"destination": {"type": "webhook"}}, Gate.SEND),  # inline or named
        ({"destination_id": None}, Gate.SEND),
        ({**STORED, "destination_enabled": True}, Gate.SEND),
        ({**STORED, "destination_enabled": False}, Gate.PAUSE),
        ({**STORED, "destination_gone": True, "destination_enabled": None}, Gate.CANCEL),
    ],
)  # fmt: skip
def test_gate(row: dict, expected: Gate) -> None:
    assert gate(row) == expected


GONE = Disable(DisableKind.GONE, GONE_REASON)


def failing_since(days: float) -> Disable:
    return Disable(
        DisableKind.FAILING, f"failing without a success since {at(-days * DAY_S).isoformat()}"
    )


@pytest.mark.parametrize(
    ("result", "failing_days", "disable_after_s", "expected"),
    [
        # a 410 disables at once, streak or not
        (SendResult(Outcome.PERMANENT, 410), None, 5 * DAY_S, GONE),
        (SendResult(Outcome.PERMANENT, 410), 1, 0, GONE),
        # other permanent failures and retries: only past disable_after
        (SendResult(Outcome.PERMANENT, 404), None, 5 * DAY_S, None),
        (SendResult(Outcome.RETRY, 503), None, 5 * DAY_S, None),  # the first failure
        (SendResult(Outcome.RETRY, 503), 4.9, 5 * DAY_S, None),
        (SendResult(Outcome.RETRY, 503), 5, 5 * DAY_S, failing_since(5)),
        (SendResult(Outcome.PERMANENT, 400), 6, 5 * DAY_S, failing_since(6)),
        (SendResult(Outcome.RETRY, None), 30, 0, None),  # 0: never by time
        # a success never disables
        (SendResult(Outcome.DELIVERED, 200), 30, 5 * DAY_S, None),
    ],
)  # fmt: skip
def test_auto_disable(
    result: SendResult, failing_days: float | None, disable_after_s: float, expected: Disable | None
) -> None:
    since = None if failing_days is None else at(-failing_days * DAY_S)
    assert auto_disable(result, since, NOW, disable_after_s) == expected


@pytest.mark.parametrize(
    ("decision", "disable", "expected"),
    [
        (retry_at(5), failing_since(6), PAUSED),  # would be retried: waits for the enable
        (FAILED_EXHAUSTED, failing_since(6), FAILED_EXHAUSTED),  # ended: stays failed
        (FAILED_PERMANENT, failing_since(6), FAILED_PERMANENT),
        (FAILED_PERMANENT, GONE, PAUSED),  # the 410 itself is re-driven by the enable
        (EXPIRED, GONE, EXPIRED),
        (EXPIRED, failing_since(6), EXPIRED),
    ],
)  # fmt: skip
def test_a_disabling_attempt_pauses_what_would_go_on(
    decision: Decision, disable: Disable, expected: Decision
) -> None:
    assert when_disabled(decision, disable) == expected


def test_paused_is_neither_a_retry_nor_a_failure() -> None:
    assert PAUSED.status is DeliveryStatus.PAUSED and PAUSED.status not in OPEN_STATUSES
    assert not PAUSED.retry and PAUSED.failure is None and PAUSED.event is None


@pytest.mark.parametrize(
    ("failing", "result", "expected"),
    [
        (False, SendResult(Outcome.RETRY, 503), True),  # starts a streak
        (True, SendResult(Outcome.RETRY, 503), None),  # already failing: no write
        (True, SendResult(Outcome.PERMANENT, 404), None),
        (True, SendResult(Outcome.DELIVERED, 200), False),  # ends it
        (False, SendResult(Outcome.DELIVERED, 200), None),  # the common case: no write
    ],
)  # fmt: skip
def test_failing_streak_changes(failing: bool, result: SendResult, expected: bool | None) -> None:
    assert failing_change(at(-60) if failing else None, result) is expected
