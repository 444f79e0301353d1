"""GET /api/stats on the real Postgres: the figures right on a known data set, tenancy (own
figures; an admin's are everyone's), bad parameters as problem documents, and the queries'
plans on an index (also the list's destination_type filter)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from aiohttp.test_utils import TestClient, TestServer

from notifi.api.app import ApiContext, build_app
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.auth import TokenAuth
from notifi.store import Store, id_at
from notifi.store.sql import query

CLIENTS = [
    {"id": "alpha", "secret_sha256": hashlib.sha256(b"alpha-secret").hexdigest()},
    {"id": "beta", "secret_sha256": hashlib.sha256(b"beta-secret").hexdigest()},
    {"id": "root", "secret_sha256": hashlib.sha256(b"root-secret").hexdigest(), "admin": True},
]
NOW = datetime.now(UTC)
_serial = iter(range(1, 1 << 30))


def creds(cid: str) -> dict[str, str]:
    return {"CF-Access-Client-Id": cid, "CF-Access-Client-Secret": f"{cid}-secret"}


def uid(when: datetime) -> UUID:
    """A UUIDv7-shaped id made at `when` (unique within the test)."""
    return UUID(int=id_at(when).int | (0x7 << 76) | next(_serial))


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, as Postgres's percentile_cont."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[TestClient]:
    async def refuse(_):  # nothing is submitted here: the data set is written directly
        raise AssertionError("no submissions in this test")

    async def ready() -> dict[str, bool]:
        return {"ok": True}

    ctx = ApiContext(
        store=store,
        validator=Validator(Limits(5, 50, 500, 500), {}, 1024),
        submit=refuse,
        ready=ready,
        default_page_size=50,
        max_page_size=200,
        auth=TokenAuth(CLIENTS),
    )
    async with TestClient(TestServer(build_app(ctx))) as c:
        yield c


class DataSet:
    """Writes notifications, deliveries and attempts as the service would have left them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def notification(
        self,
        client: str,
        status: str,
        created: datetime,
        destinations: list[tuple[dict, str]],
        *,
        due: datetime | None = None,
        deleted: bool = False,
    ) -> UUID:
        nid = uid(created)
        await self.store.pool.execute(
            "INSERT INTO notifications (id, client_id, body, partition_key, status, created_at,"
            " updated_at, scheduled_at, deleted_at) VALUES ($1, $2, 'b', 0, $3, $4, $4, $5, $6)",
            nid,
            client,
            status,
            created,
            due,
            created if deleted else None,
        )
        for position, (destination, delivery_status) in enumerate(destinations):
            await self.store.pool.execute(
                "INSERT INTO deliveries (notification_id, position, kind, destination, status,"
                " next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6)",
                nid,
                position,
                destination["type"],
                destination,  # the pool's jsonb codec encodes it
                delivery_status,
                due or created,
            )
        return nid

    async def attempts(
        self, nid: UUID, position: int, started: datetime, runs: list[tuple[float, str]]
    ) -> None:
        for attempt, (duration_ms, outcome) in enumerate(runs, 1):
            await self.store.pool.execute(
                "INSERT INTO delivery_attempts (notification_id, position, attempt, started_at,"
                " duration_ms, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
                nid,
                position,
                attempt,
                started + timedelta(seconds=attempt),
                duration_ms,
                outcome,
            )


A = {"type": "webhook", "url": "https://A.example/hook?x=1"}  # a.example:443
B = {"type": "webhook", "url": "http://user:pw@b.example:8080/x"}  # b.example:8080
C = {"type": "slack", "url": "https://hooks.c.example/services/T"}  # hooks.c.example:443
MAIL = {"type": "email", "to": "ops@example.com"}  # email


