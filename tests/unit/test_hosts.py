"""The per-host bound and the circuit breaker, on a clock the test moves."""

from __future__ import annotations

import asyncio

from notifi.hosts import BUSY_RETRY_S, BreakerState, HostGate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate(clock: Clock, max_in_flight: int = 2) -> HostGate:
    return HostGate(
        max_in_flight=max_in_flight,
        failure_threshold=3,
        cooldown_s=30,
        max_cooldown_s=100,
        clock=clock,
    )


def test_in_flight_bound_per_host() -> None:
    g = gate(Clock())
    assert g.admit("a") is None and g.admit("a") is None
    assert g.admit("a") == BUSY_RETRY_S  # a third waits
    assert g.admit("b") is None  # another host is not held up
    g.release("a", host_failed=False)
    assert g.admit("a") is None


def test_breaker_opens_after_consecutive_failures_and_recovers() -> None:
    clock = Clock()
    g = gate(clock, max_in_flight=10)
    for _ in range(3):
        assert g.admit("a") is None
        g.release("a", host_failed=True)
    assert g.state("a") is BreakerState.OPEN and g.open_hosts() == 1
    assert g.admit("a") == 30
    clock.now += 30
    assert g.state("a") is BreakerState.HALF_OPEN
    assert g.admit("a") is None  # one trial
    assert g.admit("a") is not None  # the others keep waiting
    g.release("a", host_failed=True)  # the trial failed: paused twice as long
    assert g.admit("a") == 60
    clock.now += 60
    assert g.admit("a") is None
    g.release("a", host_failed=False)  # the trial worked: closed
    assert g.state("a") is BreakerState.CLOSED and g.admit("a") is None


def test_cooldown_is_capped_and_successes_reset() -> None:
    clock = Clock()
    g = gate(clock, max_in_flight=10)
    for _ in range(2):
        g.admit("a")
        g.release("a", host_failed=True)
    g.admit("a")
    g.release("a", host_failed=False)  # not consecutive any more
    g.admit("a")
    g.release("a", host_failed=True)
    assert g.state("a") is BreakerState.CLOSED
    for _ in range(3):
        g.admit("a")
        g.release("a", host_failed=True)
    for _ in range(4):
        clock.now += 1000
        assert g.admit("a") is None
        g.release("a", host_failed=True)
    assert g.admit("a") == 100


def test_nothing_sent_changes_nothing() -> None:
    g = gate(Clock())
    g.admit("a")
    g.release("a", host_failed=None)
    assert g.state("a") is BreakerState.CLOSED


async def test_acquire_waits_briefly_for_a_slot_of_a_fast_host() -> None:
    g = HostGate(max_in_flight=1, failure_threshold=3, cooldown_s=30, max_cooldown_s=100)
    assert await g.acquire("a", 0.5) is None

    async def finish_soon() -> None:
        await asyncio.sleep(0.02)
        g.release("a", host_failed=False)

    finishing = asyncio.create_task(finish_soon())
    assert await g.acquire("a", 0.5) is None  # got the slot when it freed
    await finishing
    assert await g.acquire("a", 0.05) == BUSY_RETRY_S  # a slow host: deferred after patience
