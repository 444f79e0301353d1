"""Retention on the real Postgres: what is old and finished goes with every row that hangs off
it; what is recent, still open, or inside the longer failed window stays; 0 keeps forever;
steps are bounded, stay in their partition range and skip rows another transaction holds."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import pytest
from uuid_utils.compat import uuid7

from actors.sweeper import Sweeper
from notifi import metrics
from notifi.store import ID_MAX, ID_MIN, AcceptOutcome, Store
from notifi.store.retention import Removed, RetentionPolicy, RetentionStore
from notifi.store.sql import query
from tests.support.factories import new_notification
from tests.support.fakes import eventually, metric_value, running

pytestmark = pytest.mark.timeout(120)

DAY = 86_400.0
POLICY = RetentionPolicy(delivered_s=30 * DAY, failed_s=90 * DAY)
EVERYTHING = (0, 1023)


async def finished(
    store: Store,
    *,
    age_days: float,
    statuses: tuple[str, ...] = ("delivered",),
    ended_days: float | None = None,
    partition_key: int = 0,
    idempotency_key: str | None = None,
) -> UUID:
    """A notification made `age_days` ago whose deliveries reached `statuses`, the last of them
    `ended_days` ago (default: when it was made), with one attempt per delivery and an outbox
    row, so that every table that hangs off a notification has a row to remove."""
    made = datetime.now(UTC) - timedelta(days=age_days)
    n = new_notification(
        destinations=[{"type": "webhook", "url": f"https://example.com/{i}"} for i in statuses],
        partition_key=partition_key,
        idempotency_key=idempotency_key,
    )
    n = replace(n, id=UUID(str(uuid7(nanoseconds=int(made.timestamp() * 1e9)))), created_at=made)
    accepted = await store.accept([n])
    assert accepted[0].outcome == AcceptOutcome.CREATED
    ended = made if ended_days is None else datetime.now(UTC) - timedelta(days=ended_days)
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "UPDATE deliveries SET status = $3, updated_at = $4 "
            "WHERE notification_id = $1 AND position = $2",
            [(n.id, i, s, ended) for i, s in enumerate(statuses)],
        )
        await conn.executemany(
            "INSERT INTO delivery_attempts (notification_id, position, attempt, started_at, "
            "duration_ms, outcome) VALUES ($1, $2, 1, $3, 1.0, 'delivered')",
            [(n.id, i, ended) for i in range(len(statuses))],
        )
        await conn.execute(
            "INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key) "
            "VALUES ($1, 0, 2, $2, $3)",
            n.id,
            ended,
            partition_key,
        )
        await conn.execute(
            "UPDATE notifications SET status = 'delivered', updated_at = $2 WHERE id = $1",
            n.id,
            ended,
        )
    return n.id


async def rows_of(store: Store, notification_id: UUID) -> dict[str, int]:
    counts = {}
    for table, column in (
        ("notifications", "id"),
        ("deliveries", "notification_id"),
        ("delivery_attempts", "notification_id"),
        ("outbox", "notification_id"),
    ):
        counts[table] = await store.pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} = $1", notification_id
        )
    return counts


async def present(store: Store, ids: list[UUID]) -> set[UUID]:
    rows = await store.pool.fetch("SELECT id FROM notifications WHERE id = ANY ($1)", ids)
    return {r["id"] for r in rows}


async def test_old_finished_notifications_go_with_every_row(store: Store) -> None:
    gone = await finished(store, age_days=40, statuses=("delivered", "delivered"))
    assert await rows_of(store, gone) == {
        "notifications": 1,
        "deliveries": 2,
        "delivery_attempts": 2,
        "outbox": 1,
    }
    removed = await RetentionStore(store.pool).sweep(*EVERYTHING, 100, POLICY)
    assert removed == Removed(notifications=1, deliveries=2, delivery_attempts=2, outbox=1)
    assert set((await rows_of(store, gone)).values()) == {0}


async def test_what_is_recent_open_or_failed_within_its_window_stays(store: Store) -> None:
    kept = {
        "recent": await finished(store, age_days=1),
        "made long ago, ended recently": await finished(store, age_days=40, ended_days=2),
        "one delivery still open": await finished(
            store, age_days=40, statuses=("delivered", "pending")
        ),
        "one still delivering": await finished(store, age_days=40, statuses=("delivering",)),
        "failed, inside 90 days": await finished(store, age_days=40, statuses=("failed",)),
        "partly failed, inside 90 days": await finished(
            store, age_days=40, statuses=("delivered", "failed")
        ),
    }
    gone = {
        "delivered": await finished(store, age_days=31),
        "cancelled": await finished(store, age_days=31, statuses=("cancelled", "delivered")),
        "expired": await finished(store, age_days=31, statuses=("expired",)),
        "failed, past 90 days": await finished(store, age_days=91, statuses=("failed",)),
        "partly failed, past 90 days": await finished(
            store, age_days=91, statuses=("failed", "delivered")
        ),
    }
    removed = await RetentionStore(store.pool).sweep(*EVERYTHING, 100, POLICY)
    assert removed.notifications == len(gone)
    left = await present(store, [*kept.values(), *gone.values()])
    assert {k for k, i in kept.items() if i not in left} == set()
    assert {k for k, i in gone.items() if i in left} == set()


async def test_zero_keeps_forever(store: Store) -> None:
    delivered = await finished(store, age_days=400)
    failed = await finished(store, age_days=400, statuses=("failed",))
    retention = RetentionStore(store.pool)

    both_zero = RetentionPolicy(delivered_s=0, failed_s=0)
    assert both_zero.horizon(datetime.now(UTC)) is None
    assert await retention.sweep(*EVERYTHING, 100, both_zero) == Removed()
    step = await retention.step(ID_MIN, ID_MAX, *EVERYTHING, 100, both_zero)
    assert step.scanned == 2 and step.removed == Removed()

    keep_failed = RetentionPolicy(delivered_s=DAY, failed_s=0)
    assert (await retention.sweep(*EVERYTHING, 100, keep_failed)).notifications == 1
    assert await present(store, [delivered, failed]) == {failed}

    keep_delivered = RetentionPolicy(delivered_s=0, failed_s=DAY)
    fresh_delivered = await finished(store, age_days=400)
    assert (await retention.sweep(*EVERYTHING, 100, keep_delivered)).notifications == 1
    assert await present(store, [fresh_delivered, failed]) == {fresh_delivered}


async def test_steps_are_bounded_and_walk_the_ids_upward(store: Store) -> None:
    ids = [await finished(store, age_days=40 + i / 100) for i in range(25)]
    kept = await finished(store, age_days=40.5, statuses=("pending",))
    retention = RetentionStore(store.pool)
    before = POLICY.horizon(datetime.now(UTC))
    assert before is not None
    after, steps = ID_MIN, []
    while True:
        step = await retention.step(after, before, *EVERYTHING, 10, POLICY)
        steps.append(step)
        if step.last_id is None:
            break
        assert step.last_id > after
        after = step.last_id
    assert [s.scanned for s in steps] == [10, 10, 6, 0]
    assert sum(s.removed.notifications for s in steps) == 25
    assert max(s.removed.notifications for s in steps) <= 10
    assert await present(store, [*ids, kept]) == {kept}


async def test_a_sweep_stays_in_its_partition_range(store: Store) -> None:
    mine = [await finished(store, age_days=40, partition_key=k) for k in (0, 17, 511)]
    theirs = [await finished(store, age_days=40, partition_key=k) for k in (512, 1023)]
    removed = await RetentionStore(store.pool).sweep(0, 511, 2, POLICY)
    assert removed.notifications == 3
    assert await present(store, mine + theirs) == set(theirs)


async def test_idempotency_keys_go_with_their_notifications(store: Store) -> None:
    old = await finished(store, age_days=40, idempotency_key="key-1")
    again = new_notification(idempotency_key="key-1")
    replayed = (await store.accept([again]))[0]
    assert replayed.outcome == AcceptOutcome.REPLAYED and replayed.id == old
    await RetentionStore(store.pool).sweep(*EVERYTHING, 100, POLICY)
    fresh = new_notification(idempotency_key="key-1")
    accepted = (await store.accept([fresh]))[0]
    assert accepted.outcome == AcceptOutcome.CREATED and accepted.id == fresh.id


async def test_a_notification_another_transaction_holds_is_skipped_not_waited_on(
    store: Store, dsn: str
) -> None:
    held = await finished(store, age_days=40)
    free = await finished(store, age_days=40)
    retention = RetentionStore(store.pool)
    other = await asyncpg.connect(dsn)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT 1 FROM notifications WHERE id = $1 FOR UPDATE", held)
        started = time.monotonic()
        removed = await asyncio.wait_for(retention.sweep(*EVERYTHING, 100, POLICY), 30)
        assert removed.notifications == 1
        assert time.monotonic() - started < 10  # it did not sit on the lock
        assert await present(store, [held, free]) == {held}
        await tx.rollback()
    finally:
        await other.close()
    assert (await retention.sweep(*EVERYTHING, 100, POLICY)).notifications == 1
    assert await present(store, [held]) == set()


FILL = """
INSERT INTO notifications (id, client_id, body, partition_key, status, created_at, updated_at)
SELECT (lpad(to_hex(1600000000000 + g), 12, '0') || '7' || substr(md5(g::text), 1, 19))::uuid,
       'c', 'b', g % 1024, 'delivered', now(), now()
  FROM generate_series(1, $1) AS g
