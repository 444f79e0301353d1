"""The accept against an enable or a delete of a destination it uses, on the real Postgres: the
accept's transaction holds its destinations FOR KEY SHARE (references.sql,
insert_deliveries_expanded), so whichever commits second sees what the first wrote. Without
the lock a paused delivery written while an enable or a delete commits is seen by neither and
stays paused for ever. Each race is made by holding one transaction open before its commit;
the other must wait for it (the only timed assertions: that it has not finished)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import pytest

import notifi.store
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.model import NewNotification
from notifi.store import Accepted, AcceptOutcome, Store, references
from notifi.store.destinations import Destinations, Fields
from notifi.store.sql import query
from tests.support.stored_destinations import client_ids, deliveries, stored

pytestmark = pytest.mark.timeout(60)

WAITS_S = 0.5  # long enough for a lock that is not taken to have been granted


@pytest.fixture
def me() -> str:
    return client_ids()[0]


def enabled(row: dict[str, Any]) -> Fields:
    return Fields(
        row["name"], row["description"], row["config"], row["topics"], row["rate_limit"], True
    )


async def refer(store: Store, me: str, destination: UUID, how: str) -> NewNotification:
    """A notification that reaches `destination` by listing it or through its topic."""
    validator = Validator(Limits(5, 50, 500, 500), {}, 16)
    if how == "topic":
        return validator.notification({"body": "b", "topic": "deploys"}, me, None)
    found = await references.find(store.pool, me, [destination], [])
    body = {"body": "b", "destinations": [{"destination_id": str(destination)}]}
    return validator.notification(body, me, None, stored=found)


@asynccontextmanager
async def held_accept(
    store: Store, batch: list[NewNotification], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[asyncio.Task[list[Accepted]], asyncio.Event]]:
    """Store.accept of `batch` as a task, stopped after its deliveries are written and before
    its commit until the event is set."""
    written, release = asyncio.Event(), asyncio.Event()
    real = notifi.store.write_deliveries

    async def holding(*args: Any) -> Any:
        result = await real(*args)
        written.set()
        await release.wait()
        return result

    monkeypatch.setattr(notifi.store, "write_deliveries", holding)
    task = asyncio.create_task(store.accept(batch))
    try:
        await asyncio.wait_for(written.wait(), 10)
        yield task, release
    finally:
        release.set()
        await task


async def still_waiting(task: asyncio.Task[Any]) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(task), WAITS_S)
    except TimeoutError:
        return True
    return False


async def outbox_rows(store: Store, nid: UUID) -> int:
    return await store.pool.fetchval("SELECT count(*) FROM outbox WHERE notification_id = $1", nid)


@pytest.mark.parametrize("how", ["listed", "topic"])
async def test_an_enable_waits_for_the_accept_then_resumes_its_paused_delivery(
    store: Store, me: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    off = await stored(store, me, topics=["deploys"], enabled=False)
    n = await refer(store, me, off, how)
    async with held_accept(store, [n], monkeypatch) as (accept, release):
        enable = asyncio.create_task(Destinations(store.pool).update(off, me, enabled))
        assert await still_waiting(enable)
        release.set()
        (result,) = await accept
        assert (result.outcome, result.status) == (AcceptOutcome.CREATED, "paused")
        assert await enable is not None
    assert [(d["destination_id"], d["status"]) for d in await deliveries(store, n.id)] == [
        (off, "pending")
    ]
    assert await outbox_rows(store, n.id) == 1


@pytest.mark.parametrize("how", ["listed", "topic"])
async def test_a_delete_waits_for_the_accept_then_cancels_its_paused_delivery(
    store: Store, me: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    off = await stored(store, me, topics=["deploys"], enabled=False)
    n = await refer(store, me, off, how)
    async with held_accept(store, [n], monkeypatch) as (accept, release):
        delete = asyncio.create_task(Destinations(store.pool).delete(off, me))
        assert await still_waiting(delete)
        release.set()
        (result,) = await accept
        assert result.status == "paused"
        assert await delete is True
    assert [(d["destination_id"], d["status"]) for d in await deliveries(store, n.id)] == [
        (off, "cancelled")
    ]
    assert await outbox_rows(store, n.id) == 0


@asynccontextmanager
async def held(store: Store, *steps: Callable[[Any], Awaitable[Any]]) -> AsyncIterator[None]:
    """A transaction of `steps` (the destinations store's own queries) left open until the
    block ends, then committed."""
    async with store.pool.acquire() as conn, conn.transaction():
        for step in steps:
            await step(conn)
        yield


@pytest.mark.parametrize("how", ["listed", "topic"])
async def test_an_accept_waits_for_an_enable_then_writes_a_pending_delivery(
    store: Store, me: str, how: str
) -> None:
    """The other order: the enable (its lock, update and resume, as Destinations.update runs
    them) commits first; the accept waits for it and writes what the destination is now."""
    off = await stored(store, me, topics=["deploys"], enabled=False)
    n = await refer(store, me, off, how)
    row = dict(await store.pool.fetchrow("SELECT * FROM destinations WHERE id = $1", off))
    f = enabled(row)
    async with held(
        store,
        lambda c: c.fetchrow(query("lock_destination"), off, me),
        lambda c: c.fetchrow(
            query("update_destination"),
            off,
            f.name,
            f.description,
            f.config,
            f.topics,
            f.rate_limit,
            True,
            "",
        ),
        lambda c: c.fetchrow(query("resume_destination"), off),
    ):
        accept = asyncio.create_task(store.accept([n]))
        assert await still_waiting(accept)
    (result,) = await accept
    assert result.status == "pending"
    assert [(d["destination_id"], d["status"]) for d in await deliveries(store, n.id)] == [
        (off, "pending")
    ]


@pytest.mark.parametrize("how", ["listed", "topic"])
async def test_an_accept_waits_for_a_delete_then_leaves_the_destination_out(
    store: Store, me: str, how: str
) -> None:
    off = await stored(store, me, topics=["deploys"], enabled=False)
    n = await refer(store, me, off, how)
    async with held(store, lambda c: c.fetchrow(query("delete_destination"), off, me)):
        accept = asyncio.create_task(store.accept([n]))
        assert await still_waiting(accept)
    (result,) = await accept
    assert (result.status, result.deliveries) == ("unmatched", ())
    assert await deliveries(store, n.id) == []


async def test_an_inline_batch_takes_no_lock(store: Store, me: str) -> None:
    """Nothing stored and no topic: the plain path, which a held enable does not stop."""
    off = await stored(store, me, topics=["deploys"], enabled=False)
    validator = Validator(Limits(5, 50, 500, 500), {}, 16)
    inline = {"type": "webhook", "url": "https://example.com/h"}
    n = validator.notification({"body": "b", "destinations": [inline]}, me, None)
    async with held(store, lambda c: c.fetchrow(query("lock_destination"), off, me)):
        (result,) = await asyncio.wait_for(store.accept([n]), 10)
    assert result.outcome is AcceptOutcome.CREATED
