"""The router on fakes: immediate work is published, scheduled work goes to the outbox, bad
events are set aside, and offsets are committed only once the work is durable, also while
Postgres or the bus is away."""

from __future__ import annotations

import asyncpg
import pytest
from structlog.testing import capture_logs

from actors.router import Router, RouteStore
from notifi import events, metrics
from notifi.outage import Backoff
from notifi.store import Store
from tests.support.factories import new_notification
from tests.support.fakes import (
    FakeBus,
    FakeStore,
    assert_implements,
    eventually,
    metric_value,
    running,
)

SOURCE, TARGET = "t.notifications", "t.deliveries"
TWO = [{"type": "webhook", "url": "https://a.example/h"}, {"type": "email", "to": "x@example.com"}]


def make_router(bus: FakeBus, store: FakeStore, name: str = "router-0") -> Router:
    router = Router(
        name,
        bus,
        store,
        source=SOURCE,
        group="g",
        target=TARGET,
        horizon_s=1.0,
        fetch_max=100,
    )
    router.backoff = Backoff(initial_s=0.005, cap_s=0.05)
    return router


def jobs_on(bus: FakeBus) -> list[tuple[str, int]]:
    return [
        (str(j.notification_id), j.position)
        for j in (events.read_delivery_due(v) for _, v in bus.published.get(TARGET, []))
    ]


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def test_the_store_has_what_the_router_needs() -> None:
    assert_implements(Store, RouteStore)
    assert_implements(FakeStore, RouteStore)


async def test_immediate_work_is_published_then_committed(bus: FakeBus, store: FakeStore) -> None:
    n = new_notification(destinations=TWO)
    store.add(n)
    await bus.feed(SOURCE, [events.accepted(n.id, 0)])
    async with running(make_router(bus, store)):
        await eventually(lambda: bus.committed(SOURCE) == 1)
    assert sorted(jobs_on(bus)) == [(str(n.id), 0), (str(n.id), 1)]
    assert store.notifications[n.id].routed_at is not None
    assert store.outbox == []


async def test_scheduled_work_goes_to_the_outbox(bus: FakeBus, store: FakeStore) -> None:
    n = new_notification(in_s=3600, destinations=TWO)
    store.add(n)
    before = metric_value(metrics.routed, {"route": "scheduled"})
    await bus.feed(SOURCE, [events.accepted(n.id, 0)])
    async with running(make_router(bus, store)):
        await eventually(lambda: bus.committed(SOURCE) == 1)
    assert jobs_on(bus) == []
    assert [(r.notification_id, r.position) for r in store.outbox] == [(n.id, 0), (n.id, 1)]
    assert metric_value(metrics.routed, {"route": "scheduled"}) == before + 2


async def test_bad_events_are_set_aside_and_committed(bus: FakeBus, store: FakeStore) -> None:
    n = new_notification()
    store.add(n)
    await bus.feed(SOURCE, [(None, b"not json"), (None, events.envelope("other", {}))])
    await bus.feed(SOURCE, [events.accepted(n.id, 0)])
    with capture_logs() as logs:
        async with running(make_router(bus, store)):
            await eventually(lambda: bus.committed(SOURCE) == 3)
    assert jobs_on(bus) == [(str(n.id), 0)]
    set_aside = [e for e in logs if e["event"] == "message_set_aside"]
    assert [e["reason"] for e in set_aside] == ["undecodable", "undecodable"]


async def test_postgres_away_holds_the_commit_until_the_work_is_durable(
    bus: FakeBus, store: FakeStore
) -> None:
    n = new_notification()
    store.add(n)
    labels = {"dependency": "postgres", "actor": "router-pg"}
    outages = metric_value(metrics.dependency_outages, labels)
    store.go_down()
    await bus.feed(SOURCE, [events.accepted(n.id, 0)])
    with capture_logs() as logs:
        async with running(make_router(bus, store, "router-pg")) as task:
            await eventually(lambda: store.calls.count("route") >= 5)
            assert bus.commits == [] and jobs_on(bus) == []
            store.come_back()
            await eventually(lambda: bus.committed(SOURCE) == 1)
            assert not task.done()
    assert jobs_on(bus) == [(str(n.id), 0)]
    assert [e["event"] for e in logs].count("dependency_away") == 1  # once, not per retry
    assert [e["event"] for e in logs].count("dependency_back") == 1
    assert metric_value(metrics.dependency_outages, labels) == outages + 1