async def known_data_set(store: Store) -> dict[str, list[float]]:
    """alpha: 3 delivered, 1 failed, 1 expired, 2 scheduled (30 min and 2 h ahead), 1 deleted
    but still scheduled, 1 delivered 3 days ago; beta: 2 delivered. Returns the attempt
    durations per host inside the default 24-hour window."""
    ds = DataSet(store)
    hour_ago = NOW - timedelta(hours=1)
    a_runs = [(10, "delivered"), (20, "delivered"), (30, "retry"), (40, "delivered")]
    first = await ds.notification("alpha", "delivered", hour_ago, [(A, "delivered")])
    await ds.attempts(first, 0, hour_ago, a_runs)
    second = await ds.notification(
        "alpha", "delivered", hour_ago, [(A, "delivered"), (B, "delivered"), (MAIL, "delivered")]
    )
    await ds.attempts(second, 0, hour_ago, [(1000, "delivered")])
    await ds.attempts(second, 1, hour_ago, [(5, "delivered"), (7, "delivered")])
    await ds.attempts(second, 2, hour_ago, [(50, "delivered")])
    await ds.notification("alpha", "delivered", hour_ago, [(B, "delivered")])
    failed = await ds.notification("alpha", "failed", hour_ago, [(B, "failed")])
    await ds.attempts(failed, 0, hour_ago, [(3, "permanent")])
    await ds.notification("alpha", "expired", hour_ago, [(A, "expired")])
    await ds.notification(
        "alpha", "scheduled", hour_ago, [(A, "scheduled")], due=NOW + timedelta(minutes=30)
    )
    await ds.notification(
        "alpha", "scheduled", hour_ago, [(A, "scheduled")], due=NOW + timedelta(hours=2)
    )
    await ds.notification(  # deleted: its delivery cancelled, as DELETE leaves it
        "alpha",
        "cancelled",
        hour_ago,
        [(A, "cancelled")],
        due=NOW + timedelta(minutes=10),
        deleted=True,
    )
    old = NOW - timedelta(days=3)
    ancient = await ds.notification("alpha", "delivered", old, [(B, "delivered")])
    await ds.attempts(ancient, 0, old, [(9999, "delivered")])
    for _ in range(2):
        nid = await ds.notification("beta", "delivered", hour_ago, [(C, "delivered")])
        await ds.attempts(nid, 0, hour_ago, [(2000, "delivered")])
    return {
        "a.example:443": [10, 20, 30, 40, 1000],
        "b.example:8080": [5, 7, 3],
        "email": [50],
        "hooks.c.example:443": [2000, 2000],
    }


def expected_hosts(durations: dict[str, list[float]], hosts: list[str]) -> list[dict]:
    rows = [
        {
            "host": h,
            "attempts": len(durations[h]),
            "p50_ms": round(percentile(durations[h], 0.5), 1),
            "p95_ms": round(percentile(durations[h], 0.95), 1),
        }
        for h in hosts
    ]
    return sorted(rows, key=lambda r: (-r["p95_ms"], r["host"]))


async def test_stats_on_a_known_data_set(client: TestClient, store: Store) -> None:
    durations = await known_data_set(store)
    r = await client.get("/api/stats", headers=creds("alpha"))
    assert r.status == 200, await r.text()
    doc = await r.json()
    assert doc["accepted"] == 8
    assert doc["by_status"] == {
        "scheduled": 2,
        "pending": 0,
        "delivering": 0,
        "delivered": 3,
        "partially_failed": 0,
        "failed": 1,
        "cancelled": 1,
        "expired": 1,
        "paused": 0,
        "unmatched": 0,
    }
    assert (
        doc["due_within"] == 3600 and doc["due_soon"] == 1
    )  # not the deleted (cancelled) one, nor 2 h
    hosts = doc["slowest_hosts"]
    mine = ["a.example:443", "b.example:8080", "email"]
    assert [{k: h[k] for k in ("host", "attempts", "p50_ms", "p95_ms")} for h in hosts] == (
        expected_hosts(durations, mine)
    )
    by_host = {h["host"]: h for h in hosts}
    assert by_host["a.example:443"]["failures"] == 1
    assert by_host["b.example:8080"]["failures"] == 1
    assert by_host["email"]["failures"] == 0 and by_host["email"]["last_failure_at"] is None
    failed_at = datetime.fromisoformat(by_host["b.example:8080"]["last_failure_at"])
    assert abs(failed_at - (NOW - timedelta(hours=1) + timedelta(seconds=1))) < timedelta(
        milliseconds=1
    )
    assert doc["attempts_truncated"] is False and doc["due_soon_truncated"] is False
    # The bound on due deliveries looked at: reached, the count is a lower bound.
    found = await store.stats(
        "alpha", NOW - timedelta(hours=1), 10800, attempts_limit=10, hosts=5, due_limit=1
    )
    assert found.due_soon_truncated and found.due_soon == 1

    # A longer window takes in the old notification and its slow attempt; a longer horizon the
    # later schedule.
    since = (NOW - timedelta(days=4)).isoformat()
    r = await client.get(
        "/api/stats", params={"since": since, "due_within": "10800"}, headers=creds("alpha")
    )
    doc = await r.json()
    assert doc["accepted"] == 9 and doc["by_status"]["delivered"] == 4
    assert doc["due_soon"] == 2
    assert doc["slowest_hosts"][0]["host"] == "b.example:8080"
    assert doc["slowest_hosts"][0]["attempts"] == 4


