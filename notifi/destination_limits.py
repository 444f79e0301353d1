"""The shared rate limit of stored destinations (`rate_limit`, deliveries per second across
every delivery process): a GCRA budget in Redis, spent one slot per send.

The budget is a queue of evenly spaced slots, `1 / rate_limit` seconds apart. A job either
takes the next slot when it is now (it goes at once), or reserves the next future slot and goes
back to the outbox due then; a reservation is kept in Redis under the job's key and attempt,
with a TTL, so that when the job comes due again it goes on the slot it already holds instead
of queueing a second time. No job ever waits in memory for its slot, and none is dropped.

Degradation: when Redis cannot be reached, a rate-limited job is not sent; it goes back to the
outbox one second later (`REDIS_AWAY_RETRY_S`), until Redis answers again. The limit is never
exceeded, at the price of holding those deliveries for as long as Redis is away. Destinations
without a rate limit are not affected."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from uuid import UUID

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

Key = tuple[UUID, int]

# Redis away: a rate-limited job tries again this much later, through the outbox.
REDIS_AWAY_RETRY_S = 1.0
# A reservation outlives its slot by this much: the job's trip back through the outbox (the
# poller's horizon, a busy broker). One that expires first only makes the job queue again.
RESERVATION_GRACE_S = 300.0


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one job lands in a destination's queue of slots (times in µs)."""

    at_us: int  # when the job may go
    tat_us: int  # the queue's new end: the next job's slot

    def wait_s(self, now_us: int) -> float:
        return max(self.at_us - now_us, 0) / 1e6


def interval_us(rate_per_s: float) -> int:
    """The spacing of slots for `rate_per_s` deliveries per second."""
    return max(math.ceil(1e6 / rate_per_s), 1)


def next_slot(tat_us: int | None, now_us: int, spacing_us: int) -> Slot:
    """GCRA without burst: the next slot is the queue's end, or now when the queue has run
    dry; taking it moves the end one spacing later. (The Lua script below does the same.)"""
    at_us = now_us if tat_us is None or tat_us < now_us else tat_us
    return Slot(at_us, at_us + spacing_us)


# KEYS: the destination's queue end (TAT), the job's reservation. ARGV: spacing µs, grace ms.
# Returns 0 when the job goes now, else the µs until its reserved slot. A job holding a
# reservation goes on it once its time has come, never before (a copy of the job that comes
# early, e.g. requeued by a resume, waits for the same slot instead of taking a new one).
# Redis's clock, so that every process measures against the same one.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local held = tonumber(redis.call('GET', KEYS[2]))
if held then
  if held > now then return held - now end
  redis.call('DEL', KEYS[2])
  return 0
end
local spacing = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]))
local at = now
if tat and tat > now then at = tat end
local new_tat = at + spacing
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1000)
if at <= now then return 0 end
local wait = at - now
redis.call('SET', KEYS[2], string.format('%d', at), 'PX',
           math.ceil(wait / 1000) + tonumber(ARGV[2]))
return wait
"""


class DestinationLimits:
    """The shared budgets, one Redis round trip per rate-limited job."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self._redis, self._prefix = redis, prefix
        self._admit = redis.register_script(_ADMIT)
        self._warned_at = 0.0

    async def admit(
        self, destination_id: UUID, rate_per_s: float, key: Key, attempt: int
    ) -> float | None:
        """None when the job may be sent now (a slot now, or the one it reserved earlier);
        otherwise the seconds until it may, its slot reserved (or `REDIS_AWAY_RETRY_S` when
        Redis is away, nothing reserved)."""
        queue = f"{self._prefix}:rate:{destination_id}"
        held = f"{self._prefix}:rate-slot:{key[0]}:{key[1]}:{attempt}"
        try:
            wait_us = int(
                await self._admit(
                    keys=[queue, held],
                    args=[interval_us(rate_per_s), int(RESERVATION_GRACE_S * 1000)],
                )
            )
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if now - self._warned_at > 10:
                self._warned_at = now
                log.warning("redis_unavailable_rate_limited_jobs_wait", error=str(exc))
            return REDIS_AWAY_RETRY_S
        return None if wait_us <= 0 else wait_us / 1e6
