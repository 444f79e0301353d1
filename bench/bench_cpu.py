"""CPU time of the system under test, read from /proc/<pid>/stat (utime + stime, every thread
of the process): a sampler that follows named groups of processes over a measurement window,
including processes that appear (new Postgres backends) or end during it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")

# name -> pids; called at every sample, so groups may change during the window.
PidGroups = Callable[[], Awaitable[dict[str, list[int]]]]


@dataclass(frozen=True)
class Stat:
    cpu_ticks: int  # utime + stime
    start_ticks: int  # start time, in ticks since boot


def read_stat(pid: int) -> Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    rest = text[text.rindex(")") + 2 :].split()
    return Stat(int(rest[11]) + int(rest[12]), int(rest[19]))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    stat = read_stat(pid)
    return stat.cpu_ticks / TICKS_PER_S if stat is not None else 0.0


def uptime_ticks() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * TICKS_PER_S


def parent_pid(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def pids_with_args(*needles: str) -> list[int]:
    """Processes whose command line holds every needle (a private redis-server by its port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if all(n in args for n in needles):
                found.append(int(entry.name))
    return found


def descendants(root: int) -> list[int]:
    """`root` and every process below it (a supervisor that forks helpers counts them too)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = parent_pid(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass
class _Seen:
    first: int
    last: int


@dataclass
class CpuWindow:
    """Samples the groups every `period_s` between `start()` and `stop()`; `seconds()` gives
    each group's CPU seconds within the window (a process that ended between two samples
    loses at most one period of its time)."""

    groups: PidGroups
    period_s: float = 0.25
    _seen: dict[tuple[str, int], _Seen] = field(default_factory=dict)
    _start_ticks: float = 0.0
    _task: asyncio.Task | None = None

    async def start(self) -> None:
        self._start_ticks = uptime_ticks()
        await self._sample()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            await self._sample()

    async def _sample(self) -> None:
        for name, pids in (await self.groups()).items():
            for pid in pids:
                stat = read_stat(pid)
                if stat is None:
                    continue
                key = (name, pid)
                seen = self._seen.get(key)
                if seen is None:
                    # Born inside the window: all of its time is the window's.
                    first = 0 if stat.start_ticks >= self._start_ticks else stat.cpu_ticks
                    self._seen[key] = _Seen(first, stat.cpu_ticks)
                else:
                    seen.last = stat.cpu_ticks

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._sample()
        return self.seconds()

    def seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (name, _), seen in self._seen.items():
            out[name] = out.get(name, 0.0) + (seen.last - seen.first) / TICKS_PER_S
        return out
