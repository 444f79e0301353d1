"""Riding out a dependency that is briefly away (Postgres, the bus): which errors mean "away",
how long to wait before trying again, and one log line and one count per outage, not per retry.

Restart intensity is for crashing code; an actor whose database is away waits here instead.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import structlog

from notifi import metrics
from notifi.bus import BusError

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Postgres unreachable, restarting, shutting down or out of connections; the pool's socket
# errors (OSError) and command timeouts (TimeoutError). Not data errors: those are bugs or
# bad input and must stay loud.
POSTGRES_AWAY: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    OSError,
    TimeoutError,
)
BUS_AWAY: tuple[type[BaseException], ...] = (BusError, TimeoutError)


class StopRequested(Exception):
    """The actor was asked to stop while it waited for a dependency to come back."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential, capped low so that work resumes within seconds of the return."""

    initial_s: float = 0.05
    cap_s: float = 2.0

    def delay_s(self, failures: int) -> float:
        """The wait after `failures` consecutive failures (1-based)."""
        return min(self.initial_s * 2 ** max(failures - 1, 0), self.cap_s)


class Outage:
    """One dependency as one actor sees it: away from the first failure until a success."""

    def __init__(
        self,
        dependency: str,
        actor: str,
        errors: tuple[type[BaseException], ...],
        backoff: Backoff | None = None,
    ) -> None:
        self.dependency, self.actor, self.errors = dependency, actor, errors
        self.backoff = backoff or Backoff()
        self.failures = 0
        self._since = 0.0

    @property
    def away(self) -> bool:
        return self.failures > 0

    def failed(self, error: BaseException) -> float:
        """Notes a failure; returns the seconds to wait before trying again."""
        if self.failures == 0:
            self._since = time.monotonic()
            log.warning(
                "dependency_away",
                dependency=self.dependency,
                actor=self.actor,
                error=repr(error),
            )
            metrics.dependency_outages.inc({"dependency": self.dependency, "actor": self.actor})
        self.failures += 1
        return self.backoff.delay_s(self.failures)

    def recovered(self) -> None:
        if self.failures:
            log.info(
                "dependency_back",
                dependency=self.dependency,
                actor=self.actor,
                retries=self.failures,
                away_s=round(time.monotonic() - self._since, 3),
            )
        self.failures = 0

    async def call(
        self, attempt: Callable[[], Awaitable[T]], sleep: Callable[[float], Awaitable[bool]]
    ) -> T:
        """Awaits `attempt()` until it succeeds, waiting between tries while the dependency is
        away; `sleep` is the actor's (True when woken by a stop), which raises StopRequested."""
        while True:
            try:
                result = await attempt()
            except self.errors as exc:
                if await sleep(self.failed(exc)):
                    raise StopRequested(self.actor) from exc
                continue
            self.recovered()
            return result
