"""The delivery pipeline's keyed batch statements probe their indexes on a young database
(migration 0011): once a session has run them enough times to keep a generic plan, made while
the tables are small, loading jobs, recording outcomes and refreshing statuses still read no
table whole. Before, the kept plans were hash joins over sequential scans of deliveries and
notifications, which every webhook then paid for as the tables grew. The plans are read with
auto_explain, nested statements included, as notices on one connection of the test's own."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from notifi.model import DeliveryJob, DeliveryStatus
from notifi.store import Finished, Store, recording
from notifi.store.sql import query
from tests.support.factories import new_notification

# The plan cache weighs a generic plan from the sixth run on (0012 forces it for the hot
# functions): more runs than that, each with its plan.
RUNS = 12
SEQ_SCAN = re.compile(r"Seq Scan on (deliveries|notifications)\b")


@pytest.fixture
async def explained(dsn: str, store: Store) -> AsyncIterator[tuple[asyncpg.Connection, list[str]]]:
    """A connection whose every plan, nested ones included, arrives as a notice in the list."""
    conn = await asyncpg.connect(dsn)
    plans: list[str] = []
    conn.add_log_listener(lambda _conn, message: plans.append(message.message))
    for setting in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_level = notice",
    ):
        await conn.execute(setting)
    yield conn, plans
    await conn.close()


def delivered(job: DeliveryJob) -> Finished:
    now = datetime.now(UTC)
    return Finished(
        job, DeliveryStatus.DELIVERED, now, duration_ms=1.0, outcome="delivered", status_code=200
    )


async def test_a_young_database_keeps_index_plans_for_the_hot_statements(
    store: Store, explained: tuple[asyncpg.Connection, list[str]]
) -> None:
    conn, plans = explained
    batch = [new_notification() for _ in range(RUNS)]
    await store.accept(batch)
    for n in batch:
        jobs, _ = await store.route([n.id], 5.0)
        rows = await conn.fetch(query("load_jobs"), [n.id], [0])
        assert [r["notification_id"] for r in rows] == [n.id]
        await recording.record(conn, [delivered(jobs[0])], [])
        await conn.execute(query("refresh_status"), [n.id])
    statuses = await store.pool.fetch("SELECT status FROM notifications")
    assert [r["status"] for r in statuses] == ["delivered"] * RUNS
    texts = "\n".join(plans)
    # The plans were seen (the check below cannot pass for want of them) ...
    for needle in ("Function Scan on k", "Update on deliveries", "Update on notifications"):
        assert needle in texts
    # ... and none of them, generic ones included, reads a table whole.
    assert SEQ_SCAN.findall(texts) == []


GENERIC_LOAD = re.compile(r"Function Scan on k\s+\(cost=[\d.]+ rows=10 ")  # 10: the guess


async def test_the_hot_functions_use_their_kept_generic_plan(
    store: Store, explained: tuple[asyncpg.Connection, list[str]]
) -> None:
    """Migration 0012: past the first runs, a one-key batch is not planned again. A custom plan
    knows the batch (the unnest of one key: rows=1; the refresh's ids as a literal), the
    generic one only its parameters (rows=10, the planner's guess; `$1`)."""
    conn, plans = explained
    batch = [new_notification() for _ in range(RUNS)]
    await store.accept(batch)
    for n in batch:
        await store.route([n.id], 5.0)
        plans.clear()  # the last run's plans are what a session keeps using
        await conn.fetch(query("load_jobs"), [n.id], [0])
        await conn.execute(query("refresh_status"), [n.id])
    load = [p for p in plans if "Function Scan on k" in p]
    refresh = [p for p in plans if "Update on notifications" in p]
    assert len(load) == 1 and len(refresh) == 1  # seen, so the checks below can fail
    assert GENERIC_LOAD.search(load[0]), load[0]
    assert "ANY ($1)" in refresh[0] and str(batch[-1].id) not in refresh[0], refresh[0]


BACKLOG_INDEX = re.compile(r"\b(notifications_unrouted|deliveries_open)\b")


async def test_routing_reads_only_the_batch_whatever_the_backlog(
    store: Store, explained: tuple[asyncpg.Connection, list[str]]
) -> None:
    """Migration 0013: the router's statement reaches a batch through the primary keys. Its
    kept plan used to scan every notification not routed yet (notifications_unrouted) and,
    per notification, every open delivery (a BitmapAnd with deliveries_open), so a router
    that fell behind slowed with its backlog."""
    conn, plans = explained
    backlog = [new_notification() for _ in range(300)]
    await store.accept(backlog)
    routed = []
    for n in backlog[:RUNS]:
        rows = await conn.fetch(query("route"), [n.id], 5.0)
        routed += [(r["notification_id"], r["due_now"]) for r in rows]
    assert routed == [(n.id, True) for n in backlog[:RUNS]]
    again = await conn.fetch(query("route"), [backlog[0].id], 5.0)
    assert again == []  # routed once
    texts = "\n".join(plans)
    assert "Update on notifications" in texts and "on deliveries" in texts  # seen
    assert BACKLOG_INDEX.findall(texts) == []
    assert SEQ_SCAN.findall(texts) == []
