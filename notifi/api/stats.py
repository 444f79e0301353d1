"""GET /api/stats: the console's overview in one call. Notifications created since a time, by
status; how many are due soon; the slowest destination servers. The caller's own figures (an
admin's: every client's). The route is app.py's: it reads the request and calls `overview`, so
this module needs nothing of app.py.

Bounds, so the call stays cheap at any table size: `since` at most `MAX_WINDOW` back (the
counts are a range of an id index: ids are UUIDv7, time-ordered, and exact), due soon looks at
no more than the `DUE_READ` soonest scheduled deliveries of the service (`due_soon_truncated`
says the bound was reached: the count is then a lower bound), and the slowest hosts come from
at most the newest `ATTEMPTS_READ` attempts of the service (`attempts_truncated` says when
that bound cut the window short, so the figures cover less than the window). Both bounds are
applied before the client filter, so what one client costs does not depend on its share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from notifi.api.dates import instant
from notifi.api.schemas import NOTIFICATION_STATUSES
from notifi.errors import InvalidParameter, InvalidRequest
from notifi.store import Stats, Store

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=14)
# A client computing "14 days ago" is a little further back by the time the request arrives.
WINDOW_GRACE = timedelta(minutes=5)
DEFAULT_DUE_WITHIN_S = 3600
MAX_DUE_WITHIN_S = int(MAX_WINDOW.total_seconds())
ATTEMPTS_READ = 100_000
DUE_READ = 100_000  # due deliveries looked at, soonest first
SLOWEST_HOSTS = 5
PARAMS = frozenset({"since", "due_within"})


@dataclass(frozen=True, slots=True)
class StatsQuery:
    since: datetime
    due_within_s: int


def parse(params: Mapping[str, str], now: datetime) -> StatsQuery:
    """The query's parameters, or a problem: 400 when one cannot be read (or is unknown), 422
    when it is read but out of range."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise InvalidParameter(f"unknown query parameter {unknown[0]!r}", pointer=unknown[0])
    since = now - DEFAULT_WINDOW
    if (text := params.get("since")) is not None:
        since = instant(text, "since", "since", InvalidParameter)
        if since > now:
            raise InvalidRequest("since must not be in the future", pointer="since")
        if since < now - MAX_WINDOW - WINDOW_GRACE:
            raise InvalidRequest(
                f"since must be at most {MAX_WINDOW.days} days back", pointer="since"
            )
    due_within_s = DEFAULT_DUE_WITHIN_S
    if (text := params.get("due_within")) is not None:
        try:
            due_within_s = int(text)
        except ValueError:
            raise InvalidParameter(
                "due_within must be an integer (seconds)", pointer="due_within"
            ) from None
        if not 0 <= due_within_s <= MAX_DUE_WITHIN_S:
            raise InvalidRequest(
                f"due_within must be between 0 and {MAX_DUE_WITHIN_S} seconds",
                pointer="due_within",
            )
    return StatsQuery(since, due_within_s)


def resource(found: Stats, asked: StatsQuery, now: datetime) -> dict[str, Any]:
    """The response body: every status counted (zero included), hosts slowest first."""
    by_status = {status: found.by_status.get(status, 0) for status in NOTIFICATION_STATUSES}
    return {
        "since": asked.since.isoformat(),
        "until": now.isoformat(),
        "accepted": sum(found.by_status.values()),
        "by_status": by_status,
        "due_within": asked.due_within_s,
        "due_soon": found.due_soon,
        "due_soon_truncated": found.due_soon_truncated,
        "slowest_hosts": [
            {
                "host": h["host"],
                "attempts": h["attempts"],
                "failures": h["failures"],
                "p50_ms": round(h["p50_ms"], 1),
                "p95_ms": round(h["p95_ms"], 1),
                "last_failure_at": (
                    h["last_failure_at"].isoformat() if h["last_failure_at"] else None
                ),
            }
            for h in found.slowest_hosts
        ],
        "attempts_read_limit": ATTEMPTS_READ,
        "attempts_truncated": found.attempts_truncated,
    }


async def overview(
    store: Store, client_id: str | None, params: Mapping[str, str], now: datetime
) -> dict[str, Any]:
    """GET /api/stats for `client_id` (None: every client's, an admin)."""
    asked = parse(params, now)
    found = await store.stats(
        client_id,
        asked.since,
        asked.due_within_s,
        attempts_limit=ATTEMPTS_READ,
        hosts=SLOWEST_HOSTS,
        due_limit=DUE_READ,
    )
    return resource(found, asked, now)
