"""The delivery role's reads and writes of the store: the jobs of a fetched batch, what a
worker re-reads when a job comes due (batched across workers), the claims and delivered marks
while Redis is away, and the recorder's batches of outcomes (notifi.store.recording)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from notifi.batching import Coalescer
from notifi.model import DeliveryJob, DestinationState, NotificationState
from notifi.store import recording
from notifi.store.deadlocks import retry_deadlocks
from notifi.store.held import HeldConnection
from notifi.store.recording import Finished
from notifi.store.sql import query

Key = tuple[UUID, int]


def _keys(keys: Sequence[Key]) -> tuple[list[UUID], list[int]]:
    return [k[0] for k in keys], [k[1] for k in keys]


class DeliveryStore:
    """The delivery role's half of `notifi.store.Store` (its base)."""

    def __init__(self, pool: asyncpg.Pool | HeldConnection) -> None:
        self.pool = pool
        # Workers waking for many jobs due at one instant ask together: one query per turn.
        self.state_of = Coalescer(self._states)
        self.destination_state_of = Coalescer(self._destination_states)

    async def load_jobs(self, keys: Sequence[Key]) -> dict[Key, asyncpg.Record]:
        rows = await self.pool.fetch(query("load_jobs"), *_keys(keys))
        return {(r["notification_id"], r["position"]): r for r in rows}

    async def _states(self, ids: list[UUID]) -> list[NotificationState]:
        rows = {r["id"]: r for r in await self.pool.fetch(query("states_of"), ids)}
        gone = NotificationState(deleted=True)
        return [
            NotificationState(r["deleted"], r["scheduled_at"]) if (r := rows.get(i)) else gone
            for i in ids
        ]

    async def _destination_states(self, ids: list[UUID]) -> list[DestinationState]:
        rows = {r["id"]: r for r in await self.pool.fetch(query("destination_states_of"), ids)}
        gone = DestinationState(gone=True)
        return [
            DestinationState(False, r["enabled"], r["updated_at"]) if (r := rows.get(i)) else gone
            for i in ids
        ]

    async def claim_in_postgres(
        self, keys: Sequence[Key], ttl_s: float, *, tokens: Sequence[str | None] | None = None
    ) -> set[Key]:
        """Leases on the delivery rows (the claim while Redis is away), each held by its job
        token (notifi.claims); the keys claimed. At most one token per key."""
        held_by = list(tokens) if tokens is not None else [None] * len(keys)
        rows = await self.pool.fetch(query("claim_in_postgres"), *_keys(keys), held_by, ttl_s)
        return {(r[0], r[1]) for r in rows}

    async def mark_delivered_in_postgres(self, keys: Sequence[Key]) -> None:
        """Marks deliveries delivered at once (the delivered mark while Redis is away)."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(query("mark_delivered_in_postgres"), *_keys(keys))
            if rows:
                await conn.execute(query("refresh_status"), list({r[0] for r in rows}))

    async def delivered_in_postgres(self, keys: Sequence[Key]) -> set[Key]:
        rows = await self.pool.fetch(query("delivered_in_postgres"), *_keys(keys))
        return {(r[0], r[1]) for r in rows}

    async def record(
        self, finished: Sequence[Finished], requeued: Sequence[DeliveryJob]
    ) -> list[asyncpg.Record]:
        """Writes a batch of outcomes (and jobs sent back to the outbox) in one transaction,
        with what they change of stored destinations; returns the destinations this batch
        disabled (notifi.store.recording). It locks deliveries before their notifications, a
        notification's DELETE the other way round: a deadlock rolls the batch back whole, and
        it is written again."""
        return await retry_deadlocks(lambda: self._record(finished, requeued))

    async def _record(
        self, finished: Sequence[Finished], requeued: Sequence[DeliveryJob]
    ) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            if recording.one_statement(finished, requeued):  # no BEGIN and COMMIT round trips
                return await recording.record(conn, finished, requeued)
            async with conn.transaction():
                return await recording.record(conn, finished, requeued)
