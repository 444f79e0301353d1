"""The delivery actors under a real supervisor, on the real Postgres and Redis: a worker that
crashes is restarted and the job it held is delivered, once; a sender that raises fails its
job, not the worker; a job that keeps crashing workers is quarantined."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import redis.asyncio as aioredis

from actors.delivery import Work
from notifi.bus import MemoryBus
from notifi.claims import Claim, Claims
from notifi.destinations.base import Outcome, SendResult
from notifi.model import DeliveryJob, Notification
from notifi.outcome import QUARANTINE_AFTER_CRASHES
from notifi.runtime import Mailbox
from notifi.store import Store
from tests.support.delivery import delivery_tree
from tests.support.factories import new_notification
from tests.support.schemas import schema


class CountingSender:
    def __init__(self, raises: bool = False) -> None:
        self.calls, self.raises = 0, raises

    async def send(self, destination: Mapping[str, Any], n: Notification) -> SendResult:
        self.calls += 1
        if self.raises:
            raise ValueError("Header values may not contain linefeed or carriage return chars")
        return SendResult(Outcome.DELIVERED, status_code=200, duration_ms=1.0)


class CrashingClaims:
    """The real claims, but the claim itself raises (a bug outside the send step) the first
    `times` times."""

    def __init__(self, claims: Claims, times: int) -> None:
        self._claims, self.times = claims, times
        self.mark_delivered, self.release = claims.mark_delivered, claims.release

    async def claim(self, item: tuple[tuple[UUID, int], str]) -> Claim:
        if self.times > 0:
            self.times -= 1
            raise RuntimeError("claim bug")
        return await self._claims.claim(item)


async def run_one(store: Store, claims: Any, sender: Any, bus: MemoryBus) -> tuple[UUID, list[str]]:
    """Runs the delivery tree on the first delivery of a fresh notification until its job is
    acknowledged; returns the notification id and the crashed children."""
    n = new_notification()
    await store.accept([n])
    work: Mailbox = Mailbox("work", 10)
    crashes: list[str] = []
    supervisor = delivery_tree(
        store, claims, sender, work, bus=bus, on_crash=lambda child, exc: crashes.append(child)
    )
    running = asyncio.create_task(supervisor.run())
    key = (n.id, 0)
    row = (await store.load_jobs([key]))[key]
    acked = asyncio.Event()
    now = datetime.now(UTC)
    await work.put(Work(DeliveryJob(n.id, 0, 1, now), row, "job-token", acked.set, now))
    await asyncio.wait_for(acked.wait(), 10)
    supervisor.stop()
    outcome = await running
    assert outcome.ok, outcome.reason
    return n.id, crashes


async def test_crashed_worker_restarts_and_its_job_is_not_lost(
    store: Store, redis: aioredis.Redis, key_prefix: str
) -> None:
    sender = CountingSender()
    claims = Claims(redis, store, prefix=key_prefix, claim_ttl_s=30, delivered_ttl_s=60)
    bus = MemoryBus()
    events_feed = bus.consumer("t.events", "test")
    await events_feed.start()
    n_id, crashes = await run_one(store, CrashingClaims(claims, times=1), sender, bus)
    assert crashes == ["worker"]
    assert sender.calls == 1
    stored = await store.get(n_id, None)
    assert stored["status"] == "delivered"
    assert stored["deliveries"][0]["attempts"] == 1
    [event] = await events_feed.fetch(10, timeout_s=1)
    body = orjson.loads(event.value)
    schema("delivery.succeeded.v1.json")(body)
    assert body["data"]["notification_id"] == str(n_id) and body["data"]["status_code"] == 200
    # Redis remembers it: a redelivered copy of the job is skipped.
    assert await claims.claim(((n_id, 0), "another-copy")) is Claim.DELIVERED


async def test_a_sender_that_raises_fails_the_job_not_the_worker(
    store: Store, redis: aioredis.Redis, key_prefix: str
) -> None:
    sender = CountingSender(raises=True)
    claims = Claims(redis, store, prefix=key_prefix, claim_ttl_s=30, delivered_ttl_s=60)
    n_id, crashes = await run_one(store, claims, sender, MemoryBus())
    assert crashes == [] and sender.calls == 1
    stored = await store.get(n_id, None)
    assert stored["status"] == "failed"
    [attempt] = await store.attempts(n_id)
    assert attempt["outcome"] == "permanent"
    assert attempt["error"] == "internal error while rendering or sending: ValueError"


async def test_a_job_that_keeps_crashing_the_worker_is_quarantined(
    store: Store, redis: aioredis.Redis, key_prefix: str
) -> None:
    sender = CountingSender()
    claims = Claims(redis, store, prefix=key_prefix, claim_ttl_s=30, delivered_ttl_s=60)
    n_id, crashes = await run_one(store, CrashingClaims(claims, times=100), sender, MemoryBus())
    assert crashes == ["worker"] * QUARANTINE_AFTER_CRASHES and sender.calls == 0
    stored = await store.get(n_id, None)
    assert stored["status"] == "failed"
    assert stored["deliveries"][0]["last_error"].startswith("quarantined")


async def test_claims_fall_back_to_postgres_when_redis_is_down(store: Store) -> None:
    n = new_notification()
    await store.accept([n])
    down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    claims = Claims(down, store, prefix="x", claim_ttl_s=30, delivered_ttl_s=60)
    key = (n.id, 0)
    assert await claims.claim((key, "a")) is Claim.CLAIMED
    assert await claims.claim((key, "b")) is Claim.BUSY
    # The delivered mark goes to Postgres at once (the row itself), not only at the record.
    assert await claims.mark_delivered(key) is True
    assert (await store.get(n.id, None))["deliveries"][0]["status"] == "delivered"
    assert await claims.claim((key, "c")) is Claim.DELIVERED
    await down.aclose()
