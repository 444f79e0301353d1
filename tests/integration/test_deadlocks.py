"""Deadlocks between a notification's delete and the stored destinations' writes, on the real
Postgres: the old lock order of an enable (deliveries, then their notifications) makes a cycle
with a delete (the notification, then its deliveries) that Postgres breaks by aborting one side;
the enable now locks the notifications first and waits instead; and two transactions locking
in opposite orders both get through with notifi.store.deadlocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from notifi.store import Store
from notifi.store.deadlocks import retry_deadlocks
from notifi.store.destinations import Destinations, Fields
from notifi.store.sql import query
from tests.support.factories import new_notification
from tests.support.stored_destinations import client_ids, stored

pytestmark = pytest.mark.timeout(60)

LOCK_TIMEOUT = "SET lock_timeout = '20s'"  # a wait the test gets wrong fails, never hangs


@pytest.fixture
async def conns(dsn: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Two connections of the test's own, to interleave transactions statement by statement."""
    opened = [await asyncpg.connect(dsn) for _ in range(2)]
    for c in opened:
        await c.execute(LOCK_TIMEOUT)
    yield opened
    for c in opened:
        await c.close()


async def paused_to(store: Store, destination_id: UUID, count: int) -> list[UUID]:
    """`count` notifications, each with one delivery paused on the destination, in id order."""
    batch = [new_notification() for _ in range(count)]
    await store.accept(batch)
    ids = sorted(n.id for n in batch)
    await store.pool.execute(
        "UPDATE deliveries SET destination_id = $1, status = 'paused'"
        " WHERE notification_id = ANY ($2::uuid[])",
        destination_id,
        ids,
    )
    await store.pool.execute(query("refresh_status"), ids)
    return ids


async def someone_waits_on_a_lock(store: Store) -> None:
    """Until a backend of the test database (the run's own) waits for a lock."""
    for _ in range(500):
        if await store.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("nobody waited on a lock")


async def statuses(store: Store, ids: list[UUID]) -> list[tuple[str, list[str]]]:
    rows = await store.pool.fetch(
        "SELECT n.id, n.status, array_agg(d.status ORDER BY d.position) AS deliveries"
        "  FROM notifications n JOIN deliveries d ON d.notification_id = n.id"
        " WHERE n.id = ANY ($1::uuid[]) GROUP BY n.id ORDER BY n.id",
        ids,
    )
    return [(r["status"], list(r["deliveries"])) for r in rows]


async def begin_delete(conn: asyncpg.Connection, notification_id: UUID) -> None:
    """The first half of a notification's delete: its row, locked by the update."""
    await conn.execute("BEGIN")
    await conn.execute(
        "UPDATE notifications SET deleted_at = now(), updated_at = now() WHERE id = $1",
        notification_id,
    )


async def finish_delete(conn: asyncpg.Connection, notification_id: UUID) -> None:
    """The rest of it (delete_notification's deliveries, then the status), committed."""
    await conn.execute(
        "UPDATE deliveries SET status = 'cancelled', updated_at = now()"
        " WHERE notification_id = $1"
        "   AND status IN ('pending', 'scheduled', 'delivering', 'paused')",
        notification_id,
    )
    await conn.execute(query("refresh_status"), [notification_id])
    await conn.execute("COMMIT")


async def test_the_old_enable_order_deadlocks_with_a_delete(
    store: Store, conns: list[asyncpg.Connection]
) -> None:
    """What the reviewer saw, statement by statement: the resume locks the paused deliveries,
    the delete has the notification and wants its delivery, the refresh wants the notification."""
    enabling, deleting = conns
    destination = await stored(store, client_ids()[0], enabled=False)
    first, second = await paused_to(store, destination, 2)
    await begin_delete(deleting, first)
    await enabling.execute("BEGIN")
    resumed = await enabling.fetchrow(query("resume_destination"), destination)
    assert sorted(resumed["touched"]) == [first, second]

    async def refresh() -> None:
        await enabling.execute(query("refresh_status"), list(resumed["touched"]))
        await enabling.execute("COMMIT")

    refreshing = asyncio.create_task(refresh())
    await someone_waits_on_a_lock(store)
    results = await asyncio.gather(
        refreshing, finish_delete(deleting, first), return_exceptions=True
    )
    aborted = [r for r in results if isinstance(r, asyncpg.DeadlockDetectedError)]
    assert len(aborted) == 1, results
    for c in conns:
        if c.is_in_transaction():
            await c.execute("ROLLBACK")


async def test_enabling_locks_the_notifications_first_and_waits_for_a_delete(
    store: Store, conns: list[asyncpg.Connection]
) -> None:
    """The same interleaving through Destinations.update: the enable waits on the notification
    before it touches a delivery, so the delete finishes, and the enable then resumes only what
    is still paused (the deleted notification's delivery stays cancelled)."""
    deleting = conns[0]
    destination = await stored(store, client_ids()[0], enabled=False)
    first, second, third = await paused_to(store, destination, 3)
    await begin_delete(deleting, second)

    def merge(row: dict[str, Any]) -> Fields:
        return Fields(row["name"], row["description"], row["config"], row["topics"], None, True)

    enabling = asyncio.create_task(Destinations(store.pool).update(destination, None, merge))
    await someone_waits_on_a_lock(store)
    # The enable holds none of the deliveries: the delete's second half does not wait for it
    # (in the old order it did, and the enable's refresh waited for the delete).
    await deleting.execute("SET lock_timeout = '500ms'")
    await finish_delete(deleting, second)
    row = await enabling
    assert row is not None and row["enabled"] is True
    assert await statuses(store, [first, second, third]) == [
        ("pending", ["pending"]),
        ("cancelled", ["cancelled"]),
        ("pending", ["pending"]),
    ]
    queued = await store.pool.fetch(
        "SELECT notification_id FROM outbox WHERE notification_id = ANY ($1::uuid[])"
        " ORDER BY due_at",
        [first, second, third],
    )
    assert [r["notification_id"] for r in queued] == [first, third]


async def test_both_sides_of_a_deadlock_get_through_with_the_retry(
    store: Store, conns: list[asyncpg.Connection]
) -> None:
    """Two connections, opposite orders, each transaction run through retry_deadlocks: one is
    aborted the first time round and runs again after the other committed; both succeed."""
    notification = (await paused_to(store, await stored(store, client_ids()[0]), 1))[0]
    a, b = conns
    a_holds, b_holds = asyncio.Event(), asyncio.Event()
    runs = {"a": 0, "b": 0}

    def transaction(
        conn: asyncpg.Connection,
        name: str,
        first: str,
        then: str,
        mine: asyncio.Event,
        theirs: asyncio.Event,
    ) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            runs[name] += 1
            async with conn.transaction():
                await conn.execute(first, notification)
                if runs[name] == 1:  # the first time round, meet the other side in step
                    mine.set()
                    await theirs.wait()
                await conn.execute(then, notification)
            return name

        return run

    lock_notification = "UPDATE notifications SET updated_at = now() WHERE id = $1"
    lock_delivery = "UPDATE deliveries SET updated_at = now() WHERE notification_id = $1"
    results = await asyncio.gather(
        retry_deadlocks(transaction(a, "a", lock_notification, lock_delivery, a_holds, b_holds)),
        retry_deadlocks(transaction(b, "b", lock_delivery, lock_notification, b_holds, a_holds)),
    )
    assert results == ["a", "b"]
    assert sorted(runs.values()) == [1, 2]  # exactly one side was aborted, and ran again
