"""The arq peer of `make bench ARGS="--modes embedded,arq"`: issue 11 compares Notifi with "arq
(tuned, Redis only)"; this is that peer, driven by the same load generators against the same
receiver in the same run, its CPU read from /proc the same way.

Two processes on uvloop, in a virtualenv of their own (`.venv-arq`, from bench/arq_peer.txt;
arq 0.28 needs redis-py below 6, Notifi pins 8):

* `api` (aiohttp): `POST /api/notifications` enqueues one arq job per webhook and answers 202;
  `POST /api/notifications/bulk` does so for each item, deferred to its `scheduled_at`.
* `worker`: an arq worker whose job POSTs the notification to its webhook over one keep-alive
  aiohttp session; a 5xx, 408, 425, 429 or connection error is tried again (arq's `Retry`).

Tuned as a user would tune it for latency: the worker polls Redis every 10 ms (arq's default is
500 ms), runs 256 jobs at once (default 10) and keeps no results (default an hour).
`ARQ_PEER_POLL_S`, `ARQ_PEER_MAX_JOBS` and `ARQ_PEER_WORKERS` (worker processes, 1) change that;
at a steady 1,000/s on the 2-core bench machine (2026-12-07) no setting tried moved its CPU per
webhook off 1.25-1.31 ms, and its latency swung with every setting and run (p50 18-1,512 ms;
two workers race each other for every job, 1.61 ms and a p50 of 1.4 s). It does
less than Notifi: nothing goes to Postgres (a Redis without persistence holds the only copy),
nothing guards against a second send, nothing is signed, nothing is kept per destination.

    .venv-arq/bin/python -m bench.arq_peer api --port 8090 --redis redis://127.0.0.1:6379/0
    .venv-arq/bin/python -m bench.arq_peer worker --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from typing import Any

import aiohttp
import uvloop
from arq import Retry, Worker, create_pool
from arq.connections import RedisSettings
from arq.constants import default_queue_name, health_check_key_suffix
from arq.worker import func

from bench import peers

POLL_DELAY_S = float(os.environ.get("ARQ_PEER_POLL_S", "0.01"))
MAX_JOBS = int(os.environ.get("ARQ_PEER_MAX_JOBS", "256"))
# The worker writes this key at its first poll, and again at every health check.
HEALTH_CHECK = default_queue_name + health_check_key_suffix


def serve_api(port: int, redis_url: str) -> None:
    async def start() -> peers.Peer:
        pool = await create_pool(RedisSettings.from_dsn(redis_url))

        async def send(urls: list[str], payload: bytes, due: datetime | None) -> str:
            jobs = [await pool.enqueue_job("deliver", u, payload, _defer_until=due) for u in urls]
            return jobs[0].job_id

        async def ready() -> bool:
            return bool(await pool.exists(HEALTH_CHECK))

        return peers.Peer(send, ready)

    peers.serve_api(port, start)


def run_worker(redis_url: str) -> None:
    async def deliver(ctx: dict[str, Any], url: str, payload: bytes) -> None:
        try:
            async with ctx["http"].post(url, data=payload, headers=peers.JSON) as r:
                await r.read()
                failed = peers.retryable(r.status)
        except (aiohttp.ClientError, TimeoutError):
            failed = True
        if failed:
            raise Retry(defer=ctx["job_try"])

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["http"].close()

    uvloop.install()
    Worker(
        functions=[func(deliver, name="deliver")],
        redis_settings=RedisSettings.from_dsn(redis_url),
        max_jobs=MAX_JOBS,
        poll_delay=POLL_DELAY_S,
        keep_result=0,
        job_timeout=30,
        max_tries=5,
        log_results=False,
        on_startup=startup,
        on_shutdown=shutdown,
    ).run()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=("api", "worker"))
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args(argv)
    if args.role == "api":
        serve_api(args.port, args.redis)
    else:
        run_worker(args.redis)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
