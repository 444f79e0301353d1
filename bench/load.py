"""The load generator of `make bench`: posts notifications from a process of its own."""

from __future__ import annotations

import asyncio
import time

import aiohttp


async def _post_many(
    api: str,
    hook: str,
    prefix: str,
    count: int,
    concurrency: int,
    rate: float | None,
    scheduled_at: str | None,
) -> list[tuple[str, float, float]]:
    """Posts `count` notifications; returns (marker, sent_at, latency_s) for each."""
    out: list[tuple[str, float, float]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                if rate:
                    delay = started + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                marker = f"{prefix}-{i}"
                body = {"body": marker, "destinations": [{"type": "webhook", "url": hook}]}
                if scheduled_at:
                    body["scheduled_at"] = scheduled_at
                t0 = time.perf_counter()
                sent = time.time()
                async with http.post(f"{api}/api/notifications", json=body) as r:
                    await r.read()
                    assert r.status == 202, r.status
                out.append((marker, sent, time.perf_counter() - t0))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def client(args: tuple) -> list[tuple[str, float, float]]:
    return asyncio.run(_post_many(*args))
