"""PATCH /api/notifications/{id} on the real Postgres (and, end to end, the real process with
webhook receivers on loopback): moved later or earlier with its outbox rows, null meaning now,
never early and never at the old time, 409 once a delivery started, 404 across clients, 403
for read-only clients, 422 for bad input with nothing changed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from notifi.model import DeliveryJob, DeliveryStatus
from notifi.store import Finished, Store
from tests.support.api import HOOK, ahead, creds, iso, running_notifi
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(120)

ALPHA = creds("alpha")


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


# -- end to end: the real process, a real receiver on loopback --------------------------------

# A poll interval of two seconds: the router publishes what is due within it at once (its job
# is on the bus, waiting in a worker), the rest waits in the outbox.
E2E_ENV = {
    "NOTIFI_POLLER__INTERVAL": "2.0",
    "NOTIFI_POLLER__LOOKAHEAD": "0",  # jobs due within one interval go out, the rest wait
    "NOTIFI_DELIVERY__RETRY_SCHEDULE": "[60]",
    "NOTIFI_DELIVERY__RETRY_JITTER": "0",
    "NOTIFI_DELIVERY__TIMEOUT": "2",
}


@pytest.fixture
async def e2e(settings_env: dict[str, str]) -> AsyncIterator[tuple[str, Receiver]]:
    receiver = await Receiver(script={"down": [503]}).start()
    try:
        async with running_notifi({**settings_env, **E2E_ENV}) as base:
            yield base, receiver
    finally:
        await receiver.stop()


async def e2e_submit(base: str, receiver: Receiver, path: str, **fields: object) -> dict:
    body = {"body": "b", "destinations": [{"type": "webhook", "url": receiver.url(path)}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/api/notifications", json={**body, **fields}) as r,
    ):
        assert r.status == 202, await r.text()
        return await r.json()


async def e2e_patch(base: str, nid: str, scheduled_at: datetime | None) -> aiohttp.ClientResponse:
    body = {"scheduled_at": None if scheduled_at is None else iso(scheduled_at)}
    async with (
        aiohttp.ClientSession() as http,
        http.patch(f"{base}/api/notifications/{nid}", json=body) as r,
    ):
        await r.read()
        return r


async def routed(dsn: str, nid: str, *, in_outbox: bool, timeout_s: float = 10.0) -> None:
    """Waits until the router handled the notification: its rows in the outbox, or (not
    in_outbox) its job published to the bus."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            row = await conn.fetchrow(
                "SELECT routed_at IS NOT NULL AS routed, "
                "(SELECT count(*) FROM outbox WHERE notification_id = $1) AS rows "
                "FROM notifications WHERE id = $1",
                UUID(nid),
            )
            if row is not None and row["routed"] and (row["rows"] > 0) == in_outbox:
                return
            assert time.monotonic() < deadline, "not routed in time"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def arrivals(receiver: Receiver, path: str, count: int = 1, timeout_s: float = 20.0):
    await receiver.wait_for(path, count, timeout_s)
    return [x.at for x in receiver.received[path]]


async def test_moved_later_in_the_outbox_never_arrives_before_the_new_time(
    e2e: tuple[str, Receiver], dsn: str
) -> None:
    base, receiver = e2e
    old = ahead(5)
    doc = await e2e_submit(base, receiver, "later", scheduled_at=iso(old))
    await routed(dsn, doc["id"], in_outbox=True)
    new = ahead(7)
    assert (await e2e_patch(base, doc["id"], new)).status == 200
    [at] = await arrivals(receiver, "later")
    assert at >= new.timestamp()  # not at the old time, never before the new one
    await asyncio.sleep(0.5)
    assert receiver.count("later") == 1


async def test_moved_later_after_its_job_was_published_is_not_sent_at_the_old_time(
    e2e: tuple[str, Receiver], dsn: str
) -> None:
    base, receiver = e2e
    old = ahead(1.8)  # within the poll interval: the router publishes the job at once
    doc = await e2e_submit(base, receiver, "published", scheduled_at=iso(old))
    await routed(dsn, doc["id"], in_outbox=False)
    new = ahead(4)
    assert (await e2e_patch(base, doc["id"], new)).status == 200
    [at] = await arrivals(receiver, "published")
    assert at >= new.timestamp()
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
        metrics = await r.text()
    moved = [line for line in metrics.splitlines() if line.startswith("notifi_delivery_jobs_moved")]
    assert moved and float(moved[0].split()[-1]) >= 1, metrics  # the worker sent it back
    await asyncio.sleep(0.5)
    assert receiver.count("published") == 1


async def test_moved_earlier_arrives_at_the_new_time_not_early(
    e2e: tuple[str, Receiver], dsn: str
) -> None:
    base, receiver = e2e
    doc = await e2e_submit(base, receiver, "earlier", scheduled_at=iso(ahead(120)))
    await routed(dsn, doc["id"], in_outbox=True)
    new = ahead(2.5)
    assert (await e2e_patch(base, doc["id"], new)).status == 200
    [at] = await arrivals(receiver, "earlier")
    assert new.timestamp() <= at < new.timestamp() + 5  # on time (generous on a loaded box)


async def test_null_means_now(e2e: tuple[str, Receiver], dsn: str) -> None:
    base, receiver = e2e
    doc = await e2e_submit(base, receiver, "now", scheduled_at=iso(ahead(120)))
    await routed(dsn, doc["id"], in_outbox=True)
    before = time.time()
    r = await e2e_patch(base, doc["id"], None)
    assert r.status == 200
    [at] = await arrivals(receiver, "now")
    assert before <= at < before + 10


async def test_409_once_an_attempt_was_made(e2e: tuple[str, Receiver]) -> None:
    base, receiver = e2e
    doc = await e2e_submit(base, receiver, "down")  # answered 503: retried in a minute
    await arrivals(receiver, "down")
    deadline = time.monotonic() + 10
    while True:  # the attempt is recorded just after it arrives
        async with (
            aiohttp.ClientSession() as http,
            http.patch(
                f"{base}/api/notifications/{doc['id']}", json={"scheduled_at": iso(ahead(600))}
            ) as r,
        ):
            problem = await r.json()
        if r.status == 409 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert r.status == 409, problem
    assert "destination 0" in problem["detail"] and problem["destination"]["position"] == 0
