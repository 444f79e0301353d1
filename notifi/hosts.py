"""Per-host fairness and protection: a bound on attempts in flight to one host, and a
circuit breaker that pauses a host that keeps failing. State is per process; a deferred job
waits in the outbox, not in memory."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

BUSY_RETRY_S = 1.0  # how soon a job deferred by the in-flight bound is tried again
BUSY_PATIENCE_S = 0.25  # how long a worker waits for a slot of a busy host before deferring


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # one trial attempt decides


@dataclass(slots=True)
class _Host:
    in_flight: int = 0
    failures: int = 0  # consecutive retryable failures
    open_until: float = 0.0
    cooldown_s: float = 0.0
    trial: bool = False  # a half-open trial is in flight


class HostGate:
    def __init__(
        self,
        *,
        max_in_flight: int,
        failure_threshold: int,
        cooldown_s: float,
        max_cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_in_flight = max_in_flight
        self._threshold = failure_threshold
        self._cooldown_s, self._max_cooldown_s = cooldown_s, max_cooldown_s
        self._clock = clock
        self._hosts: dict[str, _Host] = {}
        # Workers waiting for a slot of a host, first come first served; a release wakes one.
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def state(self, host: str) -> BreakerState:
        h = self._hosts.get(host)
        if h is None or h.failures < self._threshold:
            return BreakerState.CLOSED
        return BreakerState.OPEN if self._clock() < h.open_until else BreakerState.HALF_OPEN

    def open_hosts(self) -> int:
        return sum(1 for host in self._hosts if self.state(host) is BreakerState.OPEN)

    def admit(self, host: str) -> float | None:
        """None: go ahead (then call `release`). Otherwise seconds to wait before trying."""
        h = self._hosts.setdefault(host, _Host())
        state = self.state(host)
        if state is BreakerState.OPEN:
            return h.open_until - self._clock()
        if state is BreakerState.HALF_OPEN:
            if h.trial:
                return max(h.cooldown_s / 4, BUSY_RETRY_S)
            h.trial = True
        elif h.in_flight >= self._max_in_flight:
            return BUSY_RETRY_S
        h.in_flight += 1
        return None

    async def acquire(self, host: str, patience_s: float) -> float | None:
        """Like `admit`, but at the in-flight bound it waits up to `patience_s` for a slot:
        a fast host frees one within milliseconds (no detour through the outbox), while a
        slow one does not, and its jobs are deferred instead of holding workers."""
        deadline = self._clock() + patience_s
        while True:
            wait_s = self.admit(host)
            remaining = deadline - self._clock()
            if wait_s is None or self.state(host) is not BreakerState.CLOSED or remaining <= 0:
                return wait_s
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(host, deque()).append(turn)
            try:
                await asyncio.wait_for(turn, remaining)
            except TimeoutError:
                return self.admit(host)  # one last look, then defer

    def release(self, host: str, *, host_failed: bool | None) -> None:
        """Ends an admitted attempt: `host_failed` True for timeouts, connection errors, 429
        and 5xx, False for any answer that shows the host works, None when nothing was sent."""
        h = self._hosts[host]
        h.in_flight -= 1
        waiting = self._waiting.get(host)
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                break
        if waiting is not None and not waiting:
            del self._waiting[host]
        was_trial, h.trial = h.trial, False
        if host_failed is None:
            pass
        elif not host_failed:
            h.failures, h.cooldown_s = 0, 0.0
        else:
            h.failures += 1
            if h.failures >= self._threshold:
                h.cooldown_s = (
                    min(h.cooldown_s * 2, self._max_cooldown_s) if was_trial else self._cooldown_s
                )
                h.open_until = self._clock() + h.cooldown_s
        if h.in_flight == 0 and h.failures == 0:
            del self._hosts[host]  # bounded memory: only hosts in use or in trouble are kept
