"""`make bench`: runs `supervisor.py --roles all` on a database of its own and measures
accepting, end-to-end delivery and scheduling against a webhook receiver on loopback, then
prints a table. Load generators run in separate processes so the client is not the limit."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
from aiohttp import web

from bench.load import client
from tests.support.process import NotifiProcess, free_port

PG = os.environ.get("NOTIFI_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Receiver:
    """Counts arrivals and their times, keyed by the body's marker."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.duplicates = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        key = body["body"]
        if key in self.arrivals:
            self.duplicates += 1
        self.arrivals[key] = time.time()
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


def post_in_processes(
    api: str,
    hook: str,
    count: int,
    *,
    processes: int = 2,
    concurrency: int = 64,
    rate: float | None = None,
    scheduled_at: str | None = None,
) -> tuple[list, float]:
    per = count // processes
    prefix = uuid.uuid4().hex[:6]
    jobs = [
        (
            api,
            hook,
            f"{prefix}{p}",
            per,
            concurrency,
            rate / processes if rate else None,
            scheduled_at,
        )
        for p in range(processes)
    ]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(client, jobs)
    return [r for part in results for r in part], time.perf_counter() - started


async def wait_arrivals(receiver: Receiver, markers: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(m in receiver.arrivals for m in markers):
            return
        await asyncio.sleep(0.05)


async def main() -> None:
    db = f"notifi_bench_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "NOTIFI_POSTGRES__DSN": f"{PG}/{db}",
        "NOTIFI_POSTGRES__POOL_MAX": "20",
        "NOTIFI_API__PORT": str(port),
        "NOTIFI_DELIVERY__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "NOTIFI_DELIVERY__WORKERS": "256",
        "NOTIFI_REDIS__KEY_PREFIX": f"bench-{db}",
        "NOTIFI_LOG__LEVEL": "warning",
    }
    receiver = Receiver()
    hook = await receiver.start()
    proc = NotifiProcess(["--roles", "all"], env, ready_port=port).start()
    api = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, str]] = []
    try:
        await proc.wait_ready(60)
        loop = asyncio.get_running_loop()

        # 1. Accept + deliver a burst: accept rate and end-to-end throughput.
        n = int(os.environ.get("NOTIFI_BENCH_N", "6000"))
        sent, took = await loop.run_in_executor(None, lambda: post_in_processes(api, hook, n))
        lat = [s[2] for s in sent]
        rows.append(("accept: single POSTs (2 clients x 64 conns)", f"{n / took:,.0f}/s"))
        rows.append(
            (
                "accept latency p50 / p99",
                f"{pct(lat, 0.5) * 1000:.1f} / {pct(lat, 0.99) * 1000:.1f} ms",
            )
        )
        first = min(s[1] for s in sent)
        await wait_arrivals(receiver, [s[0] for s in sent], 120)
        last = max(receiver.arrivals[s[0]] for s in sent if s[0] in receiver.arrivals)
        got = sum(1 for s in sent if s[0] in receiver.arrivals)
        rows.append(
            ("deliver: burst, end to end", f"{got / (last - first):,.0f} webhooks/s ({got}/{n})")
        )

        # 2. Paced at 1k/s: accept -> arrival latency.
        paced, _ = await loop.run_in_executor(
            None, lambda: post_in_processes(api, hook, 3000, rate=1000.0)
        )
        await wait_arrivals(receiver, [s[0] for s in paced], 60)
        e2e = [receiver.arrivals[s[0]] - s[1] for s in paced if s[0] in receiver.arrivals]
        rows.append(
            (
                "accept -> arrival at 1k/s p50 / p99",
                f"{pct(e2e, 0.5) * 1000:.1f} / {pct(e2e, 0.99) * 1000:.1f} ms",
            )
        )

        # 3. Many due at one instant.
        burst = int(os.environ.get("NOTIFI_BENCH_SCHEDULED", "5000"))
        due = datetime.now(UTC) + timedelta(seconds=8 + burst / 2000)
        sched, _ = await loop.run_in_executor(
            None, lambda: post_in_processes(api, hook, burst, scheduled_at=due.isoformat())
        )
        await wait_arrivals(receiver, [s[0] for s in sched], 60 + burst / 500)
        late = [
            receiver.arrivals[s[0]] - due.timestamp() for s in sched if s[0] in receiver.arrivals
        ]
        rows.append(
            (
                f"scheduled: {burst} due at one instant, all within",
                f"{max(late):.2f} s (early: {sum(1 for x in late if x < 0)})",
            )
        )
        rows.append(("duplicates seen by the receiver", str(receiver.duplicates)))
    finally:
        code = await proc.terminate(60)
        proc.kill()
        conn = await asyncpg.connect(f"{PG}/postgres")
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await conn.close()
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure'.ljust(width)} | result")
    print(f"{'-' * width}-|-{'-' * 30}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")
    print(f"\nnotifi exited {code}; cores: {os.cpu_count()}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
