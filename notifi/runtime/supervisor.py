"""The supervisor (OTP style): child specs, one-for-one restarts with exponential back-off,
restart intensity, and stopping in reverse start order. It knows nothing of notifications."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from notifi.runtime.actor import Actor
from notifi.runtime.mailbox import Stopped

log = structlog.get_logger(__name__)


class Restart(StrEnum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after a crash
    TEMPORARY = "temporary"  # never restarted


@dataclass(frozen=True, slots=True)
class ChildSpec:
    id: str
    factory: Callable[[], Actor]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("child spec: id must not be empty")
        if not callable(self.factory):
            raise ValueError(f"child spec {self.id}: factory must be callable")
        if self.shutdown_timeout_s <= 0:
            raise ValueError(f"child spec {self.id}: shutdown_timeout_s must be positive")


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    reason: str
    child: str | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    actor: Actor | None = None
    task: asyncio.Task[None] | None = None
    running: bool = False


@dataclass(slots=True)
class _Intensity:
    """More than `max_restarts` within `period_s` seconds means the process is sick."""

    max_restarts: int
    period_s: float
    times: deque[float] = field(default_factory=deque)

    def exceeded(self, now: float) -> bool:
        self.times.append(now)
        while self.times and now - self.times[0] > self.period_s:
            self.times.popleft()
        return len(self.times) > self.max_restarts


class Supervisor:
    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        max_restarts: int = 5,
        period_s: float = 10.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 5.0,
        on_crash: Callable[[str, BaseException], None] | None = None,
        name: str = "root",
    ) -> None:
        ids = [c.id for c in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"supervisor {name}: child ids must be unique: {ids}")
        self.name = name
        self._children = [_Child(spec) for spec in children]
        self._intensity = _Intensity(max_restarts, period_s)
        self._period_s = period_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._on_crash = on_crash
        self._done = asyncio.Event()
        self._stopping = False
        self._outcome = Outcome(True, "stopped")

    # -- queries ----------------------------------------------------------------------

    def running(self, child_id: str) -> bool:
        return any(c.running for c in self._children if c.spec.id == child_id)

    def all_running(self) -> bool:
        return all(c.running for c in self._children if c.spec.restart is Restart.PERMANENT)

    def actor(self, child_id: str) -> Actor | None:
        return next((c.actor for c in self._children if c.spec.id == child_id), None)

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Asks for a clean stop; `run` stops the children in reverse order and returns."""
        self._stopping = True
        self._done.set()

    async def run(self) -> Outcome:
        try:
            for child in self._children:  # in order: each child is up before the next starts
                if self._stopping:
                    break
                actor = child.spec.factory()
                child.actor = actor
                try:
                    await actor.on_start()
                    started: BaseException | None = None
                except Exception as exc:
                    started = exc
                child.task = asyncio.create_task(
                    self._supervise(child, actor, started), name=f"{self.name}/{child.spec.id}"
                )
            await self._done.wait()
        finally:
            await self._shutdown()
        return self._outcome

    async def _supervise(self, child: _Child, actor: Actor, error: BaseException | None) -> None:
        """Runs one child for the supervisor's life: restarts it per its spec."""
        spec, attempt = child.spec, 0
        if error is not None:
            await self._close(actor)
        while True:
            began = time.monotonic()
            if error is None:
                error = await self._run_once(child, actor)
            if self._stopping:
                return
            if error is None and spec.restart is not Restart.PERMANENT:
                log.info("actor_exited", actor=spec.id)
                return
            if error is not None:
                log.error("actor_crashed", actor=spec.id, error=repr(error), exc_info=error)
                if self._on_crash is not None:
                    self._on_crash(spec.id, error)
                if spec.restart is Restart.TEMPORARY:
                    return
            if self._intensity.exceeded(time.monotonic()):
                self._give_up(spec.id, error)
                return
            if time.monotonic() - began > self._period_s:
                attempt = 0  # it ran fine for a while: back-off starts over
            delay = min(self._backoff[0] * 2**attempt, self._backoff[1])
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._done.wait()  # a stop cuts the back-off short
            if self._stopping:
                return
            log.warning("actor_restarted", actor=spec.id, attempt=attempt)
            actor = child.actor = spec.factory()  # a fresh child: nothing of the dead one
            try:
                await actor.on_start()
                error = None
            except Exception as exc:
                error = exc
                await self._close(actor)

    async def _run_once(self, child: _Child, actor: Actor) -> BaseException | None:
        child.running = True
        try:
            await actor.run()
            return None
        except Stopped:
            return None
        except Exception as exc:
            return exc
        finally:
            child.running = False
            await self._close(actor)

    async def _close(self, actor: Actor) -> None:
        try:
            await asyncio.shield(actor.on_stop())
        except Exception as exc:
            log.warning("actor_on_stop_failed", actor=actor.name, error=repr(exc))

    def _give_up(self, child_id: str, error: BaseException | None) -> None:
        reason = f"{child_id} restarted more than {self._intensity.max_restarts} times in "
        reason += f"{self._intensity.period_s:g}s"
        log.error("supervisor_giving_up", supervisor=self.name, actor=child_id, reason=reason)
        self._outcome = Outcome(False, reason, child_id, error)
        self._stopping = True
        self._done.set()

    async def _shutdown(self) -> None:
        self._stopping = True
        self._done.set()
        for child in reversed(self._children):
            if child.actor is not None:
                child.actor.request_stop()
            task = child.task
            if task is None or task.done():
                continue
            try:
                async with asyncio.timeout(child.spec.shutdown_timeout_s):
                    await asyncio.shield(task)
            except TimeoutError:
                log.warning("actor_shutdown_timeout", actor=child.spec.id)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
