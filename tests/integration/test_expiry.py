"""Expiry on the real Postgres and Redis (and, end to end, the real process with webhook
receivers on loopback): expires_at and ttl at submit and in bulk, the 422s with pointers and
nothing written, and deliveries that end `expired` with no attempt after the expiry, whether
retried, scheduled or waiting in the outbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from actors.delivery import Work
from notifi.claims import Claims
from notifi.destinations.base import Outcome, SendResult
from notifi.model import Notification
from notifi.runtime import Mailbox
from notifi.store import Store
from tests.support.api import HOOK, ahead, creds, iso, running_notifi
from tests.support.delivery import delivery_tree
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(120)

ALPHA = creds("alpha")


async def count(store: Store) -> int:
    return await store.pool.fetchval("SELECT count(*) FROM notifications")


async def test_ttl_and_expires_at_are_stored_and_shown(api: TestClient, store: Store) -> None:
    before = datetime.now(UTC)
    r = await api.post(
        "/api/notifications", json={"body": "b", "destinations": [HOOK], "ttl": 60}, headers=ALPHA
    )
    assert r.status == 202
    doc = await r.json()
    expires_at = datetime.fromisoformat(doc["expires_at"])
    assert before + timedelta(seconds=60) <= expires_at <= datetime.now(UTC) + timedelta(seconds=60)
    stored = await store.get(UUID(doc["id"]), None)
    assert stored["expires_at"] == expires_at
    when = ahead(3600).replace(microsecond=0)
    body = {"body": "b", "destinations": [HOOK], "expires_at": iso(when)}
    doc = await (await api.post("/api/notifications", json=body, headers=ALPHA)).json()
    r = await api.get(f"/api/notifications/{doc['id']}", headers=ALPHA)
    assert datetime.fromisoformat((await r.json())["expires_at"]) == when
    r = await api.get("/api/notifications?status=expired", headers=ALPHA)
    assert r.status == 200 and (await r.json())["items"] == []


# Made when the test runs, not when the module is collected: times relative to now must not
# age while a long suite runs (a schedule 300 s ahead stops being after a 60 s ttl).
BAD: list[tuple[Callable[[], dict], str]] = [
    (lambda: {"expires_at": iso(ahead(-1))}, "/expires_at"),
    (lambda: {"expires_at": "tomorrow"}, "/expires_at"),
    (lambda: {"expires_at": "2026-11-24T18:00:00"}, "/expires_at"),  # no offset
    (lambda: {"expires_at": 1764000000}, "/expires_at"),
    (lambda: {"expires_at": iso(ahead(800 * 86400))}, "/expires_at"),
    (lambda: {"ttl": 0}, "/ttl"),
    (lambda: {"ttl": -5}, "/ttl"),
    (lambda: {"ttl": 1.5}, "/ttl"),
    (lambda: {"ttl": "60"}, "/ttl"),
    (lambda: {"ttl": True}, "/ttl"),
    (lambda: {"ttl": 367 * 86400}, "/ttl"),
    (lambda: {"ttl": 60, "expires_at": iso(ahead(60))}, "/ttl"),
    (lambda: {"ttl": 60, "scheduled_at": iso(ahead(300))}, "/scheduled_at"),
    (lambda: {"expires_at": iso(ahead(600)), "scheduled_at": iso(ahead(601))}, "/scheduled_at"),
]


@pytest.mark.parametrize(
    ("fields", "pointer"), BAD, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD)]
)
async def test_bad_expiry_is_a_422_with_a_pointer_and_nothing_written(
    api: TestClient, store: Store, fields: Callable[[], dict], pointer: str
) -> None:
    body = {"body": "b", "destinations": [HOOK], **fields()}
    r = await api.post("/api/notifications", json=body, headers=ALPHA)
    assert r.status == 422, await r.text()
    assert r.content_type == "application/problem+json"
    problem = await r.json()
    assert problem["errors"][0]["pointer"] == pointer, problem
    assert await count(store) == 0


async def test_a_schedule_before_the_expiry_is_fine(api: TestClient) -> None:
    body = {"body": "b", "destinations": [HOOK], "ttl": 60, "scheduled_at": iso(ahead(50))}
    assert (await api.post("/api/notifications", json=body, headers=ALPHA)).status == 202
    body = {"body": "b", "destinations": [HOOK], "ttl": 60, "scheduled_at": iso(ahead(-600))}
    assert (await api.post("/api/notifications", json=body, headers=ALPHA)).status == 202


async def test_bulk_takes_the_same_fields(api: TestClient, store: Store) -> None:
    items = [
        {"body": "ok", "destinations": [HOOK], "ttl": 30},
        {"body": "bad", "destinations": [HOOK], "ttl": 30, "expires_at": iso(ahead(30))},
        {"body": "late", "destinations": [HOOK], "ttl": 30, "scheduled_at": iso(ahead(60))},
    ]
    r = await api.post("/api/notifications/bulk", json={"notifications": items}, headers=ALPHA)
    assert r.status == 200
    result = await r.json()
    assert [i["status"] for i in result["items"]] == [202, 422, 422]
    assert result["items"][1]["problem"]["errors"][0]["pointer"] == "/notifications/1/ttl"
    assert result["items"][2]["problem"]["errors"][0]["pointer"] == "/notifications/2/scheduled_at"
    stored = await store.get(UUID(result["items"][0]["id"]), None)
    assert stored["expires_at"] is not None and await count(store) == 1


class CountingSender:
    def __init__(self) -> None:
        self.sent: list[datetime] = []

    async def send(self, destination: Mapping[str, Any], n: Notification) -> SendResult:
        self.sent.append(datetime.now(UTC))
        return SendResult(Outcome.DELIVERED, status_code=200, duration_ms=1.0)


async def test_a_scheduled_notification_whose_expiry_passed_first_is_never_attempted(
    api: TestClient, store: Store, redis: aioredis.Redis, key_prefix: str
) -> None:
    """The delivery side was away from before its time until after its expiry: when the poller
    and a worker come back to its outbox rows, they end it expired without an attempt."""
    body = {"body": "b", "destinations": [HOOK, HOOK], "ttl": 1, "scheduled_at": iso(ahead(0.5))}
    doc = await (await api.post("/api/notifications", json=body, headers=ALPHA)).json()
    nid = UUID(doc["id"])
    assert doc["status"] == "scheduled"
    now_jobs, later = await store.route([nid], 0.1)  # the router's step: both wait in the outbox
    assert now_jobs == [] and later == 2
    expires_at = datetime.fromisoformat(doc["expires_at"])
    await asyncio.sleep(max((expires_at - datetime.now(UTC)).total_seconds(), 0) + 0.1)
    async with store.claim_due(0, 1023, 0.1, 10) as jobs:  # the poller's step
        assert len(jobs) == 2
    sender = CountingSender()
    claims = Claims(redis, store, prefix=key_prefix, claim_ttl_s=30, delivered_ttl_s=60)
    work: Mailbox = Mailbox("work", 10)
    supervisor = delivery_tree(store, claims, sender, work)
    running = asyncio.create_task(supervisor.run())
    rows = await store.load_jobs([j.key for j in jobs])
    acks = []
    for job in jobs:
        acked = asyncio.Event()
        acks.append(acked)
        await work.put(Work(job, rows[job.key], f"t-{job.position}", acked.set, datetime.now(UTC)))
    await asyncio.wait_for(asyncio.gather(*(a.wait() for a in acks)), 10)
    supervisor.stop()
    assert (await running).ok
    assert sender.sent == []
    stored = await store.get(nid, None)
    assert stored["status"] == "expired"
    assert [(d["status"], d["attempts"]) for d in stored["deliveries"]] == [("expired", 0)] * 2
    assert await store.attempts(nid) == []
    r = await api.get(f"/api/notifications/{doc['id']}", headers=ALPHA)
    shown = await r.json()
    assert shown["status"] == "expired"
    assert [d["next_attempt_at"] for d in shown["destinations"]] == [None, None]
    r = await api.get("/api/notifications?status=expired", headers=ALPHA)
    assert [n["id"] for n in (await r.json())["items"]] == [doc["id"]]


# -- end to end: the real process, a real receiver on loopback --------------------------------

E2E_ENV = {
    "NOTIFI_POLLER__INTERVAL": "0.2",
    "NOTIFI_DELIVERY__RETRY_SCHEDULE": "[" + ", ".join(["0.3"] * 30) + "]",
    "NOTIFI_DELIVERY__RETRY_JITTER": "0",
    "NOTIFI_DELIVERY__TIMEOUT": "2",
}


async def wait_status(
    http: aiohttp.ClientSession, url: str, status: str, timeout_s: float = 30.0
) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        async with http.get(url) as r:
            doc = await r.json()
        if doc["status"] == status or time.monotonic() > deadline:
            assert doc["status"] == status, doc
            return doc
        await asyncio.sleep(0.05)


async def test_a_ttl_ends_a_failing_delivery_expired_with_no_attempt_after_it(
    settings_env: dict[str, str],
) -> None:
    receiver = await Receiver(script={"down": [503]}).start()
    try:
        async with (
            running_notifi({**settings_env, **E2E_ENV}) as base,
            aiohttp.ClientSession() as http,
        ):
            body = {
                "body": "b",
                "destinations": [{"type": "webhook", "url": receiver.url("down")}],
                "ttl": 2,
            }
            async with http.post(f"{base}/api/notifications", json=body) as r:
                assert r.status == 202, await r.text()
                doc = await r.json()
            url = f"{base}/api/notifications/{doc['id']}"
            done = await wait_status(http, url, "expired")
            expires_at = datetime.fromisoformat(doc["expires_at"])
            assert datetime.now(UTC) >= expires_at
            [delivery] = done["destinations"]
            assert delivery["status"] == "expired" and delivery["next_attempt_at"] is None
            async with http.get(f"{url}/attempts") as r:
                attempts = (await r.json())["items"]
            assert len(attempts) >= 2  # retried while it could be
            assert delivery["attempts"] == len(attempts) == receiver.count("down")
            assert all(datetime.fromisoformat(a["started_at"]) < expires_at for a in attempts)
            # Arrival follows the start by a loopback hop; none long after the expiry.
            assert all(x.at < expires_at.timestamp() + 0.5 for x in receiver.received["down"])
            await asyncio.sleep(1.0)  # nothing comes after it
            assert receiver.count("down") == len(attempts)
            async with http.get(f"{base}/metrics") as r:
                assert "notifi_deliveries_expired_total" in await r.text()
    finally:
        await receiver.stop()
