"""The workloads of `make bench`, each against a started `System`: steady open loop at a fixed
rate (latency from the intended send instant, CPU per delivered webhook from /proc), spread-out
and one-instant schedules (lateness, early arrivals), closed-loop throughput, and single POSTs
from `wrk`. Every phase counts what arrived twice, early, or not at all."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import aiohttp
import orjson

from bench import load
from bench.bench_cpu import CpuWindow
from bench.bench_system import System
from bench.bench_wrk import WrkResult, run_wrk


@dataclass(frozen=True)
class Sizes:
    steady_rate: float
    steady_s: float
    spread_n: int
    spread_s: float
    instant_n: int
    closed_n: int
    closed_clients: int
    wrk_s: float


FULL = Sizes(1000.0, 30.0, 5000, 10.0, 10000, 20000, 50, 10.0)
QUICK = Sizes(1000.0, 6.0, 1500, 3.0, 2000, 3000, 50, 3.0)  # under 2 minutes, both modes


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Results:
    """Figures of one mode; `problems` holds the broken promises seen (lost, twice, early)."""

    cpu_s: dict[str, float] = field(default_factory=dict)
    steady_delivered: int = 0
    steady_p50_ms: float = float("nan")
    steady_p99_ms: float = float("nan")
    steady_accept_p99_ms: float = float("nan")
    spread_p50_ms: float = float("nan")
    spread_p99_ms: float = float("nan")
    spread_early: int = 0
    spread_min_ms: float = float("nan")  # negative: the earliest arrival, before its time
    instant_last_s: float = float("nan")
    instant_p50_s: float = float("nan")
    instant_early: int = 0
    instant_min_s: float = float("nan")
    closed_per_s: float = float("nan")
    wrk: WrkResult | None = None
    lost: dict[str, int] = field(default_factory=dict)
    repeats: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    profile: str | None = None


class Phases:
    def __init__(self, system: System, fields: str, receiver: str, sizes: Sizes) -> None:
        """`fields`: where every notification goes, as bench.load splices it in."""
        self.system, self.fields, self.receiver, self.sizes = system, fields, receiver, sizes
        self.results = Results()
        self.pool = ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn"))

    async def _load(self, fn, phase: str, *args):  # type: ignore[no-untyped-def]
        """Runs a generator of bench.load in a process of the pool, against this system."""
        api, fields = self.system.api, self.fields
        run = asyncio.get_running_loop().run_in_executor
        return await run(self.pool, fn, api, fields, self.marker_phase(phase), *args)

    async def recount_repeats(self) -> None:
        """Reads every phase's repeats again (a late duplicate would show now)."""
        for phase in list(self.results.repeats):
            self.results.repeats[phase] = (await self._receiver("count", phase))["repeats"]

    def marker_phase(self, phase: str) -> str:
        """The phase as markers carry it: one receiver serves every mode of a run."""
        return f"{self.system.mode}-{phase}"

    async def _receiver(self, path: str, phase: str) -> dict:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.receiver}/{path}", params={"phase": self.marker_phase(phase)}) as r,
        ):
            return orjson.loads(await r.read())

    async def _await_arrivals(self, phase: str, expected: int, timeout_s: float) -> dict:
        """Waits until `expected` distinct markers arrived (or the time is up); the arrivals."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (await self._receiver("count", phase))["distinct"] >= expected:
                break
            await asyncio.sleep(0.1)
        got = await self._receiver("arrivals", phase)
        self.results.lost[phase] = max(0, expected - len(got["first"]))
        self.results.repeats[phase] = got["repeats"]
        return got

    def _accepted(self, phase: str, sent: list[load.Sent], ok: int = 202) -> list[load.Sent]:
        good = [s for s in sent if s.status == ok]
        self.results.rejected[phase] = len(sent) - len(good)
        return good

    async def steady(self, profile_to: Path | None = None) -> None:
        s = self.sizes
        count = int(s.steady_rate * s.steady_s)
        cpu = CpuWindow(self.system.groups)
        await cpu.start()
        spy = None
        if profile_to is not None:
            argv = [
                str(Path(sys.executable).parent / "py-spy"), "record",
                "--pid", str(self.system.pid()), "--duration", str(int(s.steady_s)),
                "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(profile_to),
            ]  # fmt: skip
            spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
        sent = await self._load(load.open_loop, "steady", s.steady_rate, count)
        good = self._accepted("steady", sent)
        got = await self._await_arrivals("steady", len(good), 60 + count / 200)
        self.results.cpu_s = await cpu.stop()
        if spy is not None:
            await asyncio.to_thread(spy.wait, 60)
            self.results.profile = str(profile_to)
        first = got["first"]
        lat = [(first[x.marker] - x.intended) * 1000 for x in good if x.marker in first]
        self.results.steady_delivered = len(first)
        self.results.steady_p50_ms, self.results.steady_p99_ms = pct(lat, 0.5), pct(lat, 0.99)
        accept = [(x.answered - x.intended) * 1000 for x in good]
        self.results.steady_accept_p99_ms = pct(accept, 0.99)

    async def spread(self) -> None:
        s = self.sizes
        t0 = time.time() + 3.0 + s.spread_n / 4000
        due = [t0 + i * s.spread_s / s.spread_n for i in range(s.spread_n)]
        stamps = [datetime.fromtimestamp(t, UTC).isoformat() for t in due]
        sent = await self._load(load.bulk_scheduled, "spread", stamps)
        good = self._accepted("spread", sent)
        late_posts = sum(1 for x in good if x.answered > due[int(x.marker.split(":")[1])])
        got = await self._await_arrivals("spread", len(good), t0 + s.spread_s - time.time() + 60)
        first = got["first"]
        lateness = [(first[m] - due[int(m.split(":")[1])]) * 1000 for m in first]
        self.results.spread_p50_ms = pct(lateness, 0.5)
        self.results.spread_p99_ms = pct(lateness, 0.99)
        self.results.spread_early = sum(1 for x in lateness if x < 0)
        self.results.spread_min_ms = min(lateness, default=float("nan"))
        if late_posts:
            self.results.rejected["spread accepted after due"] = late_posts

    async def instant(self) -> None:
        s = self.sizes
        due = time.time() + 3.0 + s.instant_n / 3000
        stamp = datetime.fromtimestamp(due, UTC).isoformat()
        sent = await self._load(load.bulk_scheduled, "instant", [stamp] * s.instant_n)
        good = self._accepted("instant", sent)
        if any(x.answered > due for x in good):
            self.results.rejected["instant accepted after due"] = sum(
                1 for x in good if x.answered > due
            )
        got = await self._await_arrivals("instant", len(good), due - time.time() + 60)
        lateness = [t - due for t in got["first"].values()]
        self.results.instant_last_s = max(lateness, default=float("nan"))
        self.results.instant_p50_s = pct(lateness, 0.5)
        self.results.instant_early = sum(1 for x in lateness if x < 0)
        self.results.instant_min_s = min(lateness, default=float("nan"))

    async def closed(self) -> None:
        s = self.sizes
        half = s.closed_n // 2
        parts = await asyncio.gather(
            self._load(load.closed_loop, "closed", 0, half, s.closed_clients // 2),
            self._load(
                load.closed_loop,
                "closed",
                half,
                s.closed_n - half,
                s.closed_clients - s.closed_clients // 2,
            ),
        )
        sent = [x for part in parts for x in part]
        good = self._accepted("closed", sent)
        got = await self._await_arrivals("closed", len(good), 120)
        if got["first"]:
            span = max(got["first"].values()) - min(x.intended for x in sent)
            self.results.closed_per_s = len(got["first"]) / span

    async def single_posts(self, wrk: str) -> None:
        result = await asyncio.to_thread(
            run_wrk, wrk, self.system.api, self.fields, self.marker_phase("wrk"), self.sizes.wrk_s
        )
        self.results.wrk = result
        self.results.rejected["wrk"] = result.non_2xx + result.errors
        # Requests in flight when wrk stopped may be accepted without being counted by it.
        await self._await_arrivals("wrk", result.requests - result.non_2xx, 120)

    def close(self) -> None:
        self.pool.shutdown()