"""


def plan_nodes(plan: dict) -> list[dict]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += plan_nodes(child)
    return out


async def test_a_step_is_an_index_range_scan_not_a_table_scan(store: Store) -> None:
    await store.pool.execute(FILL, 200_000)
    await store.pool.execute(
        "INSERT INTO deliveries (notification_id, position, kind, destination, status, "
        "next_attempt_at) SELECT id, 0, 'webhook', '{}', 'delivered', now() FROM notifications"
    )
    await store.pool.execute("ANALYZE notifications")
    await store.pool.execute("ANALYZE deliveries")
    # Every row ended just now, so the step examines 2000 and removes none.
    raw = await store.pool.fetchval(
        f"EXPLAIN (ANALYZE, FORMAT JSON) {query('retention_sweep')}",
        ID_MIN,
        ID_MAX,
        0,
        511,
        2000,
        POLICY.delivered_s,
        POLICY.failed_s,
    )
    doc = json.loads(raw)[0]
    nodes = plan_nodes(doc["Plan"])
    scans = {(n["Node Type"], n.get("Relation Name")) for n in nodes}
    assert ("Seq Scan", "notifications") not in scans, scans
    assert ("Seq Scan", "deliveries") not in scans, scans
    assert any(
        n.get("Index Name") == "notifications_pkey" and n.get("Actual Rows", 0) <= 2000
        for n in nodes
    ), scans


async def test_the_sweeper_actor_removes_and_counts_on_real_postgres(store: Store) -> None:
    gone = [await finished(store, age_days=40, partition_key=k) for k in (3, 700)]
    kept = await finished(store, age_days=40, partition_key=900)  # another replica's range
    before = removed_attempts()
    sweeper = Sweeper(
        "sweeper",
        RetentionStore(store.pool),
        lo=0,
        hi=799,
        policy=POLICY,
        interval_s=0.05,
        batch=1,
    )
    async with running(sweeper) as task:
        await eventually(lambda: removed_attempts() - before >= 2, timeout_s=30)
        assert not task.done()
    assert await present(store, [*gone, kept]) == {kept}


def removed_attempts() -> float:
    return metric_value(metrics.retention_removed, {"table": "delivery_attempts"})
