"""Where an immediate notification's time goes in split mode (issue 10's 50 ms p99 at 120/s):
the roles as processes over a private tansu broker and a private Postgres (fsync off, as
`make chaos` runs it; `--mode embedded`: `--roles all` instead; `--postgres shared`: the shared
one, as `make bench` runs), an open-loop load of immediate notifications, and per notification
the stages read back from the database: accept (intended send to the accept transaction's start),
route (to the router's `routed_at`), attempt (to the worker's `started_at`), send (to the
receiver's arrival), and the 202. Also the machine's busy fraction during the load, from
/proc/stat: at this rate a saturated machine, not a hop, makes the tail.

    python -m bench.stages                       # 120/s for 20 s
    python -m bench.stages --rate 60 --env NOTIFI_KAFKA__FETCH_MAX_WAIT_MS=5
    python -m bench.stages --mode embedded --postgres shared --rate 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import aiohttp
import asyncpg

from bench import load
from bench.bench_system import SHARED_PG, System
from bench.chaos_report import percentile
from tests.support.services import PrivatePostgres

STAGES = ("accept", "route", "attempt", "send", "total", "answer")

READ_BACK = """
SELECT n.body, extract(epoch FROM n.created_at) AS created,
       extract(epoch FROM n.routed_at) AS routed, extract(epoch FROM a.started_at) AS started
  FROM notifications n
  JOIN delivery_attempts a ON a.notification_id = n.id
 WHERE n.body LIKE 'p:%'
"""


def stages(
    sent: Sequence[load.Sent],
    rows: Mapping[str, Mapping[str, float]],
    arrivals: Mapping[str, float],
) -> dict[str, list[float]]:
    """Seconds spent in each stage, per notification that was written, tried and arrived."""
    out: dict[str, list[float]] = {name: [] for name in STAGES}
    for s in sent:
        row, arrived = rows.get(s.marker), arrivals.get(s.marker)
        if row is None or arrived is None:
            continue
        created, routed, started = row["created"], row["routed"], row["started"]
        for name, value in zip(
            STAGES,
            (
                created - s.intended,
                routed - created,
                started - routed,
                arrived - started,
                arrived - s.intended,
                s.answered - s.intended,
            ),
            strict=True,
        ):
            out[name].append(value)
    return out


def busy_ticks() -> tuple[int, int]:
    """(all ticks, idle + iowait ticks) of the machine so far."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


async def measure(
    port: int, rate: float, seconds: float, env: dict[str, str], mode: str, shared_pg: bool
) -> None:
    """Runs the load against a started receiver on `port` and prints the stages."""
    postgres = None if shared_pg else PrivatePostgres().start()
    pg = SHARED_PG if postgres is None else postgres.dsn("postgres").rsplit("/", 1)[0]
    system = System(mode, pg, env)
    try:
        await system.start()
        target = {"destinations": [{"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}]}
        fields = load.target_fields(target)
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            await loop.run_in_executor(pool, load.open_loop, system.api, fields, "w", rate, 360)
            before = busy_ticks()
            count = int(rate * seconds)
            sent = await loop.run_in_executor(
                pool, load.open_loop, system.api, fields, "p", rate, count
            )
            after = busy_ticks()
        await asyncio.sleep(3)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/arrivals", params={"phase": "p"}) as r,
        ):
            arrivals = (await r.json())["first"]
        conn = await asyncpg.connect(f"{system.pg}/{system.db}")
        try:
            rows = {
                r["body"]: {k: float(r[k]) for k in ("created", "routed", "started")}
                for r in await conn.fetch(READ_BACK)
            }
        finally:
            await conn.close()
    finally:
        await system.stop()
        if postgres is not None:
            postgres.stop()
    idle = (after[1] - before[1]) / max(after[0] - before[0], 1)
    times = stages(sent, rows, arrivals)
    print(
        f"{rate:g}/s for {seconds:g} s, {len(times['total'])} measured; machine busy {1 - idle:.0%}"
    )
    for name, values in times.items():
        p50, p90, p99 = (percentile(values, q) or 0.0 for q in (0.5, 0.9, 0.99))
        print(f"  {name:8s} p50 {p50 * 1000:7.1f}  p90 {p90 * 1000:7.1f}  p99 {p99 * 1000:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--rate", type=float, default=120.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--env", action="append", default=[], help="NOTIFI_X__Y=value (repeat)")
    parser.add_argument("--mode", choices=("split", "embedded"), default="split")
    parser.add_argument("--postgres", choices=("private", "shared"), default="private")
    args = parser.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_receiver"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        shared = args.postgres == "shared"
        asyncio.run(measure(port, args.rate, args.seconds, env, args.mode, shared))
    finally:
        receiver.kill()


if __name__ == "__main__":
    main()
