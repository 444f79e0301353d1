"""Change marks: what lets a delivery worker send a job it loaded ahead of its time while
Postgres is away, without breaking the promise that a DELETE (or a reschedule, or a destination
disabled or deleted) that returned prevents the attempt.

A worker re-reads a notification's state from Postgres when a job loaded early comes due. When
Postgres does not answer, it may instead trust Redis, because every change that can stop or
move a job marks Redis *before* it commits in Postgres: `{prefix}:changed:{id}` for the
notification or the stored destination, kept `MARK_TTL_S`. No mark for the job's notification
or destination means nothing changed since the job was loaded, provided Redis has held every
mark written since then. `{prefix}:marks-since` says from when it has:

* a Redis that comes back empty has no such key: the first check sets it to now, so jobs loaded
  before are not trusted (they wait for Postgres, as before);
* an API process that could not write a mark (Redis away) commits anyway (Redis is not needed
  to delete), then raises `marks-since` to a time after that commit as soon as Redis answers,
  and each API process raises it to its start when it starts (a predecessor may have died
  owing one);
* a job is trusted only when it was loaded at least `SKEW_S` after `marks-since` (clocks of
  different hosts differ) and less than `TRUST_S` ago (its marks are still kept).

A delivery worker that disables a stored destination (a 410, or failing too long) marks it the
same way before the recorder writes the disable.

The gaps, written down: between a failed mark and the moment Redis answers that process again,
a worker that reaches Redis but not Postgres could miss that change (for an automatic disable,
also between the record's hand-over and its commit). And Redis must not evict keys
(`maxmemory-policy noeviction`, its default): an evicted mark would read as no change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from uuid import UUID

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

MARK_TTL_S = 900  # how long a change mark is kept
TRUST_S = 600.0  # a job loaded longer ago than this is not trusted (its marks may be gone)
SKEW_S = 1.0  # clock difference between hosts allowed for
PAY_RETRY_S = 0.5  # how often an API process that owes a raise of marks-since tries again
DOWN_FOR_S = 1.0  # after a failed call, marks are not tried for this long (no 1 s wait each)

# KEYS: the marks. ARGV: their lifetime in s.
_MARK = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], 1, 'EX', ARGV[1]) end
return #KEYS
"""
# KEYS[1]: marks-since. ARGV[1]: a time (unix s). Raises marks-since to it, never lowers it.
_RAISE = """
local since = redis.call('GET', KEYS[1])
if (not since) or tonumber(since) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""
# KEYS[1]: marks-since, then the marks to look for. ARGV[1]: now (unix s).
# -> marks-since (a string), or -1 (it was not set: now it is), or -2 (a mark is there).
_CHECK = """
local since = redis.call('GET', KEYS[1])
if not since then
  redis.call('SET', KEYS[1], ARGV[1], 'NX')
  return -1
end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return -2 end
end
return since
"""


def trusts(since: float | None, loaded_at: datetime, now: datetime) -> bool:
    """Whether marks kept since `since` (unix s; None: unknown) cover a job loaded at
    `loaded_at`: every change after its load would have left a mark that is still kept."""
    if since is None:
        return False
    loaded_s = loaded_at.timestamp()
    return loaded_s >= since + SKEW_S and now.timestamp() - loaded_s < TRUST_S


class ChangeMarks:
    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self._prefix = prefix
        self._since_key = f"{prefix}:marks-since"
        self._mark = redis.register_script(_MARK)
        self._raise = redis.register_script(_RAISE)
        self._check = redis.register_script(_CHECK)
        self._owed: float | None = None  # marks-since must be raised to this (a failed mark)
        self._payer: asyncio.Task[None] | None = None
        self._down_until = 0.0

    def _key(self, kind: str, ident: UUID) -> str:
        return f"{self._prefix}:changed:{kind}:{ident}"

    # -- the changing side (the API) ----------------------------------------------------

    def start(self) -> None:
        """An API process starting: marks-since is raised to now, once Redis answers."""
        self._owe(time.time())

    async def close(self) -> None:
        if self._payer is not None:
            self._payer.cancel()

    @asynccontextmanager
    async def changing(
        self, *, notifications: Iterable[UUID] = (), destinations: Iterable[UUID] = ()
    ) -> AsyncIterator[None]:
        """Marks the notifications and destinations, then runs the block that changes them in
        Postgres. If the marks could not be written, marks-since is raised past the block's
        end (now if Redis answers, else as soon as it does)."""
        keys = [self._key("n", i) for i in notifications]
        keys += [self._key("d", i) for i in destinations]
        marked = await self._write(keys)
        try:
            yield
        finally:
            if not marked:
                self._owe(time.time())

    async def _write(self, keys: list[str]) -> bool:
        if not keys:
            return True
        if time.monotonic() < self._down_until:
            return False
        try:
            await self._mark(keys=keys, args=[MARK_TTL_S])
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + DOWN_FOR_S
            log.warning("change_marks_not_written", error=str(exc), count=len(keys))
            return False
        return True

    def _owe(self, at: float) -> None:
        self._owed = at if self._owed is None else max(self._owed, at)
        if self._payer is None or self._payer.done():
            self._payer = asyncio.create_task(self._pay(), name="change-marks-payer")

    async def _pay(self) -> None:
        while (owed := self._owed) is not None:
            try:
                await self._raise(keys=[self._since_key], args=[repr(owed)])
            except (RedisError, OSError):
                await asyncio.sleep(PAY_RETRY_S)
                continue
            if self._owed == owed:
                self._owed = None
                log.info("change_marks_since_raised", since=owed)

    # -- the checking side (a delivery worker) ---------------------------------------------

    async def unchanged(
        self, loaded_at: datetime, notification_id: UUID, destination_id: UUID | None
    ) -> bool:
        """Whether Redis vouches that the notification (and its stored destination) did not
        change since the job was loaded; False whenever it cannot say (Redis away too)."""
        keys = [self._since_key, self._key("n", notification_id)]
        if destination_id is not None:
            keys.append(self._key("d", destination_id))
        now = datetime.now(UTC)
        try:
            answer = await self._check(keys=keys, args=[repr(now.timestamp())])
        except (RedisError, OSError):
            return False
        if isinstance(answer, int):  # -1 (just set: loaded before) or -2 (marked)
            return False
        return trusts(float(answer), loaded_at, now)
