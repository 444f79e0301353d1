"""A store holding one connection (notifi.store.held) for a batch writer: its calls share one
backend, an error gives the connection back to the pool, a killed backend costs one failed call,
and closing the store gives every held connection back (the pool's close waits for them)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from notifi.store import Store


async def _backend(store: Store) -> int:
    return await store.pool.fetchval("SELECT pg_backend_pid()")


async def test_calls_share_one_connection_taken_from_the_pool(store: Store) -> None:
    held = store.holding()
    first = await _backend(held)
    assert [await _backend(held) for _ in range(3)] == [first] * 3
    async with held.pool.acquire() as con:
        assert await con.fetchval("SELECT pg_backend_pid()") == first
    assert store.pool.get_size() - store.pool.get_idle_size() == 1  # taken, not given back


async def test_an_error_gives_the_connection_back_and_the_next_call_works(store: Store) -> None:
    held = store.holding()
    await _backend(held)
    with pytest.raises(asyncpg.DivisionByZeroError):
        await held.pool.fetchval("SELECT 1 / 0")
    assert store.pool.get_size() == store.pool.get_idle_size()  # back in the pool
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with held.pool.acquire() as con, con.transaction():
            await con.execute("CREATE TEMP TABLE held_t (x int)")
            await con.fetchval("SELECT 1 / 0")
    assert await held.pool.fetchval("SELECT 2") == 2
    async with held.pool.acquire() as con:
        assert not con.is_in_transaction()


@pytest.mark.parametrize("noticed", [True, False])
async def test_a_killed_backend_costs_at_most_one_failed_call(store: Store, noticed: bool) -> None:
    held = store.holding()
    pid = await _backend(held)
    assert await store.pool.fetchval("SELECT pg_terminate_backend($1)", pid)
    if noticed:  # asyncpg has seen the connection close (and given it back itself)
        await asyncio.sleep(0.2)
    try:
        again = await _backend(held)
    except Exception:  # whichever asyncpg raises for a connection it has not seen close yet
        assert not noticed
        again = await _backend(held)
    assert again != pid  # another connection, from the pool
    assert store.pool.get_size() - store.pool.get_idle_size() == 1


async def test_closing_the_store_gives_the_held_connections_back(dsn: str) -> None:
    store = await Store.open(dsn, min_size=1, max_size=3)
    writers = [store.holding(), store.holding()]
    for held in writers:
        await _backend(held)
    async with asyncio.timeout(5):  # asyncpg's close would wait for them
        await store.close()
