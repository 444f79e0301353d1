"""Delivery claims on the real Redis and, with Redis away, on the real Postgres: a restarted
process (same instance id, new incarnation) takes over its dead predecessor's claims at once,
another instance is refused until the lease ends, and the delivered mark is durable in
Postgres before the worker moves on when Redis is away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
import redis.asyncio as aioredis

from notifi import metrics
from notifi.claims import Claim, Claims, decide, job_token
from notifi.model import DeliveryJob, DeliveryStatus
from notifi.store import Finished, Store
from tests.support.factories import new_notification
from tests.support.fakes import metric_value

TOPIC = "t.deliveries"


def token(instance_id: str, incarnation: str, offset: int = 7) -> str:
    return job_token(instance_id, incarnation, TOPIC, 0, offset)


@pytest.fixture
async def redis_away() -> AsyncIterator[aioredis.Redis]:
    """A client of a Redis that is not there (connections refused at once)."""
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    yield client
    await client.aclose()


async def a_delivery(store: Store) -> tuple[UUID, int]:
    n = new_notification()
    await store.accept([n])
    return (n.id, 0)


def claims_on(client: aioredis.Redis, store: Store, prefix: str, ttl_s: float = 60) -> Claims:
    return Claims(client, store, prefix=prefix, claim_ttl_s=ttl_s, delivered_ttl_s=60)


# -- Redis -------------------------------------------------------------------------------


async def test_a_restarted_instance_takes_over_its_predecessors_claim_at_once(
    store: Store, redis: aioredis.Redis, key_prefix: str
) -> None:
    claims = claims_on(redis, store, key_prefix)
    key = await a_delivery(store)
    before = metric_value(metrics.claims_taken_over, {})
    assert await claims.claim((key, token("pod-0", "run1"))) is Claim.CLAIMED
    # pod-0 was killed with the job in flight; its replacement reads the job again.
    assert await claims.claim((key, token("pod-0", "run2"))) is Claim.CLAIMED
    assert metric_value(metrics.claims_taken_over, {}) == before + 1
    holder = await redis.get(f"{key_prefix}:claim:{key[0]}:{key[1]}")
    assert holder.decode() == token("pod-0", "run2")
    ttl_ms = await redis.pttl(f"{key_prefix}:claim:{key[0]}:{key[1]}")
    assert 50_000 < ttl_ms <= 60_000  # a fresh lease for the new holder


async def test_another_instance_is_refused_until_the_lease_ends(
    store: Store, redis: aioredis.Redis, key_prefix: str
) -> None:
    claims = claims_on(redis, store, key_prefix, ttl_s=1)
    key = await a_delivery(store)
    assert await claims.claim((key, token("pod-0", "run1"))) is Claim.CLAIMED
    assert await claims.claim((key, token("pod-1", "run9"))) is Claim.BUSY
    # A second copy of the job in the same live run is refused too.
    assert await claims.claim((key, token("pod-0", "run1", offset=99))) is Claim.BUSY
    await redis.pexpire(f"{key_prefix}:claim:{key[0]}:{key[1]}", 1)  # the lease runs out
    for _ in range(100):
        if not await redis.exists(f"{key_prefix}:claim:{key[0]}:{key[1]}"):
            break
    assert await claims.claim((key, token("pod-1", "run9"))) is Claim.CLAIMED


async def test_a_delivered_mark_wins_over_any_takeover(
    store: Store, redis: aioredis.Redis, key_prefix: str
) -> None:
    claims = claims_on(redis, store, key_prefix)
    key = await a_delivery(store)
    assert await claims.claim((key, token("pod-0", "run1"))) is Claim.CLAIMED
    assert await claims.mark_delivered(key) is True
    assert await claims.claim((key, token("pod-0", "run2"))) is Claim.DELIVERED
    assert await claims.claim((key, token("pod-1", "run1"))) is Claim.DELIVERED


@pytest.mark.parametrize(
    ("holder", "claimant"),
    [
        (None, ("pod-0", "a")),
        (("pod-0", "a"), ("pod-0", "a")),
        (("pod-0", "a"), ("pod-0", "b")),
        (("pod-0", "a"), ("pod-1", "a")),
        (("a/b", "x"), ("a", "x")),
        (("a", "x"), ("a/b", "y")),
        (("h:1", "x"), ("h:1", "y")),
    ],
)
async def test_the_redis_script_decides_as_the_pure_rule(
    store: Store,
    redis: aioredis.Redis,
    key_prefix: str,
    holder: tuple[str, str] | None,
    claimant: tuple[str, str],
) -> None:
    claims = claims_on(redis, store, key_prefix)
    key = await a_delivery(store)
    held = token(*holder) if holder else None
    if held is not None:
        await redis.set(f"{key_prefix}:claim:{key[0]}:{key[1]}", held, px=60_000)
    mine = token(*claimant)
    assert await claims.claim((key, mine)) is decide(held, mine, delivered=False)


# -- Postgres, while Redis is away --------------------------------------------------------


async def test_postgres_leases_are_taken_over_by_the_same_instance_only(
    store: Store, redis_away: aioredis.Redis
) -> None:
    claims = claims_on(redis_away, store, "x")
    key = await a_delivery(store)
    assert await claims.claim((key, token("pod-0", "run1"))) is Claim.CLAIMED
    assert await claims.claim((key, token("pod-1", "run1"))) is Claim.BUSY
    assert await claims.claim((key, token("pod-0", "run1", offset=99))) is Claim.BUSY
    assert await claims.claim((key, token("pod-0", "run1"))) is Claim.CLAIMED  # its own
    assert await claims.claim((key, token("pod-0", "run2"))) is Claim.CLAIMED  # takeover
    held = await store.pool.fetchval(
        "SELECT claimed_by FROM deliveries WHERE notification_id = $1 AND position = 0", key[0]
    )
    assert held == token("pod-0", "run2")
    assert await claims.claim((key, token("pod-1", "run1"))) is Claim.BUSY


async def test_two_copies_in_one_postgres_claim_batch_get_one_lease(
    store: Store, redis_away: aioredis.Redis
) -> None:
    claims = claims_on(redis_away, store, "x")
    key = await a_delivery(store)
    first, second = await asyncio.gather(
        claims.claim((key, token("pod-0", "run1", offset=1))),
        claims.claim((key, token("pod-1", "run1", offset=2))),
    )
    assert sorted([first, second]) == [Claim.BUSY, Claim.CLAIMED]


async def test_postgres_leases_without_a_token_are_plain_leases(store: Store) -> None:
    key = await a_delivery(store)
    assert await store.claim_in_postgres([key], ttl_s=30) == {key}
    assert await store.claim_in_postgres([key], ttl_s=30) == set()


async def test_the_delivered_mark_is_durable_in_postgres_when_redis_is_away(
    store: Store, redis_away: aioredis.Redis
) -> None:
    claims = claims_on(redis_away, store, "x")
    key = await a_delivery(store)
    assert await claims.claim((key, token("pod-0", "run1"))) is Claim.CLAIMED
    assert await claims.mark_delivered(key) is True
    stored = await store.get(key[0], None)
    assert stored["status"] == "delivered"  # the notification follows at once
    assert stored["deliveries"][0]["status"] == "delivered"
    # A copy of the job, even from the same instance's next run, is skipped.
    assert await claims.claim((key, token("pod-0", "run2"))) is Claim.DELIVERED
    # The recorder's write comes later and adds the attempt's details to the delivered row.
    now = datetime.now(UTC)
    finished = Finished(
        DeliveryJob(key[0], 0, 1, now),
        DeliveryStatus.DELIVERED,
        started_at=now,
        duration_ms=3.0,
        outcome="delivered",
        status_code=204,
    )
    delivered_at = stored["deliveries"][0]["delivered_at"]
    await store.record([finished], [])
    stored = await store.get(key[0], None)
    row = stored["deliveries"][0]
    assert row["status"] == "delivered" and row["attempts"] == 1
    assert row["delivered_at"] == delivered_at
    assert stored["status"] == "delivered"
    [attempt] = await store.attempts(key[0])
    assert attempt["status_code"] == 204
