"""The Celery peer of `make bench ARGS="--modes embedded,celery"`: issue 11's third column,
"Celery prefork", driven by the same load generators against the same receiver in the same run,
its CPU read from /proc the same way (the worker's children included).

Two processes, in a virtualenv of their own (`.venv-celery`, from bench/celery_peer.txt), with
a private Redis as the broker:

* `api` (aiohttp on uvloop): `POST /api/notifications` sends one Celery task per webhook
  (`apply_async`, with `eta` for a scheduled one) and answers 202; `POST
  /api/notifications/bulk` does so for each item. `GET /readyz` answers 200 once a worker
  answers a ping.
* `worker`: `celery worker --pool prefork` (started by bench.bench_system's `CelerySystem`) with
  `CELERY_PEER_CONCURRENCY` children (default 4), each POSTing with one keep-alive `requests`
  session; a 5xx, 408, 425, 429 or connection error is tried again (`retry`, one more second each
  time). At a steady 1,000/s on the 2-core bench machine (2026-12-07, 15:58 UTC, quick runs) 4
  children did best: 2.59 ms of CPU a webhook and 601 a second in the closed loop, against
  2.92 ms and 573 with 2 and 3.18 ms and 573 with 8; with any of them it falls behind at
  1,000/s (p50 3.3-5.1 s).

Tuned as a user would tune it for latency and throughput: no result backend, no gossip, mingle
or event heartbeats, the `fair` scheduling that hands a task to a free child, a prefetch of
`CELERY_PEER_PREFETCH` (default 4, Celery's) per child. Like the arq peer it does less than
Notifi: nothing goes to Postgres (a Redis without persistence holds the only copy), nothing
guards against a second send, nothing is signed. The API's `apply_async` is a blocking call on
the event loop, as it is wherever an asyncio application sends Celery tasks (Celery's client has
no asyncio API).

    CELERY_PEER_REDIS=redis://127.0.0.1:6379/0 .venv-celery/bin/python -m bench.celery_peer api
    CELERY_PEER_REDIS=redis://127.0.0.1:6379/0 .venv-celery/bin/python -m celery \\
        -A bench.celery_peer worker --pool prefork --concurrency 4 -O fair
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime
from typing import Any

import requests
from celery import Celery

from bench import peers

PREFETCH = int(os.environ.get("CELERY_PEER_PREFETCH", "4"))

app = Celery("bench_celery_peer", broker=os.environ.get("CELERY_PEER_REDIS", "redis://"))
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    worker_prefetch_multiplier=PREFETCH,
    worker_disable_rate_limits=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_session: requests.Session | None = None


def _http() -> requests.Session:
    """One keep-alive session per worker child (made after the fork)."""
    global _session
    if _session is None:
        _session = requests.Session()
    return _session


@app.task(bind=True, name="deliver", max_retries=5)
def deliver(self: Any, url: str, payload: str) -> None:
    try:
        r = _http().post(url, data=payload.encode(), headers=peers.JSON, timeout=10)
        failed = peers.retryable(r.status_code)
    except requests.RequestException:
        failed = True
    if failed:
        raise self.retry(countdown=self.request.retries + 1)


def serve_api(port: int) -> None:
    async def send(urls: list[str], payload: bytes, due: datetime | None) -> str:
        text = payload.decode()
        ids = [deliver.apply_async((url, text), eta=due).id for url in urls]
        return ids[0]

    async def ready() -> bool:  # a worker answers a ping
        return bool(await asyncio.to_thread(app.control.ping, timeout=0.5))

    async def start() -> peers.Peer:
        return peers.Peer(send, ready)

    peers.serve_api(port, start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=("api",))
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args(argv)
    serve_api(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
