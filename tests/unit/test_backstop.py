"""The back-stop on fakes: it re-queues what nobody routed and what lost its job, counts both,
forgets old idempotency keys, and rides out Postgres being away."""

from __future__ import annotations

import dataclasses

import pytest
from structlog.testing import capture_logs

from actors.poller import Backstop, BackstopStore
from notifi import metrics
from notifi.outage import Backoff
from notifi.store import Store
from tests.support.factories import new_notification
from tests.support.fakes import (
    FakeStore,
    assert_implements,
    eventually,
    metric_value,
    running,
)

GRACE_S = 60.0
TWO = [{"type": "webhook", "url": "https://a.example/h"}, {"type": "email", "to": "x@example.com"}]


def make_backstop(store: FakeStore, name: str = "backstop") -> Backstop:
    backstop = Backstop(
        name,
        store,
        lo=0,
        hi=9,
        interval_s=0.01,
        grace_s=GRACE_S,
        batch=100,
        idempotency_retention_s=3600,
    )
    backstop.backoff = Backoff(initial_s=0.005, cap_s=0.05)
    return backstop


def requeued(kind: str) -> float:
    return metric_value(metrics.backstop_requeued, {"kind": kind})


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def test_the_store_has_what_the_backstop_needs() -> None:
    assert_implements(Store, BackstopStore)
    assert_implements(FakeStore, BackstopStore)


async def test_unrouted_notifications_past_the_grace_are_queued_and_counted(
    store: FakeStore,
) -> None:
    old = new_notification(destinations=TWO)
    elsewhere = new_notification(partition_key=50)
    store.add(old)
    store.add(elsewhere)
    store.clock.advance(GRACE_S + 1)
    fresh = dataclasses.replace(new_notification(), created_at=store.clock())
    store.add(fresh)  # accepted just now: still inside the grace period
    before = requeued("unrouted")
    with capture_logs() as logs:
        async with running(make_backstop(store)):
            await eventually(lambda: requeued("unrouted") == before + 2)
    assert sorted((r.notification_id, r.position) for r in store.outbox) == [
        (old.id, 0),
        (old.id, 1),
    ]
    assert store.notifications[elsewhere.id].routed_at is None
    assert store.notifications[fresh.id].routed_at is None
    assert any(e["event"] == "backstop_requeued" and e["unrouted"] == 2 for e in logs)


async def test_open_deliveries_whose_job_was_lost_are_queued_and_counted(
    store: FakeStore,
) -> None:
    n = new_notification(destinations=TWO)
    store.add(n)
    await store.route([n.id], 1.0)  # published and lost with the bus: no outbox row
    store.notifications[n.id].deliveries[1].status = "delivered"
    store.calls.clear()
    store.clock.advance(GRACE_S + 1)
    before = requeued("stuck")
    async with running(make_backstop(store)):
        await eventually(lambda: requeued("stuck") == before + 1)
    assert [(r.notification_id, r.position) for r in store.outbox] == [(n.id, 0)]


async def test_nothing_to_do_counts_nothing_and_old_keys_expire(store: FakeStore) -> None:
    n = new_notification(idempotency_key="k1")
    await store.accept([n])
    await store.route([n.id], 1.0)
    store.notifications[n.id].deliveries[0].status = "delivered"
    store.clock.advance(3601)
    before = (requeued("unrouted"), requeued("stuck"))
    async with running(make_backstop(store)):
        await eventually(lambda: store.calls.count("expire_idempotency_keys") >= 2)
    assert store.idempotency == {}
    assert (requeued("unrouted"), requeued("stuck")) == before


async def test_postgres_away_is_ridden_out(store: FakeStore) -> None:
    n = new_notification()
    store.add(n)
    store.clock.advance(GRACE_S + 1)
    store.go_down()
    labels = {"dependency": "postgres", "actor": "backstop-pg"}
    outages = metric_value(metrics.dependency_outages, labels)
    before = requeued("unrouted")
    with capture_logs() as logs:
        async with running(make_backstop(store, "backstop-pg")) as task:
            await eventually(lambda: store.calls.count("backstop") >= 5)
            assert not task.done()
            store.come_back()
            await eventually(lambda: requeued("unrouted") == before + 1)
    kinds = [e["event"] for e in logs]
    assert kinds.count("dependency_away") == 1 and kinds.count("dependency_back") == 1
    assert metric_value(metrics.dependency_outages, labels) == outages + 1


async def test_a_failed_key_expiry_is_ridden_out_too(store: FakeStore) -> None:
    store.fail_next("expire_idempotency_keys", OSError("connection reset"))
    async with running(make_backstop(store)) as task:
        await eventually(lambda: store.calls.count("expire_idempotency_keys") >= 2)
        assert not task.done()
