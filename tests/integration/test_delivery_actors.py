"""The delivery actors under a real supervisor, on the real Postgres and Redis: a worker that
crashes is restarted and the job it held is delivered, once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from actors.delivery import Work
from notifi.bus import MemoryBus
from notifi.claims import Claim, Claims
from notifi.destinations.base import Message, Outcome, SendResult
from notifi.model import DeliveryJob
from notifi.runtime import Mailbox
from notifi.store import Store
from tests.support.delivery import delivery_tree
from tests.support.factories import new_notification
from tests.support.schemas import schema


class CrashOnceSender:
    def __init__(self) -> None:
        self.calls = 0

    async def send(self, destination: dict[str, Any], message: Message) -> SendResult:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("sender bug")
        return SendResult(Outcome.DELIVERED, status_code=200, duration_ms=1.0)


async def test_crashed_worker_restarts_and_its_job_is_not_lost(
    store: Store, redis: aioredis.Redis, key_prefix: str
) -> None:
    n = new_notification()
    await store.accept([n])
    sender = CrashOnceSender()
    claims = Claims(redis, store, prefix=key_prefix, claim_ttl_s=30, delivered_ttl_s=60)
    bus = MemoryBus()
    events_feed = bus.consumer("t.events", "test")
    await events_feed.start()
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
    assert outcome.ok
    assert crashes == ["worker"]
    assert sender.calls == 2
    stored = await store.get(n.id, None)
    assert stored["status"] == "delivered"
    assert stored["deliveries"][0]["attempts"] == 1
    [event] = await events_feed.fetch(10, timeout_s=1)
    body = orjson.loads(event.value)
    schema("delivery.succeeded.v1.json")(body)
    assert body["data"]["notification_id"] == str(n.id) and body["data"]["status_code"] == 200
    # Redis remembers it: a redelivered copy of the job is skipped.
    assert await claims.claim((key, "another-copy")) is Claim.DELIVERED


async def test_claims_fall_back_to_postgres_when_redis_is_down(store: Store) -> None:
    n = new_notification()
    await store.accept([n])
    down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    claims = Claims(down, store, prefix="x", claim_ttl_s=30, delivered_ttl_s=60)
    key = (n.id, 0)
    assert await claims.claim((key, "a")) is Claim.CLAIMED
    assert await claims.claim((key, "b")) is Claim.BUSY
    assert await claims.mark_delivered(key) is False
    await down.aclose()
