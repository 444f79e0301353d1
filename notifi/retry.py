"""The retry schedule: the one place that decides when a failed attempt is tried again."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_RETRY_AFTER_S = 24 * 3600.0  # a receiver cannot push its next attempt further than a day


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule_s: tuple[float, ...]  # delay before attempt 2, 3, ...; its length bounds attempts
    jitter: float = 0.2  # +/- fraction, so retries of one outage do not arrive in lockstep

    @classmethod
    def of(cls, schedule_s: Sequence[float], jitter: float) -> RetryPolicy:
        return cls(tuple(float(s) for s in schedule_s), jitter)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule_s) + 1

    def delay_after(
        self,
        attempt: int,
        retry_after_s: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait after failed attempt `attempt` (1-based); None when exhausted."""
        if attempt < 1 or attempt > len(self.schedule_s):
            return None
        delay = self.schedule_s[attempt - 1] * (1 + self.jitter * (2 * rand() - 1))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        return max(delay, 0.0)
