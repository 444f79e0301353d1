"""The Postgres store: every read and write of Notifi's system of record, batched where the hot
paths need it (the delivery role's in notifi.store.delivering). The SQL itself lives in the
named blocks of the `*.sql` files beside this one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from notifi import lifecycle
from notifi.model import DeliveryJob, DeliveryStatus, NewNotification
from notifi.store.deadlocks import retry_deadlocks
from notifi.store.delivering import DeliveryStore
from notifi.store.held import HeldConnection
from notifi.store.migrate import ensure_database, migrate
from notifi.store.recording import Finished
from notifi.store.references import Written, listed_columns, refers, write_deliveries
from notifi.store.sql import query

__all__ = [
    "AcceptOutcome",
    "Accepted",
    "Finished",
    "RescheduleOutcome",
    "Rescheduled",
    "Stats",
    "Store",
    "ensure_database",
    "migrate",
]

ID_MIN = UUID(int=0)
ID_MAX = UUID(int=(1 << 128) - 1)


def id_at(when: datetime) -> UUID:
    """The smallest UUIDv7 made at `when`: its first 48 bits are the Unix time in ms."""
    ms = min(max(int(when.timestamp() * 1000), 0), (1 << 48) - 1)  # the range a UUIDv7 holds
    return UUID(int=ms << 80)


class AcceptOutcome(StrEnum):
    CREATED = "created"
    REPLAYED = "replayed"  # same client, same Idempotency-Key, same body
    CONFLICT = "conflict"  # same client, same Idempotency-Key, different body


@dataclass(frozen=True, slots=True)
class Accepted:
    outcome: AcceptOutcome
    id: UUID
    # Set when what was written may differ from the request (a topic, stored destinations):
    # the status and the delivery rows as written, for the answer to show.
    status: str | None = None
    deliveries: tuple[dict[str, Any], ...] | None = None


class RescheduleOutcome(StrEnum):
    MOVED = "moved"
    NOT_FOUND = "not_found"  # no such notification (for this client)
    DELETED = "deleted"  # deleted: its deliveries were cancelled
    STARTED = "started"  # a delivery has started (or ended): `started` says which and why
    AFTER_EXPIRY = "after_expiry"  # the new time is at or after the notification's expiry


@dataclass(frozen=True, slots=True)
class Rescheduled:
    outcome: RescheduleOutcome
    started: lifecycle.Started | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    """The overview's figures, as the store read them (notifi.api.stats shapes them)."""

    by_status: dict[str, int]
    due_soon: int
    due_soon_truncated: bool  # the bound on due deliveries looked at was reached
    slowest_hosts: list[dict[str, Any]]
    attempts_truncated: bool  # the bound on attempts read cut the window short


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection goes back to the pool as it is: asyncpg's default reset (RESET ALL, UNLISTEN,
    CLOSE ALL, advisory unlocks) is one more round trip per release, and Notifi changes no
    session state on pooled connections (settings are SET LOCAL, no LISTEN, no cursors, the
    migration lock is taken on a connection of its own). An open transaction is still rolled
    back by the pool before this runs."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


