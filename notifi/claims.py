"""Delivery claims and delivered ids: Redis first (a `SET NX` lease, a TTL'd delivered mark),
Postgres when Redis is unreachable, so a delivery is sent at most once under one fault.

A claim is held by a token that names one published job in one run of one process:
`{instance_id}/{incarnation}:{topic}:{partition}:{offset}` (`job_token`). The instance id is
stable per container (`--instance-id`), the incarnation new at every start. So a restarted
process knows the claims its dead predecessor left (same instance, other incarnation) and takes
them over at once instead of waiting `delivery.claim_ttl`: whatever the predecessor held was in
flight when it died, and is sent again, with the same webhook-id. Instance ids must therefore
be unique among running processes (static group membership on Kafka needs that too)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import IntEnum
from uuid import UUID

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from notifi import metrics
from notifi.batching import Coalescer
from notifi.outage import POSTGRES_AWAY
from notifi.store import Store

log = structlog.get_logger(__name__)

Key = tuple[UUID, int]

# One script call decides a whole batch of jobs (a pipeline of one call per job cost a round
# trip more: redis-py's pipeline asks SCRIPT EXISTS before every execute).
# KEYS: delivered mark, claim, for each job in order. ARGV: lease in ms, then each job's token.
# Per job the same decision as `decide` below (3: taken over from a dead predecessor of this
# instance); in order, so a second copy of a job in the batch finds the first one's claim.
_CLAIM = """
local function owner(token)
  return string.match(token, '^(.*)/([^/]*):[^:]*:[^:]*:[^:]*$')
end
local function claim(delivered, key, token, lease)
  if redis.call('EXISTS', delivered) == 1 then return 2 end
  if redis.call('SET', key, token, 'NX', 'PX', lease) then return 1 end
  local holder = redis.call('GET', key)
  if holder == token then return 1 end
  local mine, my_run = owner(token)
  local theirs, their_run = owner(holder)
  if mine and theirs == mine and their_run ~= my_run then
    redis.call('SET', key, token, 'PX', lease)
    return 3
  end
  return 0
end
local out = {}
for i = 2, #ARGV do
  out[i - 1] = claim(KEYS[2 * i - 3], KEYS[2 * i - 2], ARGV[i], ARGV[1])
end
return out
"""
# KEYS: delivered mark, claim, for each job. ARGV: the mark's lifetime in s. Marks each job
# delivered and drops its claim.
_MARK_DELIVERED = """
for i = 1, #KEYS, 2 do
  redis.call('SET', KEYS[i], 1, 'EX', ARGV[1])
  redis.call('DEL', KEYS[i + 1])
end
return #KEYS / 2
"""
# KEYS: claims. ARGV: their tokens. Only the holder releases its claim.
_RELEASE = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then redis.call('DEL', KEYS[i]) end
end
return 0
"""


class Claim(IntEnum):
    BUSY = 0  # someone else holds it (in flight elsewhere, or a crashed holder's lease)
    CLAIMED = 1
    DELIVERED = 2  # already delivered: skip


TAKEN_OVER = 3  # the claim script's answer for a claim taken from a dead predecessor


def job_token(instance_id: str, incarnation: str, topic: str, partition: int, offset: int) -> str:
    """The claim token of one published job in one run of one process."""
    return f"{instance_id}/{incarnation}:{topic}:{partition}:{offset}"


def token_owner(token: str) -> tuple[str, str] | None:
    """(instance id, incarnation) of a `job_token`, or None for a token of another shape.
    Topics hold no ':' and incarnations no '/', so any instance id parses back."""
    parts = token.rsplit(":", 3)
    if len(parts) != 4 or "/" not in parts[0]:
        return None
    instance_id, incarnation = parts[0].rsplit("/", 1)
    return instance_id, incarnation


def takes_over(holder: str, token: str) -> bool:
    """Whether `token` may take a claim held by `holder`: the same instance in another run
    (the holder's process died or was replaced; what it held was in flight)."""
    mine, theirs = token_owner(token), token_owner(holder)
    return mine is not None and theirs is not None and mine[0] == theirs[0] and mine != theirs


