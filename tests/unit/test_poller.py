"""The poller on fakes: due rows of its range are published and removed, a failed publish
leaves them for the next poll, a full batch is followed at once by the next, and Postgres or
the bus being away is ridden out without a crash."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from structlog.testing import capture_logs
from uuid_utils.compat import uuid7

from actors.poller import OutboxStore, Poller
from notifi import events, metrics
from notifi.model import DeliveryJob
from notifi.outage import Backoff
from notifi.store import Store
from tests.support.fakes import (
    FakeBus,
    FakeStore,
    assert_implements,
    eventually,
    metric_value,
    postgres_down,
    running,
)

TARGET = "t.deliveries"


def make_poller(
    bus: FakeBus,
    store: FakeStore,
    *,
    name: str = "poller-0",
    lo: int = 0,
    hi: int = 9,
    interval_s: float = 0.02,
    batch: int = 100,
) -> Poller:
    poller = Poller(
        name, bus, store, lo=lo, hi=hi, target=TARGET, interval_s=interval_s, batch=batch
    )
    poller.backoff = Backoff(initial_s=0.005, cap_s=0.05)
    return poller


def published(bus: FakeBus) -> list[UUID]:
    return [events.read_delivery_due(v).notification_id for _, v in bus.published.get(TARGET, [])]


def due_rows(store: FakeStore, count: int, *, in_s: float = -1.0, partition_key: int = 0) -> list:
    ids = [uuid7() for _ in range(count)]
    for i in ids:
        store.schedule(DeliveryJob(i, 0, 1, store.clock() + timedelta(seconds=in_s)), partition_key)
    return ids


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def test_the_store_has_what_the_poller_needs() -> None:
    assert_implements(Store, OutboxStore)
    assert_implements(FakeStore, OutboxStore)


async def test_due_rows_of_its_range_are_published_and_removed(
    bus: FakeBus, store: FakeStore
) -> None:
    due = due_rows(store, 3)
    later = due_rows(store, 1, in_s=3600)
    elsewhere = due_rows(store, 1, partition_key=50)
    labels = {"range": "0-9"}
    before = metric_value(metrics.dispatched, labels)
    async with running(make_poller(bus, store)):
        await eventually(lambda: len(published(bus)) == 3)
    assert sorted(published(bus)) == sorted(due)
    assert sorted(r.notification_id for r in store.outbox) == sorted(later + elsewhere)
    assert metric_value(metrics.dispatched, labels) == before + 3


async def test_a_failed_publish_rolls_back_and_the_rows_go_next_time(
    bus: FakeBus, store: FakeStore
) -> None:
    due = due_rows(store, 3)
    bus.go_down()
    labels = {"dependency": "bus", "actor": "poller-bus"}
    outages = metric_value(metrics.dependency_outages, labels)
    async with running(make_poller(bus, store, name="poller-bus")) as task:
        await eventually(lambda: store.calls.count("claim_due") >= 3)
        assert len(store.outbox) == 3  # rolled back, every time
        assert published(bus) == []
        bus.come_back()
        await eventually(lambda: not store.outbox)
        assert not task.done()
    assert sorted(published(bus)) == sorted(due)  # each once
    assert metric_value(metrics.dependency_outages, labels) == outages + 1


async def test_a_full_batch_is_followed_at_once_by_the_next(bus: FakeBus, store: FakeStore) -> None:
    due = due_rows(store, 5)
    # The interval is far longer than the test: only "go again at once" can move all five.
    async with running(make_poller(bus, store, interval_s=60, batch=2)):
        await eventually(lambda: len(published(bus)) == 5)
    assert sorted(published(bus)) == sorted(due)
    assert store.calls.count("claim_due") == 3  # 2 + 2 + 1, then the long sleep


async def test_postgres_away_is_ridden_out(bus: FakeBus, store: FakeStore) -> None:
    due = due_rows(store, 2)
    store.go_down()
    labels = {"dependency": "postgres", "actor": "poller-pg"}
    outages = metric_value(metrics.dependency_outages, labels)
    with capture_logs() as logs:
        async with running(make_poller(bus, store, name="poller-pg")) as task:
            await eventually(lambda: store.calls.count("claim_due") >= 5)
            assert not task.done()
            store.come_back()
            await eventually(lambda: len(published(bus)) == 2)
    assert sorted(published(bus)) == sorted(due)
    kinds = [e["event"] for e in logs]
    assert kinds.count("dependency_away") == 1 and kinds.count("dependency_back") == 1
    assert metric_value(metrics.dependency_outages, labels) == outages + 1


async def test_each_kind_of_connection_error_is_ridden_out(bus: FakeBus, store: FakeStore) -> None:
    import asyncpg

    errors = [
        postgres_down(),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
    ]
    store.fail_next("claim_due", *errors)
    due = due_rows(store, 1)
    async with running(make_poller(bus, store)) as task:
        await eventually(lambda: published(bus) == due)
        assert not task.done()


async def test_a_commit_lost_after_the_publish_sends_the_jobs_again(
    bus: FakeBus, store: FakeStore
) -> None:
    """At least once: the rows stay when the commit fails; delivery's claim stops the
    duplicate send."""
    due = due_rows(store, 1)
    store.fail_next("claim_due.commit", postgres_down())
    async with running(make_poller(bus, store)):
        await eventually(lambda: not store.outbox)
    assert published(bus) == due * 2


async def test_a_stop_during_an_outage_ends_the_poller_cleanly(
    bus: FakeBus, store: FakeStore
) -> None:
    store.go_down()
    poller = make_poller(bus, store)
    poller.backoff = Backoff(initial_s=30, cap_s=30)  # the stop must cut the wait short
    async with running(poller) as task:
        await eventually(lambda: store.calls.count("claim_due") == 1)
    assert task.done() and task.exception() is None