async def test_stats_tenancy(client: TestClient, store: Store) -> None:
    durations = await known_data_set(store)
    beta = await (await client.get("/api/stats", headers=creds("beta"))).json()
    assert beta["accepted"] == 2 and beta["by_status"]["delivered"] == 2
    assert beta["due_soon"] == 0
    assert [h["host"] for h in beta["slowest_hosts"]] == ["hooks.c.example:443"]
    root = await (await client.get("/api/stats", headers=creds("root"))).json()
    assert root["accepted"] == 10 and root["by_status"]["delivered"] == 5
    assert root["due_soon"] == 1
    every = ["a.example:443", "b.example:8080", "email", "hooks.c.example:443"]
    assert [h["host"] for h in root["slowest_hosts"]] == [
        h["host"] for h in expected_hosts(durations, every)
    ]
    assert (await client.get("/api/stats")).status == 401


async def test_stats_top_five_and_the_attempts_bound(client: TestClient, store: Store) -> None:
    ds = DataSet(store)
    started = NOW - timedelta(minutes=5)
    for i in range(7):
        hook = {"type": "webhook", "url": f"https://h{i}.example/"}
        nid = await ds.notification("alpha", "delivered", started, [(hook, "delivered")])
        await ds.attempts(nid, 0, started, [(float(i * 10), "delivered")])
    doc = await (await client.get("/api/stats", headers=creds("alpha"))).json()
    assert [h["host"] for h in doc["slowest_hosts"]] == [
        f"h{i}.example:443" for i in (6, 5, 4, 3, 2)
    ]
    # The bound: reading only the newest 3 attempts (all in the window) says so.
    found = await store.stats("alpha", NOW - timedelta(hours=1), 60, attempts_limit=3, hosts=5)
    assert found.attempts_truncated
    assert sum(h["attempts"] for h in found.slowest_hosts) == 3
    found = await store.stats("alpha", NOW - timedelta(minutes=1), 60, attempts_limit=100, hosts=5)
    assert not found.attempts_truncated and found.slowest_hosts == []


@pytest.mark.parametrize(
    ("params", "status", "pointer"),
    [
        ({"since": "yesterday"}, 400, "since"),
        ({"since": "2026-11-24T10:00:00"}, 400, "since"),  # no offset
        ({"since": "2026-11-24"}, 400, "since"),
        ({"since": (NOW - timedelta(days=15)).isoformat()}, 422, "since"),
        ({"since": (NOW + timedelta(hours=1)).isoformat()}, 422, "since"),
        ({"due_within": "soon"}, 400, "due_within"),
        ({"due_within": "1.5"}, 400, "due_within"),
        ({"due_within": "-1"}, 422, "due_within"),
        ({"due_within": str(15 * 86400)}, 422, "due_within"),
        ({"until": "x"}, 400, "until"),
    ],
)
async def test_stats_bad_parameters(
    client: TestClient, params: dict[str, str], status: int, pointer: str
) -> None:
    r = await client.get("/api/stats", params=params, headers=creds("alpha"))
    assert r.status == status, await r.text()
    assert r.content_type == "application/problem+json"
    assert (await r.json())["errors"][0]["pointer"] == pointer