def decide(holder: str | None, token: str, *, delivered: bool) -> Claim:
    """The claim decision (the Redis script and the Postgres lease make the same one)."""
    if delivered:
        return Claim.DELIVERED
    if holder is None or holder == token or takes_over(holder, token):
        return Claim.CLAIMED
    return Claim.BUSY


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
        self._mark_script = redis.register_script(_MARK_DELIVERED)
        self._release_script = redis.register_script(_RELEASE)
        self._warned_at = 0.0
        self.claim = Coalescer(self._claim_many)
        self.mark_delivered = Coalescer(self._mark_delivered_many)

    def _key(self, kind: str, key: Key) -> str:
        return f"{self._prefix}:{kind}:{key[0]}:{key[1]}"

    def _mark_and_claim(self, key: Key) -> tuple[str, str]:
        """A job's delivered mark and claim keys (`_key`), its id formatted once."""
        job = f"{key[0]}:{key[1]}"
        return f"{self._prefix}:delivered:{job}", f"{self._prefix}:claim:{job}"

    def _redis_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning("redis_unavailable_using_postgres", error=str(exc))

    async def _claim_many(self, items: list[tuple[Key, str]]) -> list[Claim]:
        """Claims (key, token) pairs. The token names one published job in one process, so a
        job re-run after its actor crashed finds its own claim, and a second copy of it does not.
        """
        keys = []
        for key, _ in items:
            keys += self._mark_and_claim(key)
        try:
            answers = [
                int(a)
                for a in await self._claim_script(
                    keys=keys, args=[self._claim_ms, *(token for _, token in items)]
                )
            ]
        except (RedisError, OSError) as exc:
            self._redis_down(exc)
            return await self._claim_in_postgres(items)
        for (key, token), answer in zip(items, answers, strict=True):
            if answer == TAKEN_OVER:
                self._taken_over(key, token)
        return [Claim.CLAIMED if a == TAKEN_OVER else Claim(a) for a in answers]

    async def _claim_in_postgres(self, items: list[tuple[Key, str]]) -> list[Claim]:
        keys = [key for key, _ in items]
        delivered = await self._store.delivered_in_postgres(keys)
        # Two copies of one job in the same batch: only the first token may take the lease.
        first: dict[Key, str] = {}
        for key, token in items:
            if key not in delivered:
                first.setdefault(key, token)
        claimed = await self._store.claim_in_postgres(
            list(first), self._claim_ttl_s, tokens=list(first.values())
        )
        return [
            Claim.DELIVERED
            if k in delivered
            else Claim.CLAIMED
            if k in claimed and first[k] == t
            else Claim.BUSY
            for k, t in items
        ]

    def _taken_over(self, key: Key, token: str) -> None:
        log.info("claim_taken_over", notification_id=str(key[0]), position=key[1], claimant=token)
        metrics.claims_taken_over.inc({})

    async def _mark_delivered_many(self, keys: list[Key]) -> list[bool]:
        """Remembers delivered ids, durably, before anything else happens to the job: in Redis,
        or when Redis is away in Postgres (the delivery row itself). False only when both are
        away (then the recorder writes it once Postgres is back)."""
        names = []
        for key in keys:
            names += self._mark_and_claim(key)
        try:
            await self._mark_script(keys=names, args=[self._delivered_s])
            return [True] * len(keys)
        except (RedisError, OSError) as exc:
            self._redis_down(exc)
        try:
            await self._store.mark_delivered_in_postgres(keys)
        except POSTGRES_AWAY as exc:
            log.warning("delivered_mark_not_durable", error=str(exc), count=len(keys))
            return [False] * len(keys)
        return [True] * len(keys)

    async def release(self, items: Sequence[tuple[Key, str]]) -> None:
        """Gives up (key, token) claims after a failed attempt, so the retry can claim again."""
        if not items:
            return
        try:
            await self._release_script(
                keys=[self._key("claim", key) for key, _ in items],
                args=[token for _, token in items],
            )
        except (RedisError, OSError) as exc:
            self._redis_down(exc)  # the lease runs out by itself
