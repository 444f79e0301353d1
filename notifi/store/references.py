"""Stored destinations as notifications refer to them: by id, by name, or through a topic.

A request's references are looked up once (every id and name of a request or a whole bulk
together, `find`) before validation resolves them (notifi.api.validation); the accept then
writes the deliveries in the notification's transaction (`write_deliveries`), where the topic
expands in SQL and a destination disabled or deleted since the lookup is seen as it is now."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from notifi.model import DeliveryStatus, NewNotification, NotificationStatus
from notifi.store.sql import query

MAX_NAME_CHARS = 100  # as the named destination schema says


@dataclass(frozen=True, slots=True)
class StoredDestination:
    """What resolving a reference needs of a stored destination (no fields, no secret)."""

    id: UUID
    kind: str
    name: str | None = None

    def reference(self) -> dict[str, Any]:
        """What a delivery row holds of it: the worker reads the rest when it sends."""
        return {"type": self.kind, "destination_id": str(self.id)}


@dataclass(frozen=True, slots=True)
class StoredDestinations:
    """One client's stored destinations that a request refers to, by id and by name."""

    by_id: Mapping[UUID, StoredDestination] = field(default_factory=dict)
    by_name: Mapping[str, StoredDestination] = field(default_factory=dict)

    @classmethod
    def of(cls, found: Iterable[StoredDestination]) -> StoredDestinations:
        found = list(found)
        return cls({d.id: d for d in found}, {d.name: d for d in found if d.name is not None})


NONE = StoredDestinations()


def referenced(bodies: Iterable[Any], max_destinations: int) -> tuple[set[UUID], set[str]]:
    """The destination ids and names that request bodies (not validated yet) refer to, for
    the one lookup of a request. Anything malformed is skipped (a name with a NUL too, which
    Postgres cannot take): validation refuses it later with a pointer. A destinations list
    longer than validation allows is not read (it is refused anyway), which bounds what a
    hostile bulk can make the lookup carry."""
    ids: set[UUID] = set()
    names: set[str] = set()
    for body in bodies:
        listed = body.get("destinations") if isinstance(body, dict) else None
        if not isinstance(listed, list) or len(listed) > max_destinations:
            continue
        for given in listed:
            if not isinstance(given, dict):
                continue
            if isinstance(ref := given.get("destination_id"), str):
                with contextlib.suppress(ValueError):
                    ids.add(UUID(ref))
            name = given.get("name")
            # A NUL cannot be a Postgres text parameter: such a name is refused later (422).
            if isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and "\x00" not in name:
                names.add(name)
    return ids, names


async def find(
    pool: asyncpg.Pool, client_id: str, ids: Iterable[UUID], names: Iterable[str]
) -> StoredDestinations:
    """The client's own stored destinations among `ids` and `names`, in one query (none when
    nothing is referred to). An admin client is no exception: it refers to its own only."""
    ids, names = list(ids), list(names)
    if not ids and not names:
        return NONE
    rows = await pool.fetch(query("find_stored_destinations"), client_id, ids, names)
    return StoredDestinations.of(StoredDestination(r["id"], r["kind"], r["name"]) for r in rows)


def refers(n: NewNotification) -> bool:
    """Whether what is written for `n` may differ from its request (a topic, stored ones)."""
    return n.topic is not None or any("destination_id" in d for d in n.destinations)


def status_at_accept(statuses: Sequence[str], initial: str) -> str:
    """A new notification's status from its deliveries as written (as notifi_refresh_status
    would derive it): none at all is unmatched, only paused ones paused, otherwise what its
    schedule made it (`initial`) unless paused ones are mixed in (then pending, as the
    derived status says)."""
    if not statuses:
        return NotificationStatus.UNMATCHED
    if all(s == DeliveryStatus.PAUSED for s in statuses):
        return NotificationStatus.PAUSED
    if DeliveryStatus.PAUSED in statuses:
        return NotificationStatus.PENDING
    return initial


@dataclass(frozen=True, slots=True)
class Written:
    """What the accept wrote for a notification that `refers`: its status, its deliveries."""

    status: str
    deliveries: tuple[dict[str, Any], ...]


def listed_columns(
    fresh: Sequence[NewNotification], initial: Sequence[str]
) -> tuple[list[Any], ...]:
    """The parameters of insert_deliveries: each listed destination of `fresh` (with its
    notification's `initial` status), in request order."""
    rows = [
        (n, s, i, d)
        for n, s in zip(fresh, initial, strict=True)
        for i, d in enumerate(n.destinations)
    ]
    return (
        [n.id for n, _, _, _ in rows],
        [i for _, _, i, _ in rows],
        [d["type"] for _, _, _, d in rows],
        [orjson.dumps(d).decode() for _, _, _, d in rows],
        [s for _, s, _, _ in rows],
        [n.due_at() for n, _, _, _ in rows],
    )


async def write_deliveries(
    conn: asyncpg.Connection, fresh: Sequence[NewNotification], initial: Sequence[str]
) -> dict[UUID, Written]:
    """Writes the deliveries of newly inserted notifications (`initial`: each one's status
    from its schedule) in one statement, topics expanded, and settles the status of those
    whose deliveries made it differ (unmatched, paused). Returns what was written for those
    that `refers` (the others are written as their request says). When something refers, the
    statement holds every destination it uses FOR KEY SHARE until the caller's transaction
    ends, so an enable waits for the paused rows to be committed (insert_deliveries_expanded);
    the plain path takes no lock."""
    pairs = list(zip(fresh, initial, strict=True))
    rows = [(n, s, i, d) for n, s in pairs for i, d in enumerate(n.destinations)]
    listed = listed_columns(fresh, initial)
    if not any(refers(n) for n in fresh):  # the common case, written as before topics
        await conn.execute(query("insert_deliveries"), *listed)
        return {}
    topical = [(n, s) for n, s in pairs if n.topic is not None]
    written = await conn.fetch(
        query("insert_deliveries_expanded"),
        *listed,
        [_destination_id(d) for _, _, _, d in rows],
        [n.client_id for n, _, _, _ in rows],
        [n.id for n, _ in topical],
        [n.client_id for n, _ in topical],
        [n.topic for n, _ in topical],
        [s for _, s in topical],
        [n.due_at() for n, _ in topical],
    )
    by_id: dict[UUID, list[dict[str, Any]]] = {n.id: [] for n in fresh if refers(n)}
    for r in written:
        if (mine := by_id.get(r["notification_id"])) is not None:
            mine.append(dict(r))
    result: dict[UUID, Written] = {}
    settled: list[tuple[UUID, str]] = []
    for n, scheduled in pairs:
        if (mine := by_id.get(n.id)) is None:
            continue
        mine.sort(key=lambda d: d["position"])
        status = status_at_accept([d["status"] for d in mine], scheduled)
        result[n.id] = Written(status, tuple(mine))
        if status != scheduled:
            settled.append((n.id, status))
    if settled:
        await conn.execute(
            query("settle_accepted"), [i for i, _ in settled], [s for _, s in settled]
        )
    return result


def _destination_id(destination: Mapping[str, Any]) -> UUID | None:
    ref = destination.get("destination_id")
    return UUID(ref) if ref is not None else None
