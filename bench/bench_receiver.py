"""The webhook receiver of `make bench`, a process of its own (its CPU is not the system's):
records the first arrival time of every marker (the notification's `body`, "<phase>:<n>") and
counts repeats, per phase. The bench reads it over HTTP.

    python -m bench.bench_receiver   # prints its port, then serves until killed
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict

import orjson
import uvloop
from aiohttp import web


class Arrivals:
    def __init__(self) -> None:
        self.first: dict[str, dict[str, float]] = defaultdict(dict)  # phase -> marker -> time
        self.repeats: dict[str, int] = defaultdict(int)

    async def hook(self, request: web.Request) -> web.Response:
        at = time.time()
        marker = orjson.loads(await request.read())["body"]
        phase = marker.partition(":")[0]
        seen = self.first[phase]
        if marker in seen:
            self.repeats[phase] += 1
        else:
            seen[marker] = at
        return web.Response(status=204)

    async def count(self, request: web.Request) -> web.Response:
        phase = request.query["phase"]
        body = {"distinct": len(self.first.get(phase, {})), "repeats": self.repeats.get(phase, 0)}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def arrivals(self, request: web.Request) -> web.Response:
        phase = request.query["phase"]
        body = {"first": self.first.get(phase, {}), "repeats": self.repeats.get(phase, 0)}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


async def serve() -> None:
    arrivals = Arrivals()
    app = web.Application()
    app.router.add_post("/hook", arrivals.hook)
    app.router.add_get("/count", arrivals.count)
    app.router.add_get("/arrivals", arrivals.arrivals)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(uvloop.run(serve()))