async def test_stats_edges_are_accepted(client: TestClient) -> None:
    now = datetime.now(UTC)  # not the module's NOW: a long suite would age it past the edge
    for params in (
        {"since": (now - timedelta(days=14)).isoformat(), "due_within": "0"},
        {"since": (now - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")},
        {"due_within": str(14 * 86400)},
    ):
        r = await client.get("/api/stats", params=params, headers=creds("alpha"))
        assert r.status == 200, (params, await r.text())


async def test_list_by_destination_type(client: TestClient, store: Store) -> None:
    await known_data_set(store)

    async def ids(who: str, kind: str) -> int:
        r = await client.get(
            "/api/notifications", params={"destination_type": kind}, headers=creds(who)
        )
        assert r.status == 200, await r.text()
        return len((await r.json())["items"])

    assert await ids("alpha", "email") == 1
    assert await ids("alpha", "webhook") == 8  # the deleted one is hidden
    assert await ids("alpha", "slack") == 0
    assert await ids("beta", "slack") == 2
    assert await ids("root", "slack") == 2 and await ids("root", "webhook") == 8
    r = await client.get(
        "/api/notifications", params={"destination_type": "sms"}, headers=creds("alpha")
    )
    assert r.status == 422 and r.content_type == "application/problem+json"
    assert (await r.json())["errors"][0]["pointer"] == "destination_type"
    # Paging with the filter keeps it in the next link.
    r = await client.get(
        "/api/notifications",
        params={"destination_type": "webhook", "limit": "2"},
        headers=creds("alpha"),
    )
    assert "destination_type=webhook" in (await r.json())["next"]


def plan_nodes(plan: dict) -> list[dict]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += plan_nodes(child)
    return out


async def test_stats_and_type_filter_plans_stay_on_indexes(store: Store) -> None:
    """A few thousand rows over 20 days; with sequential scans priced out, every query still
    finds an index path (none scans a whole table), and the list's type filter walks newest
    first without a sort."""
    await store.pool.execute(
        """
        WITH n AS (
            INSERT INTO notifications (id, client_id, body, partition_key, status, created_at,
                                       updated_at, scheduled_at)
            SELECT (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint - g * 360000), 12,
                         '0') || '7' || substr(md5(g::text), 1, 19))::uuid,
                   'c' || (g % 4), 'b', g % 1024,
                   (ARRAY['delivered', 'failed', 'scheduled'])[1 + g % 3],
                   now() - g * interval '6 minutes', now(), now() + g * interval '1 minute'
              FROM generate_series(1, 5000) AS g
            RETURNING id, status, scheduled_at
        ), d AS (
            INSERT INTO deliveries (notification_id, position, kind, destination, status,
                                    next_attempt_at)
            SELECT id, 0, 'webhook', '{"type": "webhook", "url": "https://x.example/"}',
                   status, scheduled_at
              FROM n
            RETURNING notification_id
        )
        INSERT INTO delivery_attempts (notification_id, position, attempt, started_at,
                                       duration_ms, outcome)
        SELECT notification_id, 0, 1, now() - random() * interval '20 days', random() * 100,
               'delivered'
          FROM d
        """
    )
    await store.pool.execute("ANALYZE notifications, deliveries, delivery_attempts")
    since = NOW - timedelta(days=1)
    cases = {
        "counts": (query("stats_counts"), "c1", id_at(since)),
        "counts (admin)": (query("stats_counts_all"), id_at(since)),
        "due soon": (query("stats_due_soon"), 3600.0, "c1", 100_000),
        "due soon (admin)": (query("stats_due_soon"), 3600.0, None, 100_000),
        "slowest hosts": (query("stats_slowest_hosts"), since, "c1", 100_000, 5),
        "by type": (
            query("list_notifications_of_type"),
            "c1",
            False,
            None,
            50,
            0,
            UUID(int=(1 << 128) - 1),
            UUID(int=0),
            "webhook",
        ),
    }
    report = []
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        for name, (sql, *args) in cases.items():
            raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
            doc = json.loads(raw)[0]
            nodes = plan_nodes(doc["Plan"])
            kinds = [n["Node Type"] for n in nodes]
            assert "Seq Scan" not in kinds, (name, kinds)
            assert any(k.startswith(("Index", "Bitmap Index")) for k in kinds), (name, kinds)
            if name == "by type":
                assert "Sort" not in kinds, (name, kinds)
            report.append(f"{name}: {' > '.join(kinds)} {doc['Execution Time']:.2f} ms")
    print("\n" + "\n".join(report))
