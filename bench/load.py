"""The load generators of `make bench`, each run in a process of its own (so the load driver is
not the system's CPU, nor its limit). Markers ("<phase>:<n>") go in the notification's `body`;
the receiver keys arrivals by them. Where a notification goes is `fields`: the JSON text of
the members that name its destinations (an inline webhook, or a topic of stored ones), merged
into every request as it is.

* `open_loop`: request i is launched at start + i/rate whatever happened to earlier ones, and
  its latency counts from that intended instant, so a slow accept counts (no coordinated
  omission).
* `closed_loop`: `clients` connections each sending the next request when the last answered.
* `bulk_scheduled`: posts notifications with given `scheduled_at`s through the bulk endpoint.

Each runs with Python's cycle collector off (`_run`): a generator that stops to collect is
itself the limit. In a steady 30 s run at 1,000/s its full collections, over the tasks and
answers it keeps, took 45, 63, 113 and 118 ms (2026-12-07, 14:53 UTC); the requests meant for
those moments went out late, and counted as late accepts and arrivals.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
import uvloop


@dataclass(frozen=True)
class Sent:
    marker: str
    intended: float  # time.time() the generator meant to send at
    answered: float  # time.time() the answer came
    status: int


def target_fields(target: dict) -> str:
    """The members of `target` as they are spliced into each request (`fields`)."""
    return orjson.dumps(target).decode()[1:-1]


def _body(marker: str, fields: str, scheduled_at: str | None = None) -> bytes:
    when = b',"scheduled_at":' + orjson.dumps(scheduled_at) if scheduled_at else b""
    return b'{"body":' + orjson.dumps(marker) + b"," + fields.encode() + when + b"}"


HEADERS = {"Content-Type": "application/json"}
T = TypeVar("T")


def _run(main: Coroutine[Any, Any, T]) -> T:
    """`main` on uvloop with the cycle collector off: what start-up made is frozen first (never
    scanned again), and what the run leaves is collected once after it."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return uvloop.run(main)
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


async def _post(http: aiohttp.ClientSession, url: str, data: bytes) -> int:
    try:
        async with http.post(url, data=data, headers=HEADERS) as r:
            await r.read()
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def _open_loop(api: str, fields: str, phase: str, rate: float, count: int) -> list[Sent]:
    url = f"{api}/api/notifications"
    out: list[Sent] = []
    connector = aiohttp.TCPConnector(limit=1024)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int, intended: float) -> None:
            marker = f"{phase}:{i}"
            status = await _post(http, url, _body(marker, fields))
            out.append(Sent(marker, intended, time.time(), status))

        wall0, mono0 = time.time() + 0.05, time.monotonic() + 0.05
        tasks = []
        for i in range(count):
            delay = mono0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, wall0 + i / rate)))
        await asyncio.gather(*tasks)
    return out


async def _closed_loop(
    api: str, fields: str, phase: str, first: int, count: int, clients: int
) -> list[Sent]:
    url = f"{api}/api/notifications"
    out: list[Sent] = []
    todo = iter(range(first, first + count))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            for i in todo:
                marker = f"{phase}:{i}"
                started = time.time()
                status = await _post(http, url, _body(marker, fields))
                out.append(Sent(marker, started, time.time(), status))

        await asyncio.gather(*(client() for _ in range(clients)))
    return out


async def _bulk_scheduled(
    api: str, fields: str, phase: str, due: list[str], chunk: int = 500, parallel: int = 4
) -> list[Sent]:
    url = f"{api}/api/notifications/bulk"
    out: list[Sent] = []
    chunks = [range(lo, min(lo + chunk, len(due))) for lo in range(0, len(due), chunk)]
    todo = iter(chunks)
    async with aiohttp.ClientSession() as http:

        async def client() -> None:
            for part in todo:
                items = b",".join(_body(f"{phase}:{i}", fields, due[i]) for i in part)
                started = time.time()
                async with http.post(
                    url, data=b'{"notifications":[' + items + b"]}", headers=HEADERS
                ) as r:
                    answer = orjson.loads(await r.read()) if r.status == 200 else {}
                done = time.time()
                statuses = [it["status"] for it in answer.get("items", [])] or [r.status] * len(
                    part
                )
                out.extend(
                    Sent(f"{phase}:{i}", started, done, s)
                    for i, s in zip(part, statuses, strict=False)
                )

        await asyncio.gather(*(client() for _ in range(parallel)))
    return out


def open_loop(api: str, fields: str, phase: str, rate: float, count: int) -> list[Sent]:
    return _run(_open_loop(api, fields, phase, rate, count))


def closed_loop(
    api: str, fields: str, phase: str, first: int, count: int, clients: int
) -> list[Sent]:
    return _run(_closed_loop(api, fields, phase, first, count, clients))


def bulk_scheduled(api: str, fields: str, phase: str, due: list[str]) -> list[Sent]:
    return _run(_bulk_scheduled(api, fields, phase, due))
