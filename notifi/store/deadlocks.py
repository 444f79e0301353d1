"""Transactions tried again when Postgres breaks a deadlock by aborting them. Some writers lock
a notification before its deliveries (a delete), others deliveries before their notifications
(the recorder, the destinations' delete); ordering the locks avoids most cycles, not all, and
the aborted side has done nothing, so running it again is safe and right."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

T = TypeVar("T")

ATTEMPTS = 3
BACKOFF_S = 0.02  # the wait before the n-th retry is random in [0, n * BACKOFF_S)


async def retry_deadlocks(
    transaction: Callable[[], Awaitable[T]],
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Runs `transaction` (a function that opens and commits its own transaction) and runs it
    again when Postgres aborted it with a deadlock, at most `attempts` times in all; the last
    deadlock is raised. The random wait keeps the two sides from meeting again in step."""
    for attempt in range(1, attempts + 1):
        try:
            return await transaction()
        except asyncpg.DeadlockDetectedError:
            if attempt == attempts:
                raise
        await sleep(random.uniform(0, attempt * backoff_s))
    raise ValueError(f"attempts must be at least 1, not {attempts}")