class Store(DeliveryStore):
    """Every read and write of the system of record; the delivery role's are its base's."""

    @classmethod
    async def open(
        cls, dsn: str, *, min_size: int = 2, max_size: int = 10, command_timeout: float = 30.0
    ) -> Store:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            init=_init_connection,
            reset=_keep_session,
        )
        return cls(pool)

    def __init__(self, pool: asyncpg.Pool | HeldConnection) -> None:
        super().__init__(pool)
        self._holders: list[HeldConnection] = []

    def holding(self) -> Store:
        """This store on one connection of its pool, held across calls (notifi.store.held): for
        one actor that makes one call after another. The connection goes back at `close`."""
        held = HeldConnection(self.pool)
        self._holders.append(held)
        return Store(held)

    async def close(self) -> None:
        for held in self._holders:  # the pool's close waits for every connection taken
            await held.release()
        await self.pool.close()

    async def ping(self) -> bool:
        try:
            return await self.pool.fetchval("SELECT true", timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False

    # -- api --------------------------------------------------------------------------

    async def accept(self, batch: Sequence[NewNotification]) -> list[Accepted]:
        """Writes a batch of notifications with their deliveries in one transaction, topics
        expanded to the stored destinations subscribed to them (notifi.store.references)."""
        if not any(n.idempotency_key is not None or refers(n) for n in batch):
            return await self._accept_plain(batch)
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = {
                r["id"]
                for r in await conn.fetch(
                    query("insert_notifications"), *_notification_columns(batch)
                )
            }
            fresh = [n for n in batch if n.id in inserted]
            written: dict[UUID, Written] = {}
            if fresh:
                initial = [_initial_status(n) for n in fresh]
                written = await write_deliveries(conn, fresh, initial)
            replays = [n for n in batch if n.id not in inserted]
            existing = {}
            if replays:
                found = await conn.fetch(
                    query("find_idempotent"),
                    [n.client_id for n in replays],
                    [n.idempotency_key for n in replays],
                )
                existing = {(r["client_id"], r["idempotency_key"]): r for r in found}
        results = []
        for n in batch:
            if n.id in inserted:
                w = written.get(n.id)
                if w is None:
                    results.append(Accepted(AcceptOutcome.CREATED, n.id))
                else:
                    results.append(Accepted(AcceptOutcome.CREATED, n.id, w.status, w.deliveries))
                continue
            row = existing[(n.client_id, n.idempotency_key)]
            same = row["request_hash"] == n.request_hash
            outcome = AcceptOutcome.REPLAYED if same else AcceptOutcome.CONFLICT
            results.append(Accepted(outcome, row["id"]))
        return results

    async def _accept_plain(self, batch: Sequence[NewNotification]) -> list[Accepted]:
        """`accept` of a batch with no idempotency key and no reference: one statement."""
        initial = [_initial_status(n) for n in batch]
        await self.pool.execute(
            query("accept_plain"),
            *_notification_columns(batch),
            *listed_columns(batch, initial),
        )
        return [Accepted(AcceptOutcome.CREATED, n.id) for n in batch]

    async def get(self, notification_id: UUID, client_id: str | None) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(query("get_notification"), notification_id, client_id)
            if row is None:
                return None
            return (await self._with_deliveries(conn, [row]))[0]

    async def list(
        self,
        client_id: str | None,
        *,
        deleted: bool,
        status: str | None,
        limit: int,
        offset: int,
        before: UUID = ID_MAX,
        since: UUID = ID_MIN,
        destination_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first, ids in [since, before); client_id None lists every client's. With
        `destination_type`, only notifications with a delivery of that kind (own queries, so
        the plain list's plans stay as they are)."""
        typed = () if destination_type is None else (destination_type,)
        suffix = "" if destination_type is None else "_of_type"
        async with self.pool.acquire() as conn:
            if client_id is None:
                rows = await conn.fetch(
                    query(f"list_all_notifications{suffix}"),
                    deleted,
                    status,
                    limit,
                    offset,
                    before,
                    since,
                    *typed,
                )
            else:
                rows = await conn.fetch(
                    query(f"list_notifications{suffix}"),
                    client_id,
                    deleted,
                    status,
                    limit,
                    offset,
                    before,
                    since,
                    *typed,
                )
            return await self._with_deliveries(conn, rows)

    async def stats(
        self,
        client_id: str | None,
        since: datetime,
        due_within_s: float,
        *,
        attempts_limit: int,
        hosts: int,
        due_limit: int = 100_000,
    ) -> Stats:
        """The overview's figures (notifi.api.stats): notifications created since `since` by
        status, how many are due within `due_within_s`, and the slowest destination servers
        among the newest `attempts_limit` attempts started since `since`. client_id None:
        every client's. At most `due_limit` due deliveries are looked at."""
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            # The correlated lookups make the planner's cost estimates large, which would
            # switch on JIT compilation: ~250 ms of it for queries that run in tens of ms.
            await conn.execute("SET LOCAL jit = off")
            if client_id is None:
                counts = await conn.fetch(query("stats_counts_all"), id_at(since))
            else:
                counts = await conn.fetch(query("stats_counts"), client_id, id_at(since))
            due = await conn.fetchrow(query("stats_due_soon"), due_within_s, client_id, due_limit)
            slowest = await conn.fetch(
                query("stats_slowest_hosts"), since, client_id, attempts_limit, hosts
            )
            if slowest:
                truncated = bool(slowest[0]["truncated"])
            else:
                truncated = bool(
                    await conn.fetchval(query("stats_attempts_truncated"), since, attempts_limit)
                )
        return Stats(
            by_status={r["status"]: r["count"] for r in counts},
            due_soon=due["due_soon"],
            due_soon_truncated=due["truncated"],
            slowest_hosts=[dict(r) for r in slowest],
            attempts_truncated=truncated,
        )

    async def _with_deliveries(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
    ) -> list[dict[str, Any]]:
        found = await conn.fetch(query("deliveries_of"), [r["id"] for r in rows])
        by_id: dict[UUID, list[dict[str, Any]]] = {}
        for d in found:
            by_id.setdefault(d["notification_id"], []).append(dict(d))
        return [{**dict(r), "deliveries": by_id.get(r["id"], [])} for r in rows]

    async def delete(self, notification_id: UUID, client_id: str | None) -> bool:
        """Marks it deleted and cancels what is undelivered. It locks the notification before
        its deliveries, the recorder the other way round: a deadlock is tried again."""
        return await retry_deadlocks(lambda: self._delete(notification_id, client_id))

    async def _delete(self, notification_id: UUID, client_id: str | None) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(query("delete_notification"), notification_id, client_id)
            if found is None:
                return False
            await conn.execute(query("refresh_status"), [notification_id])
            return True

    async def reschedule(
        self,
        notification_id: UUID,
        client_id: str | None,
        scheduled_at: datetime | None,
        now: datetime,
    ) -> Rescheduled:
        """Moves a notification none of whose deliveries has started to `scheduled_at` (None:
        now), outbox rows included, in one transaction; or says why not. A deadlock with a
        concurrent DELETE (which locks in the other order) is tried again."""
        return await retry_deadlocks(
            lambda: self._reschedule(notification_id, client_id, scheduled_at, now)
        )

    async def _reschedule(
        self,
        notification_id: UUID,
        client_id: str | None,
        scheduled_at: datetime | None,
        now: datetime,
    ) -> Rescheduled:
        async with self.pool.acquire() as conn, conn.transaction():
            deliveries = await conn.fetch(
                query("reschedule_deliveries"), notification_id, client_id
            )
            if not deliveries:
                return Rescheduled(RescheduleOutcome.NOT_FOUND)
            n = await conn.fetchrow(query("reschedule_notification"), notification_id)
            if n is None:  # removed by retention between the two statements
                return Rescheduled(RescheduleOutcome.NOT_FOUND)
            if n["deleted_at"] is not None:
                return Rescheduled(RescheduleOutcome.DELETED)
            if (found := lifecycle.started(deliveries)) is not None:
                return Rescheduled(RescheduleOutcome.STARTED, started=found)
            due = lifecycle.due_at(scheduled_at, now)
            if n["expires_at"] is not None and due >= n["expires_at"]:
                return Rescheduled(RescheduleOutcome.AFTER_EXPIRY, expires_at=n["expires_at"])
            await conn.execute(query("reschedule"), notification_id, scheduled_at, due)
            await conn.execute(query("refresh_status"), [notification_id])
            return Rescheduled(RescheduleOutcome.MOVED, expires_at=n["expires_at"])

    async def attempts(self, notification_id: UUID) -> list[asyncpg.Record]:
        return await self.pool.fetch(query("attempts_of"), notification_id)

    async def replay(self, notification_id: UUID, client_id: str | None) -> int | None:
        """Re-queues failed and cancelled deliveries; None when there is no such notification."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(query("replay"), notification_id, client_id)
            if not row["found"]:
                return None
            if row["reopened"]:
                await conn.execute(query("refresh_status"), [notification_id])
            return row["reopened"]

    # -- router and poller ------------------------------------------------------------

    async def route(self, ids: Sequence[UUID], horizon_s: float) -> tuple[list[DeliveryJob], int]:
        """Routes accepted notifications once: the jobs due within `horizon_s`, and how many
        went to the outbox for later."""
        rows = await self.pool.fetch(query("route"), list(ids), horizon_s)
        now = [DeliveryJob(r[0], r[1], r[2], r[3]) for r in rows if r["due_now"]]
        return now, len(rows) - len(now)

    @asynccontextmanager
    async def claim_due(
        self, lo: int, hi: int, horizon_s: float, limit: int
    ) -> AsyncIterator[list[DeliveryJob]]:
        """Due outbox rows of a partition range, removed when the block exits without error."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(query("claim_due"), lo, hi, horizon_s, limit)
            yield [DeliveryJob(r[0], r[1], r[2], r[3]) for r in rows]

    async def oldest_due(self, lo: int, hi: int) -> datetime | None:
        return await self.pool.fetchval(query("oldest_due"), lo, hi)

    async def backstop(self, lo: int, hi: int, grace_s: float, limit: int) -> tuple[int, int]:
        """Re-routes what nobody routed and re-queues open deliveries whose job was lost."""
        async with self.pool.acquire() as conn:
            unrouted = await conn.fetchval(query("backstop_unrouted"), lo, hi, grace_s, limit)
            stuck = await conn.fetchval(query("backstop_stuck"), lo, hi, grace_s, limit)
        return unrouted, stuck

    async def expire_idempotency_keys(
        self, lo: int, hi: int, retention_s: float, limit: int
    ) -> int:
        status = await self.pool.execute(
            query("expire_idempotency_keys"), lo, hi, retention_s, limit
        )
        return int(status.split()[-1])


def _notification_columns(batch: Sequence[NewNotification]) -> tuple[list[Any], ...]:
    """The parameters of insert_notifications (and the first of accept_plain)."""
    return (
        [n.id for n in batch],
        [n.client_id for n in batch],
        [n.idempotency_key for n in batch],
        [n.request_hash for n in batch],
        [n.title for n in batch],
        [n.body for n in batch],
        [orjson.dumps(n.data).decode() for n in batch],
        [n.scheduled_at for n in batch],
        [n.partition_key for n in batch],
        [_initial_status(n) for n in batch],
        [n.created_at for n in batch],
        [n.expires_at for n in batch],
        [n.topic for n in batch],
    )


def _initial_status(n: NewNotification) -> str:
    scheduled = n.scheduled_at is not None and n.scheduled_at > n.created_at
    return DeliveryStatus.SCHEDULED if scheduled else DeliveryStatus.PENDING
