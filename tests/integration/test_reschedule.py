"""PATCH /api/notifications/{id} on the real Postgres (and, end to end, the real process with
webhook receivers on loopback): moved later or earlier with its outbox rows, null meaning now,
never early and never at the old time, 409 once a delivery started, 404 across clients, 403
for read-only clients, 422 for bad input with nothing changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from notifi.model import DeliveryJob, DeliveryStatus
from notifi.store import Finished, Store
from tests.support.api import api_client, creds

pytestmark = pytest.mark.timeout(120)

HOOK = {"type": "webhook", "url": "https://example.com/hook"}
ALPHA = creds("alpha")


def iso(when: datetime) -> str:
    return when.isoformat()


def ahead(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.fixture
async def api(store: Store) -> AsyncIterator[TestClient]:
    async with api_client(store) as client:
        yield client


async def submit(api: TestClient, headers: dict[str, str] = ALPHA, **fields: object) -> dict:
    body = {"body": "b", "destinations": [HOOK, HOOK], **fields}
    r = await api.post("/api/notifications", json=body, headers=headers)
    assert r.status == 202, await r.text()
    return await r.json()


async def patch(api: TestClient, nid: str, body: object, headers: dict[str, str] = ALPHA):
    return await api.patch(f"/api/notifications/{nid}", json=body, headers=headers)


async def outbox(store: Store, nid: str) -> list[asyncpg.Record]:
    return await store.pool.fetch(
        "SELECT position, attempt, due_at, partition_key FROM outbox "
        "WHERE notification_id = $1 ORDER BY position",
        UUID(nid),
    )


async def test_moved_later_with_its_outbox_rows(api: TestClient, store: Store) -> None:
    doc = await submit(api, scheduled_at=iso(ahead(3600)))
    await store.route([UUID(doc["id"])], 0.5)  # the router's step: two outbox rows
    [before, _] = await outbox(store, doc["id"])
    new_time = ahead(7200).replace(microsecond=0)
    r = await patch(api, doc["id"], {"scheduled_at": iso(new_time)})
    assert r.status == 200, await r.text()
    moved = await r.json()
    assert moved["id"] == doc["id"] and moved["status"] == "scheduled"
    assert datetime.fromisoformat(moved["scheduled_at"]) == new_time
    for d in moved["destinations"]:
        assert d["status"] == "scheduled"
        assert datetime.fromisoformat(d["next_attempt_at"]) == new_time
    rows = await outbox(store, doc["id"])
    assert [(r["position"], r["attempt"], r["due_at"]) for r in rows] == [
        (0, 1, new_time),
        (1, 1, new_time),
    ]
    assert {r["partition_key"] for r in rows} == {before["partition_key"]}  # the same poller


async def test_moved_earlier_and_null_means_now(api: TestClient, store: Store) -> None:
    doc = await submit(api, scheduled_at=iso(ahead(3600)))
    await store.route([UUID(doc["id"])], 0.5)
    earlier = ahead(60)
    r = await patch(api, doc["id"], {"scheduled_at": iso(earlier)})
    assert r.status == 200
    assert [row["due_at"] for row in await outbox(store, doc["id"])] == [earlier, earlier]
    before = datetime.now(UTC)
    r = await patch(api, doc["id"], {"scheduled_at": None})
    after = datetime.now(UTC)
    assert r.status == 200
    moved = await r.json()
    assert moved["scheduled_at"] is None and moved["status"] == "pending"
    assert [d["status"] for d in moved["destinations"]] == ["pending", "pending"]
    for row in await outbox(store, doc["id"]):
        assert before <= row["due_at"] <= after  # due now: the next poll takes it


async def test_a_past_time_means_now_and_an_unrouted_one_is_routed_at_the_new_time(
    api: TestClient, store: Store
) -> None:
    doc = await submit(api, scheduled_at=iso(ahead(3600)))  # not routed yet: no outbox rows
    r = await patch(api, doc["id"], {"scheduled_at": iso(ahead(-60))})
    assert r.status == 200 and (await r.json())["status"] == "pending"
    assert await outbox(store, doc["id"]) == []  # the router reads the new time when it routes
    now_jobs, later = await store.route([UUID(doc["id"])], 0.5)
    assert len(now_jobs) == 2 and later == 0


async def test_moved_earlier_while_its_job_is_on_the_bus_gets_an_outbox_row(
    api: TestClient, store: Store
) -> None:
    doc = await submit(api, scheduled_at=iso(ahead(3600)))
    await store.route([UUID(doc["id"])], 0.5)
    async with store.claim_due(0, 1023, 7200, 10) as jobs:  # a poller published both
        assert len(jobs) == 2
    assert await outbox(store, doc["id"]) == []
    new_time = ahead(30)
    assert (await patch(api, doc["id"], {"scheduled_at": iso(new_time)})).status == 200
    # Due sooner than the published jobs: queued again for the new time (the claim stops a
    # second send); moved later instead, the worker holding the job sends it back itself.
    assert [r["due_at"] for r in await outbox(store, doc["id"])] == [new_time, new_time]
    later = ahead(5400)
    assert (await patch(api, doc["id"], {"scheduled_at": iso(later)})).status == 200
    assert [r["due_at"] for r in await outbox(store, doc["id"])] == [later, later]


async def record_attempt(store: Store, nid: str, status: DeliveryStatus, position: int = 1) -> None:
    now = datetime.now(UTC)
    job = DeliveryJob(UUID(nid), position, 1, now)
    retry_at = now + timedelta(seconds=60) if status is DeliveryStatus.DELIVERING else None
    await store.record(
        [
            Finished(
                job,
                status,
                started_at=now,
                duration_ms=3.0,
                outcome="retry" if status is DeliveryStatus.DELIVERING else "delivered",
                status_code=503 if status is DeliveryStatus.DELIVERING else 200,
                next_attempt_at=retry_at,
            )
        ],
        [],
    )


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (DeliveryStatus.DELIVERING, "destination 1 is already delivering"),
        (DeliveryStatus.DELIVERED, "destination 1 is already delivered"),
    ],
)
async def test_409_once_a_delivery_started(
    api: TestClient, store: Store, status: DeliveryStatus, reason: str
) -> None:
    doc = await submit(api)
    await record_attempt(store, doc["id"], status)
    r = await patch(api, doc["id"], {"scheduled_at": iso(ahead(600))})
    assert r.status == 409 and r.content_type == "application/problem+json"
    problem = await r.json()
    assert reason in problem["detail"]
    assert problem["destination"] == {"position": 1, "status": str(status)}
    assert problem["type"].endswith("/already-started")
    stored = await store.get(UUID(doc["id"]), None)
    assert stored["scheduled_at"] is None  # nothing moved


async def test_409_when_attempted_or_leased_though_still_pending(
    api: TestClient, store: Store
) -> None:
    doc = await submit(api)
    nid = UUID(doc["id"])
    await store.claim_in_postgres([(nid, 0)], 30, tokens=["i/1:t:0:7"])  # a worker is at it
    r = await patch(api, doc["id"], {"scheduled_at": iso(ahead(600))})
    assert r.status == 409 and "destination 0 is being attempted now" in (await r.json())["detail"]
    await store.pool.execute(
        "UPDATE deliveries SET claimed_until = NULL WHERE notification_id = $1", nid
    )
    await store.pool.execute(
        "INSERT INTO delivery_attempts (notification_id, position, attempt, started_at, "
        "duration_ms, outcome) VALUES ($1, 0, 1, now(), 1, 'retry')",
        nid,
    )
    r = await patch(api, doc["id"], {"scheduled_at": iso(ahead(600))})
    assert r.status == 409 and "has already been attempted" in (await r.json())["detail"]


async def test_409_for_a_deleted_notification(api: TestClient) -> None:
    doc = await submit(api, scheduled_at=iso(ahead(600)))
    assert (await api.delete(f"/api/notifications/{doc['id']}", headers=ALPHA)).status == 200
    r = await patch(api, doc["id"], {"scheduled_at": None})
    assert r.status == 409 and "deleted" in (await r.json())["detail"]


async def test_tenancy_and_read_only(api: TestClient, store: Store) -> None:
    doc = await submit(api, scheduled_at=iso(ahead(600)))
    body = {"scheduled_at": iso(ahead(900))}
    for nid in (doc["id"], "0190f5c2-0000-7000-8000-000000000000", "not-a-uuid"):
        r = await patch(api, nid, body, headers=creds("beta"))  # another client's, unknown
        assert r.status == 404 and r.content_type == "application/problem+json", nid
    r = await patch(api, doc["id"], body, headers=creds("viewer"))
    assert r.status == 403
    r = await api.patch(f"/api/notifications/{doc['id']}", json=body)
    assert r.status == 401
    stored = await store.get(UUID(doc["id"]), None)
    assert stored["scheduled_at"] == datetime.fromisoformat(doc["scheduled_at"])
    r = await patch(api, doc["id"], body, headers=creds("root"))  # an admin may
    assert r.status == 200


BAD_PATCHES = [
    ({}, "/scheduled_at"),
    ({"scheduled_at": None, "title": "x"}, "/title"),
    ({"scheduled_at": "tomorrow"}, "/scheduled_at"),
    ({"scheduled_at": "2026-11-24T18:00:00"}, "/scheduled_at"),  # no offset
    ({"scheduled_at": "2026-11-24"}, "/scheduled_at"),
    ({"scheduled_at": 1764000000}, "/scheduled_at"),
    ({"scheduled_at": iso(ahead(400 * 86400))}, "/scheduled_at"),  # more than 366 days ahead
    ([], ""),
]


@pytest.mark.parametrize(("body", "pointer"), BAD_PATCHES)
async def test_422_for_bad_input_and_nothing_changes(
    api: TestClient, store: Store, body: object, pointer: str
) -> None:
    doc = await submit(api, scheduled_at=iso(ahead(600)))
    r = await patch(api, doc["id"], body)
    assert r.status == 422, await r.text()
    problem = await r.json()
    assert problem["errors"][0]["pointer"] == pointer, problem
    stored = await store.get(UUID(doc["id"]), None)
    assert stored["scheduled_at"] == datetime.fromisoformat(doc["scheduled_at"])


async def test_422_for_a_time_at_or_after_the_expiry(api: TestClient, store: Store) -> None:
    doc = await submit(api, scheduled_at=iso(ahead(60)), ttl=120)
    expires_at = datetime.fromisoformat(doc["expires_at"])
    for when in (expires_at, expires_at + timedelta(seconds=1)):
        r = await patch(api, doc["id"], {"scheduled_at": iso(when)})
        assert r.status == 422
        problem = await r.json()
        assert problem["errors"][0]["pointer"] == "/scheduled_at" and "expiry" in problem["detail"]
    stored = await store.get(UUID(doc["id"]), None)
    assert stored["scheduled_at"] == datetime.fromisoformat(doc["scheduled_at"])
    r = await patch(api, doc["id"], {"scheduled_at": iso(expires_at - timedelta(seconds=5))})
    assert r.status == 200


async def test_malformed_bodies(api: TestClient) -> None:
    doc = await submit(api, scheduled_at=iso(ahead(600)))
    path = f"/api/notifications/{doc['id']}"
    headers = {**ALPHA, "Content-Type": "application/json"}
    r = await api.patch(path, data=b"{nope", headers=headers)
    assert r.status == 400
    r = await api.patch(
        path, data=b"scheduled_at=now", headers={**ALPHA, "Content-Type": "text/plain"}
    )
    assert r.status == 415
