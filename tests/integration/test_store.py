"""The store on the real Postgres: accepting in batches, idempotency, routing, the poller's
claim, the back-stop, recording outcomes, deletion."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from notifi.model import DeliveryJob, DeliveryStatus
from notifi.store import AcceptOutcome, Finished, Store
from tests.support.factories import new_notification


async def test_accept_writes_notifications_and_deliveries(store: Store) -> None:
    batch = [
        new_notification(
            destinations=[
                {"type": "webhook", "url": f"https://e.com/{i}"},
                {"type": "webhook", "url": "https://f.com"},
            ]
        )
        for i in range(3)
    ]
    results = await store.accept(batch)
    assert [r.outcome for r in results] == [AcceptOutcome.CREATED] * 3
    row = await store.get(batch[0].id, "anonymous")
    assert row is not None and row["status"] == "pending"
    assert [d["status"] for d in row["deliveries"]] == ["pending", "pending"]
    assert await store.get(batch[0].id, "someone-else") is None


async def test_idempotency_key_replay_and_conflict(store: Store) -> None:
    first = new_notification(idempotency_key="k1", body="a")
    same = new_notification(idempotency_key="k1", body="a")
    other = new_notification(idempotency_key="k1", body="b")
    other_client = new_notification(idempotency_key="k1", body="b", client_id="c2")
    r1 = await store.accept([first])
    r2 = await store.accept([same, other, other_client])
    assert r1[0].outcome is AcceptOutcome.CREATED
    assert (r2[0].outcome, r2[0].id) == (AcceptOutcome.REPLAYED, first.id)
    assert (r2[1].outcome, r2[1].id) == (AcceptOutcome.CONFLICT, first.id)
    assert r2[2].outcome is AcceptOutcome.CREATED
    count = await store.pool.fetchval("SELECT count(*) FROM deliveries")
    assert count == 2  # nothing written for the replay or the conflict


async def test_route_publishes_due_and_schedules_later(store: Store) -> None:
    now_n, later_n = new_notification(), new_notification(in_s=60)
    await store.accept([now_n, later_n])
    jobs, scheduled = await store.route([now_n.id, later_n.id], horizon_s=0.5)
    assert [(j.notification_id, j.position, j.attempt) for j in jobs] == [(now_n.id, 0, 1)]
    assert scheduled == 1
    outbox = await store.pool.fetch("SELECT notification_id, due_at FROM outbox")
    assert [r["notification_id"] for r in outbox] == [later_n.id]
    assert outbox[0]["due_at"] == later_n.scheduled_at
    assert await store.route([now_n.id, later_n.id], horizon_s=0.5) == ([], 0)  # once only


async def test_claim_due_takes_only_due_rows_of_its_range(store: Store) -> None:
    a = new_notification(in_s=0.2, partition_key=3)
    b = new_notification(in_s=0.2, partition_key=700)
    c = new_notification(in_s=30, partition_key=3)
    await store.accept([a, b, c])
    await store.route([a.id, b.id, c.id], horizon_s=0.0)
    async with store.claim_due(0, 511, horizon_s=0.5, limit=100) as jobs:
        assert [j.notification_id for j in jobs] == [a.id]
    async with store.claim_due(0, 511, horizon_s=0.5, limit=100) as jobs:
        assert jobs == []  # removed on commit
    try:
        async with store.claim_due(512, 1023, horizon_s=0.5, limit=100) as jobs:
            assert [j.notification_id for j in jobs] == [b.id]
            raise RuntimeError("publish failed")
    except RuntimeError:
        pass
    async with store.claim_due(512, 1023, horizon_s=0.5, limit=100) as jobs:
        assert [j.notification_id for j in jobs] == [b.id]  # rolled back, taken again


async def test_overlapping_pollers_never_take_the_same_row(store: Store) -> None:
    batch = [new_notification(in_s=0.1, partition_key=i % 8) for i in range(200)]
    await store.accept(batch)
    await store.route([n.id for n in batch], horizon_s=0.0)
    await asyncio.sleep(0.1)
    taken: list = []

    async def poll(lo: int, hi: int) -> None:
        for _ in range(10):
            async with store.claim_due(lo, hi, horizon_s=0.0, limit=20) as jobs:
                taken.extend(j.notification_id for j in jobs)
                await asyncio.sleep(0.001)

    await asyncio.gather(poll(0, 7), poll(0, 7), poll(4, 7))
    assert len(taken) == len(set(taken)) == 200


async def test_record_outcomes_and_status(store: Store) -> None:
    n = new_notification(
        destinations=[
            {"type": "webhook", "url": "https://a.com"},
            {"type": "webhook", "url": "https://b.com"},
        ]
    )
    await store.accept([n])
    now = datetime.now(UTC)
    ok = Finished(
        DeliveryJob(n.id, 0, 1, now),
        DeliveryStatus.DELIVERED,
        started_at=now,
        duration_ms=3.0,
        outcome="delivered",
        status_code=200,
    )
    retry = Finished(
        DeliveryJob(n.id, 1, 1, now),
        DeliveryStatus.DELIVERING,
        started_at=now,
        duration_ms=4.0,
        outcome="retry",
        status_code=500,
        error="HTTP 500",
        next_attempt_at=now + timedelta(seconds=5),
    )
    await store.record([ok, retry], [])
    row = await store.get(n.id, None)
    assert row["status"] == "delivering"
    assert [d["status"] for d in row["deliveries"]] == ["delivered", "delivering"]
    outbox = await store.pool.fetch("SELECT position, attempt FROM outbox")
    assert [(r["position"], r["attempt"]) for r in outbox] == [(1, 2)]
    failed = Finished(
        DeliveryJob(n.id, 1, 2, now),
        DeliveryStatus.FAILED,
        started_at=now,
        duration_ms=1.0,
        outcome="permanent",
        status_code=400,
        error="HTTP 400",
    )
    await store.record([failed], [])
    row = await store.get(n.id, None)
    assert row["status"] == "partially_failed"
    attempts = await store.pool.fetchval("SELECT count(*) FROM delivery_attempts")
    assert attempts == 3
    # A delivered row is never downgraded by a late duplicate outcome.
    await store.record([retry], [])
    row = await store.get(n.id, None)
    assert row["deliveries"][0]["status"] == "delivered"


async def test_delete_cancels_undelivered_and_unschedules(store: Store) -> None:
    n = new_notification(in_s=60)
    await store.accept([n])
    await store.route([n.id], horizon_s=0.5)
    assert await store.delete(n.id, "someone-else") is False
    assert await store.delete(n.id, "anonymous") is True
    assert await store.delete(n.id, "anonymous") is True  # harmless again
    row = await store.get(n.id, None)
    assert row["status"] == "cancelled" and row["deleted_at"] is not None
    assert await store.pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert [
        r["id"] for r in await store.list(None, deleted=False, status=None, limit=10, offset=0)
    ] == []
    assert [
        r["id"] for r in await store.list(None, deleted=True, status=None, limit=10, offset=0)
    ] == [n.id]


async def test_backstop_reroutes_unrouted_and_requeues_stuck(store: Store) -> None:
    unrouted, stuck = new_notification(), new_notification()
    await store.accept([unrouted, stuck])
    await store.route([stuck.id], horizon_s=0.5)  # its job is then "lost" (never delivered)
    await store.pool.execute("UPDATE notifications SET created_at = now() - interval '1 hour'")
    await store.pool.execute("UPDATE deliveries SET next_attempt_at = now() - interval '1 hour'")
    assert await store.backstop(0, 1023, grace_s=30, limit=100) == (1, 1)
    rows = await store.pool.fetch("SELECT notification_id FROM outbox ORDER BY notification_id")
    assert {r[0] for r in rows} == {unrouted.id, stuck.id}
    assert await store.backstop(0, 1023, grace_s=30, limit=100) == (0, 0)


async def test_postgres_claims_are_leases(store: Store) -> None:
    n = new_notification()
    await store.accept([n])
    key = (n.id, 0)
    assert await store.claim_in_postgres([key], ttl_s=30) == {key}
    assert await store.claim_in_postgres([key], ttl_s=30) == set()
    assert await store.delivered_in_postgres([key]) == set()


async def test_idempotency_keys_expire_after_the_retention(store: Store) -> None:
    first = new_notification(idempotency_key="k")
    await store.accept([first])
    assert await store.expire_idempotency_keys(0, 1023, retention_s=3600, limit=100) == 0
    await store.pool.execute("UPDATE notifications SET created_at = now() - interval '2 hours'")
    assert await store.expire_idempotency_keys(0, 1023, retention_s=3600, limit=100) == 1
    again = new_notification(idempotency_key="k")
    [result] = await store.accept([again])
    assert result.outcome is AcceptOutcome.CREATED and result.id == again.id
