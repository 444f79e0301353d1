"""The back-stop knows when the bus lost its data: on a reset it re-queues from Postgres at
once what was accepted or due before the reset and is neither routed nor queued, without
waiting for the grace period, sweep after sweep while sweeps come back full; work that comes
after the reset is left to the ordinary path."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from uuid import UUID

import pytest

from actors.poller import Backstop
from notifi.outage import Backoff
from tests.support.factories import new_notification
from tests.support.fakes import FakeStore, eventually, running

GRACE_S = 30.0


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


class Resets:
    """The bus's reset count, bumped by the test."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def make_backstop(store: FakeStore, resets: Resets | None, *, batch: int = 100) -> Backstop:
    backstop = Backstop(
        "backstop",
        store,
        lo=0,
        hi=9,
        interval_s=3600,  # no ordinary sweep during a test: only the reset's
        grace_s=GRACE_S,
        batch=batch,
        bus_resets=resets,
        reset_lookahead_s=0.5,
    )
    backstop.backoff = Backoff(initial_s=0.005, cap_s=0.05)
    backstop.reset_check_s = 0.01
    return backstop


def lost_job(store: FakeStore) -> tuple[UUID, int]:
    """A notification routed just now whose job was on the bus that lost it."""
    n = new_notification()
    store.add(n)
    store.notifications[n.id].routed_at = store.clock()
    return n.id, 0


async def test_a_reset_requeues_unrouted_and_lost_work_at_once(store: FakeStore) -> None:
    unrouted = new_notification()
    store.add(unrouted)  # accepted a moment ago: well inside the grace period
    lost = lost_job(store)
    resets = Resets()
    async with running(make_backstop(store, resets)):
        assert store.calls.count("backstop") == 0
        resets.count += 1
        await eventually(lambda: len(store.outbox) == 2)
    assert {(r.notification_id, r.position) for r in store.outbox} == {(unrouted.id, 0), lost}
    assert store.notifications[unrouted.id].routed_at is not None


async def test_a_full_sweep_after_a_reset_goes_again_until_all_is_queued(
    store: FakeStore,
) -> None:
    for _ in range(5):
        store.add(new_notification())
    resets = Resets()
    async with running(make_backstop(store, resets, batch=2)):
        resets.count += 1
        await eventually(lambda: len(store.outbox) == 5)
    assert store.calls.count("backstop") >= 3


async def test_work_after_the_reset_is_left_to_the_ordinary_path(store: FakeStore) -> None:
    resets = Resets()
    backstop = make_backstop(store, resets)
    async with running(backstop):
        resets.count += 1
        await eventually(lambda: store.calls.count("backstop") >= 1)
        later = dataclasses.replace(
            new_notification(), created_at=store.clock() + timedelta(seconds=5)
        )
        store.add(later)  # accepted after the reset: it is on the new log
        calls = store.calls.count("backstop")
        resets.count += 1  # a second reset sweeps again, from its own moment
        await eventually(lambda: store.calls.count("backstop") > calls)
    assert store.notifications[later.id].routed_at is None
    assert store.outbox == []


async def test_without_a_reset_nothing_is_swept_before_the_interval(store: FakeStore) -> None:
    store.add(new_notification())
    resets = Resets()
    async with running(make_backstop(store, resets)):
        await asyncio.sleep(0.3)  # some thirty reset checks, every 0.01 s: none sees a reset
    assert store.calls.count("backstop") == 0 and store.outbox == []


async def test_a_backstop_without_a_bus_works_as_before(store: FakeStore) -> None:
    n = new_notification()
    store.add(n)
    store.clock.advance(GRACE_S + 1)
    backstop = Backstop("backstop", store, lo=0, hi=9, interval_s=0.01, grace_s=GRACE_S, batch=10)
    async with running(backstop):
        await eventually(lambda: len(store.outbox) == 1)
