"""Deadlocks tried again (notifi.store.deadlocks): a transaction Postgres aborted runs again
after a short random wait, at most three times in all, and anything else is not retried."""

from __future__ import annotations

import asyncpg
import pytest

from notifi.store.deadlocks import ATTEMPTS, BACKOFF_S, retry_deadlocks


class Flaky:
    """A transaction function that deadlocks `deadlocks` times, then answers "done"."""

    def __init__(self, deadlocks: int, error: type[Exception] = asyncpg.DeadlockDetectedError):
        self.deadlocks = deadlocks
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.deadlocks:
            raise self.error("deadlock detected")
        return "done"


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_no_deadlock_runs_once_without_waiting() -> None:
    run, sleep = Flaky(0), Sleeps()
    assert await retry_deadlocks(run, sleep=sleep) == "done"
    assert run.calls == 1 and sleep.waits == []


@pytest.mark.parametrize("deadlocks", [1, 2])
async def test_a_deadlock_runs_it_again_after_a_short_random_wait(deadlocks: int) -> None:
    run, sleep = Flaky(deadlocks), Sleeps()
    assert await retry_deadlocks(run, sleep=sleep) == "done"
    assert run.calls == deadlocks + 1
    assert len(sleep.waits) == deadlocks
    for n, wait in enumerate(sleep.waits, start=1):
        assert 0 <= wait <= n * BACKOFF_S


async def test_gives_up_after_three_and_raises_the_deadlock() -> None:
    run, sleep = Flaky(10), Sleeps()
    with pytest.raises(asyncpg.DeadlockDetectedError):
        await retry_deadlocks(run, sleep=sleep)
    assert ATTEMPTS == 3 and run.calls == 3
    assert len(sleep.waits) == 2  # no wait after the last


async def test_other_errors_are_not_retried() -> None:
    run, sleep = Flaky(1, asyncpg.SerializationError), Sleeps()
    with pytest.raises(asyncpg.SerializationError):
        await retry_deadlocks(run, sleep=sleep)
    assert run.calls == 1 and sleep.waits == []


async def test_waits_on_the_real_clock_by_default() -> None:
    run = Flaky(1)
    assert await retry_deadlocks(run, backoff_s=0.001) == "done"
    assert run.calls == 2
