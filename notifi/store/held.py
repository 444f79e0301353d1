"""One pooled connection held by one actor across its calls. asyncpg's pool costs about 60 µs
of client CPU a query to acquire and release a connection (a timeout, a proxy, a shielded
release task): 184 against 123 µs a query on a held connection, measured alone. The accept
writer, the routers, the delivery consumer and the recorder each make one call a batch, one
after another, so each holds a connection (`Store.holding`) instead.

It answers what the store's methods ask of a pool (`fetch`, `fetchval`, `execute`,
`acquire`). Any error gives the connection back to the pool, which closes it if it is broken,
and the next call takes another: a Postgres restart costs what it cost with the pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg


class HeldConnection:
    """A connection of `pool`, taken at the first call and kept until an error or `release`.
    For one user at a time: an actor's own task, one call after another."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._con: Any = None  # the pool's connection proxy while held

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        async with self.acquire() as con:
            return await con.fetch(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        async with self.acquire() as con:
            return await con.fetchval(query, *args, **kwargs)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        async with self.acquire() as con:
            return await con.execute(query, *args, **kwargs)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """The held connection (taken from the pool if none is held); given back to the pool
        if the block raises."""
        if self._con is not None and not self._usable():
            self._con = None  # closed: asyncpg has given it back to the pool itself
        if self._con is None:
            self._con = await self._pool.acquire()
        try:
            yield self._con
        except BaseException:
            await self.release()
            raise

    async def release(self) -> None:
        """Gives the connection back to the pool (which closes a broken one)."""
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(asyncpg.InterfaceError):  # given back already, closed
                await self._pool.release(con)

    def _usable(self) -> bool:
        try:
            return not self._con.is_closed()
        except asyncpg.InterfaceError:  # a closed connection's proxy, released by asyncpg
            return False