async def test_bus_away_retries_the_publish_without_routing_twice(
    bus: FakeBus, store: FakeStore
) -> None:
    n = new_notification()
    store.add(n)
    bus.go_down()
    await bus.feed(SOURCE, [events.accepted(n.id, 0)])
    async with running(make_router(bus, store)) as task:
        await eventually(lambda: store.calls.count("route") == 1)
        await eventually(
            lambda: (
                metric_value(metrics.dependency_outages, {"dependency": "bus", "actor": "router-0"})
                > 0
            )
        )
        assert bus.commits == []
        bus.come_back()
        await eventually(lambda: bus.committed(SOURCE) == 1)
        assert not task.done()
    assert store.calls.count("route") == 1
    assert jobs_on(bus) == [(str(n.id), 0)]


async def test_a_stop_while_postgres_is_away_commits_nothing_and_work_is_read_again(
    bus: FakeBus, store: FakeStore
) -> None:
    n = new_notification()
    store.add(n)
    store.go_down()
    await bus.feed(SOURCE, [events.accepted(n.id, 0)])
    async with running(make_router(bus, store)) as task:
        await eventually(lambda: store.calls.count("route") >= 2)
    assert task.exception() is None  # stopped, not crashed
    assert bus.commits == []
    store.come_back()
    async with running(make_router(bus, store, "router-1")):  # the partition's next owner
        await eventually(lambda: bus.committed(SOURCE) == 1)
    assert jobs_on(bus) == [(str(n.id), 0)]


async def test_a_bug_sets_the_message_aside_loudly_and_the_partition_moves_on(
    bus: FakeBus, store: FakeStore
) -> None:
    """Only a dependency being away is ridden out; a message whose routing raises anything else
    is set aside (logged with its error, counted, committed: the back-stop re-routes it from
    Postgres), so one bad message cannot stall the partition or crash-loop the process."""
    n, after = new_notification(), new_notification()
    store.add(n)
    store.add(after)
    labels = {"group": "g", "reason": "unhandled"}
    before = metric_value(metrics.consumer_set_aside, labels)
    store.fail_next("route", asyncpg.UndefinedColumnError("column x does not exist"))
    await bus.feed(SOURCE, [events.accepted(n.id, 0)])
    with capture_logs() as logs:
        async with running(make_router(bus, store)) as task:
            await eventually(lambda: bus.committed(SOURCE) == 1)
            await bus.feed(SOURCE, [events.accepted(after.id, 0)])
            await eventually(lambda: bus.committed(SOURCE) == 2)
            assert not task.done()
    [aside] = [e for e in logs if e["event"] == "message_set_aside"]
    assert aside["reason"] == "unhandled" and aside["error_type"] == "UndefinedColumnError"
    assert aside["log_level"] == "error"
    assert metric_value(metrics.consumer_set_aside, labels) == before + 1
    assert jobs_on(bus) == [(str(after.id), 0)]
    assert store.notifications[n.id].routed_at is None  # left for the back-stop


async def test_a_bad_message_in_a_batch_does_not_take_its_neighbours_with_it(
    bus: FakeBus, store: FakeStore
) -> None:
    good = [new_notification() for _ in range(3)]
    for n in good:
        store.add(n)
    # The batch fails, then the first message alone fails again: only it is set aside.
    store.fail_next("route", ValueError("batch"), ValueError("first alone"))
    await bus.feed(SOURCE, [events.accepted(n.id, 0) for n in good])
    with capture_logs() as logs:
        async with running(make_router(bus, store)):
            await eventually(lambda: bus.committed(SOURCE) == 3)
    assert sorted(jobs_on(bus)) == sorted((str(n.id), 0) for n in good[1:])
    assert [e["event"] for e in logs].count("message_set_aside") == 1
    assert "batch_failed_trying_one_by_one" in [e["event"] for e in logs]


async def test_the_router_joins_with_its_name_as_member_name(
    bus: FakeBus, store: FakeStore
) -> None:
    async with running(make_router(bus, store, "router-3")):
        pass
    assert [c.instance_id for c in bus.consumers] == ["router-3"]
