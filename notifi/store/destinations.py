"""The stored destinations (issue 12) in Postgres: the rows clients manage through the API, and
the deliveries a delete cancels, an enable resumes and a recover re-drives, each in one
transaction with the notifications' derived status refreshed (tried again when Postgres breaks
a deadlock with a notification's delete or the recorder). Its SQL is destinations.sql.

Every read and write is scoped by client: `client_id` None is an admin's (every client's)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import asyncpg

from notifi.errors import NotifiError
from notifi.store import ID_MAX
from notifi.store.deadlocks import retry_deadlocks
from notifi.store.sql import query

DISABLED_BY_CLIENT = "disabled by the client"
NAME_INDEX = "destinations_client_name"


class NameTaken(NotifiError):
    """This client already has a destination with this name."""


class TooMany(NotifiError):
    """This client already has as many destinations as it may (api.max_stored_destinations)."""


@dataclass(frozen=True, slots=True)
class Fields:
    """What a client sets on a destination (a create, or a PATCH merged with the row)."""

    name: str | None
    description: str
    config: dict[str, Any]  # the type's fields, without the secret
    topics: list[str]
    rate_limit: float | None
    enabled: bool


@dataclass(frozen=True, slots=True)
class NewDestination:
    id: UUID
    client_id: str
    kind: str
    secret: str | None
    fields: Fields


class RotateOutcome(StrEnum):
    ROTATED = "rotated"
    NOT_FOUND = "not_found"
    NOT_WEBHOOK = "not_webhook"  # only webhooks sign


@dataclass(frozen=True, slots=True)
class Rotated:
    outcome: RotateOutcome
    previous_until: datetime | None = None


ZERO_STATS = {
    "attempts_24h": 0,
    "successes_24h": 0,
    "last_success_at": None,
    "last_failure_at": None,
}


class Destinations:
    """The destinations table over the store's pool (its jsonb codec included)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, new: NewDestination, max_per_client: int = 10_000) -> dict[str, Any]:
        """The stored row, with zero stats; `NameTaken` when the client has the name, `TooMany`
        when it has `max_per_client` destinations already."""
        f = new.fields
        try:
            row = await self.pool.fetchrow(
                query("insert_destination"),
                new.id,
                new.client_id,
                f.name,
                f.description,
                new.kind,
                f.config,
                new.secret,
                f.topics,
                f.rate_limit,
                f.enabled,
                DISABLED_BY_CLIENT,
                max_per_client,
            )
        except asyncpg.UniqueViolationError as exc:
            raise _name_taken(exc, f.name) from None
        if row is None:
            raise TooMany(f"a client may store at most {max_per_client} destinations")
        return {**dict(row), "stats": dict(ZERO_STATS)}

    async def get(self, destination_id: UUID, client_id: str | None) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(query("get_destination"), destination_id, client_id)
            if row is None:
                return None
            return (await _with_stats(conn, [row]))[0]

    async def list(
        self,
        client_id: str | None,
        *,
        topic: str | None,
        enabled: bool | None,
        limit: int,
        offset: int,
        before: UUID = ID_MAX,
    ) -> list[dict[str, Any]]:
        """Newest first, ids below `before`; `topic` matches its subscribers and "*"."""
        async with self.pool.acquire() as conn:
            if client_id is None:
                rows = await conn.fetch(
                    query("list_all_destinations"), before, topic, enabled, limit, offset
                )
            else:
                rows = await conn.fetch(
                    query("list_destinations"), client_id, before, topic, enabled, limit, offset
                )
            return await _with_stats(conn, rows)

    async def update(
        self,
        destination_id: UUID,
        client_id: str | None,
        merge: Callable[[dict[str, Any]], Fields],
    ) -> dict[str, Any] | None:
        """A PATCH: `merge` turns the locked row into its new fields, or raises (the API's
        problem), which rolls everything back. Enabling resumes the paused deliveries in the
        same transaction, after the row lock. None when there is no such destination. A
        deadlock aborts and runs it again, `merge` included."""
        return await retry_deadlocks(lambda: self._update(destination_id, client_id, merge))

    async def _update(
        self,
        destination_id: UUID,
        client_id: str | None,
        merge: Callable[[dict[str, Any]], Fields],
    ) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(query("lock_destination"), destination_id, client_id)
                if row is None:
                    return None
                f = merge(dict(row))
                try:
                    row = await conn.fetchrow(
                        query("update_destination"),
                        destination_id,
                        f.name,
                        f.description,
                        f.config,
                        f.topics,
                        f.rate_limit,
                        f.enabled,
                        DISABLED_BY_CLIENT,
                    )
                except asyncpg.UniqueViolationError as exc:
                    raise _name_taken(exc, f.name) from None
                if f.enabled:
                    await conn.execute(query("lock_paused_notifications"), destination_id)
                    resumed = await conn.fetchrow(query("resume_destination"), destination_id)
                    await _refresh(conn, resumed["touched"])
            return (await _with_stats(conn, [row]))[0]

    async def delete(self, destination_id: UUID, client_id: str | None) -> bool:
        """Removes the destination, cancelling what is undelivered to it; False if none."""
        return await retry_deadlocks(lambda: self._delete(destination_id, client_id))

    async def _delete(self, destination_id: UUID, client_id: str | None) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            # The row lock first, in a statement of its own: it waits for an accept writing a
            # delivery to this destination, and the delete's next statement sees that row.
            if await conn.fetchrow(query("lock_destination"), destination_id, client_id) is None:
                return False
            row = await conn.fetchrow(query("delete_destination"), destination_id, client_id)
            await _refresh(conn, row["touched"])
            return bool(row["found"])

    async def rotate_secret(
        self, destination_id: UUID, client_id: str | None, secret: str, overlap_s: float
    ) -> Rotated:
        """`secret` signs from now; the previous one still signs for `overlap_s` seconds."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(query("lock_destination"), destination_id, client_id)
            if row is None:
                return Rotated(RotateOutcome.NOT_FOUND)
            if row["kind"] != "webhook":
                return Rotated(RotateOutcome.NOT_WEBHOOK)
            until = await conn.fetchval(
                query("rotate_destination_secret"), destination_id, client_id, secret, overlap_s
            )
            return Rotated(RotateOutcome.ROTATED, until)

    async def recover(
        self,
        destination_id: UUID,
        client_id: str | None,
        since: datetime,
        until: datetime,
        *,
        dry_run: bool,
    ) -> int | None:
        """Re-drives the deliveries to the destination that ended failed in [since, until)
        (a dry run only counts them); how many, or None when there is no such destination."""
        return await retry_deadlocks(
            lambda: self._recover(destination_id, client_id, since, until, dry_run=dry_run)
        )

    async def _recover(
        self,
        destination_id: UUID,
        client_id: str | None,
        since: datetime,
        until: datetime,
        *,
        dry_run: bool,
    ) -> int | None:
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(query("hold_destination"), destination_id, client_id) is None:
                return None
            if dry_run:
                return await conn.fetchval(query("count_recoverable"), destination_id, since, until)
            await conn.execute(
                query("lock_recoverable_notifications"), destination_id, since, until
            )
            row = await conn.fetchrow(query("recover_destination"), destination_id, since, until)
            await _refresh(conn, row["touched"])
            return row["reopened"]


async def _refresh(conn: asyncpg.Connection, ids: Sequence[UUID]) -> None:
    if ids:
        await conn.execute(query("refresh_status"), list(ids))


async def _with_stats(
    conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
) -> list[dict[str, Any]]:
    if not rows:
        return []
    found = await conn.fetch(query("destination_stats"), [r["id"] for r in rows])
    stats = {s["id"]: {k: v for k, v in s.items() if k != "id"} for s in found}
    return [{**dict(r), "stats": stats.get(r["id"], dict(ZERO_STATS))} for r in rows]


def _name_taken(exc: asyncpg.UniqueViolationError, name: str | None) -> Exception:
    if exc.constraint_name == NAME_INDEX:
        return NameTaken(f"a destination named {name!r} exists already")
    return exc
