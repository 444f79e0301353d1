"""The retry schedule: how many attempts it allows, its jitter, and Retry-After."""

from __future__ import annotations

import pytest

from notifi.retry import MAX_RETRY_AFTER_S, RetryPolicy


def test_retry_schedule_bounds_attempts() -> None:
    policy = RetryPolicy.of([5, 300], jitter=0.0)
    assert policy.max_attempts == 3
    assert policy.delay_after(1) == 5
    assert policy.delay_after(2) == 300
    assert policy.delay_after(3) is None


def test_retry_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy.of([100], jitter=0.2)
    assert policy.delay_after(1, rand=lambda: 0.0) == pytest.approx(80)
    assert policy.delay_after(1, rand=lambda: 1.0) == pytest.approx(120)


def test_retry_after_is_honoured_within_bounds() -> None:
    policy = RetryPolicy.of([5], jitter=0.0)
    assert policy.delay_after(1, retry_after_s=60) == 60
    assert policy.delay_after(1, retry_after_s=1) == 5  # never sooner than the schedule
    assert policy.delay_after(1, retry_after_s=10**9) == MAX_RETRY_AFTER_S
