"""Riding out a dependency: the back-off doubles up to its cap, an outage is logged and counted
once however many retries it takes, and only the listed errors are waited out."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from notifi import metrics
from notifi.outage import POSTGRES_AWAY, Backoff, Outage, StopRequested
from tests.support.fakes import metric_value, postgres_down


def test_the_back_off_doubles_up_to_its_cap() -> None:
    backoff = Backoff(initial_s=0.05, cap_s=2.0)
    assert [backoff.delay_s(n) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert backoff.delay_s(100) == 2.0


async def test_an_outage_is_logged_and_counted_once_until_a_success() -> None:
    labels = {"dependency": "postgres", "actor": "test-outage"}
    before = metric_value(metrics.dependency_outages, labels)
    outage = Outage("postgres", "test-outage", POSTGRES_AWAY, Backoff(0.001, 0.001))
    failures = [postgres_down(), OSError("reset"), TimeoutError()]
    slept: list[float] = []

    async def attempt() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    async def sleep(seconds: float) -> bool:
        slept.append(seconds)
        return False

    with capture_logs() as logs:
        assert await outage.call(attempt, sleep) == "done"
    assert [e["event"] for e in logs] == ["dependency_away", "dependency_back"]
    assert logs[1]["retries"] == 3 and len(slept) == 3
    assert not outage.away
    assert metric_value(metrics.dependency_outages, labels) == before + 1


async def test_a_stop_while_waiting_raises_stop_requested() -> None:
    outage = Outage("postgres", "test-stop", POSTGRES_AWAY)

    async def attempt() -> None:
        raise postgres_down()

    async def stopped(seconds: float) -> bool:
        return True

    with pytest.raises(StopRequested):
        await outage.call(attempt, stopped)


async def test_other_errors_are_not_waited_out() -> None:
    outage = Outage("postgres", "test-bug", POSTGRES_AWAY)

    async def attempt() -> None:
        raise KeyError("a bug")

    async def sleep(seconds: float) -> bool:
        raise AssertionError("must not wait")

    with pytest.raises(KeyError):
        await outage.call(attempt, sleep)
    assert not outage.away
