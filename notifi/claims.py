"""Delivery claims and delivered ids: Redis first (a `SET NX` lease, a TTL'd delivered mark),
Postgres when Redis is unreachable, so a delivery is sent at most once under one fault."""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import IntEnum
from uuid import UUID

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from notifi.batching import Coalescer
from notifi.store import Store

log = structlog.get_logger(__name__)

Key = tuple[UUID, int]

# KEYS: delivered mark, claim. ARGV: token, lease in ms. One round trip decides a job.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 2 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
return 0
"""
# KEYS: claim. ARGV: token. Only the holder releases its claim.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Claim(IntEnum):
    BUSY = 0  # someone else holds it (in flight elsewhere, or a crashed holder's lease)
    CLAIMED = 1
    DELIVERED = 2  # already delivered: skip


class Claims:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: Store,
        *,
        prefix: str,
        claim_ttl_s: float,
        delivered_ttl_s: float,
    ) -> None:
        self._redis = redis
        self._store = store
        self._prefix = prefix
        self._claim_ms = int(claim_ttl_s * 1000)
        self._claim_ttl_s = claim_ttl_s
        self._delivered_s = int(delivered_ttl_s)
        self._claim_script = redis.register_script(_CLAIM)
        self._release_script = redis.register_script(_RELEASE)
        self._warned_at = 0.0
        self.claim = Coalescer(self._claim_many)
        self.mark_delivered = Coalescer(self._mark_delivered_many)

    def _key(self, kind: str, key: Key) -> str:
        return f"{self._prefix}:{kind}:{key[0]}:{key[1]}"

    def _redis_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning("redis_unavailable_using_postgres", error=str(exc))

    async def _claim_many(self, items: list[tuple[Key, str]]) -> list[Claim]:
        """Claims (key, token) pairs. The token names one published job in one process, so a
        job re-run after its actor crashed finds its own claim, and a second copy of it does not.
        """
        keys = [key for key, _ in items]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, token in items:
                    await self._claim_script(
                        keys=[self._key("delivered", key), self._key("claim", key)],
                        args=[token, self._claim_ms],
                        client=pipe,
                    )
                return [Claim(int(r)) for r in await pipe.execute()]
        except (RedisError, OSError) as exc:
            self._redis_down(exc)
        delivered = await self._store.delivered_in_postgres(keys)
        claimed = await self._store.claim_in_postgres(
            [k for k in keys if k not in delivered], self._claim_ttl_s
        )
        return [
            Claim.DELIVERED if k in delivered else Claim.CLAIMED if k in claimed else Claim.BUSY
            for k in keys
        ]

    async def _mark_delivered_many(self, keys: list[Key]) -> list[bool]:
        """Remembers delivered ids (before Postgres records them: it may be down right now)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(self._key("delivered", key), 1, ex=self._delivered_s)
                    pipe.delete(self._key("claim", key))
                await pipe.execute()
            return [True] * len(keys)
        except (RedisError, OSError) as exc:
            self._redis_down(exc)
            return [False] * len(keys)

    async def release(self, items: Sequence[tuple[Key, str]]) -> None:
        """Gives up (key, token) claims after a failed attempt, so the retry can claim again."""
        if not items:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, token in items:
                    await self._release_script(
                        keys=[self._key("claim", key)], args=[token], client=pipe
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._redis_down(exc)  # the lease runs out by itself
