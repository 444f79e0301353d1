"""The two ends of a chaos scenario: a loopback webhook receiver that records every arrival
(webhook-id, arrival time, the notification's id and scheduled_at from the body), and a
paced load of mixed immediate and scheduled notifications that records every POST's fate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
from aiohttp import web

DESTINATIONS = 4  # webhook paths on the receiver the load spreads over


@dataclass(frozen=True)
class Arrival:
    path: str
    webhook_id: str
    at: float  # time.time() when the request reached the receiver
    notification_id: str
    marker: str  # the notification's body: which POST it came from
    scheduled_at: float | None  # from the body, as epoch seconds


@dataclass
class Post:
    """One POST of the load: when it was sent and answered, and what the answer was."""

    marker: str
    path: str
    sent_at: float
    scheduled_at: float | None  # what the load asked for, epoch seconds
    done_at: float | None = None
    status: int | None = None  # None: no HTTP answer (see `error`)
    error: str | None = None
    notification_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 202 and self.notification_id is not None


def epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


@dataclass
class ChaosReceiver:
    arrivals: list[Arrival] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> ChaosReceiver:
        app = web.Application()
        app.router.add_post("/h/{path}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, backlog=2048).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/h/{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.time()
        body = orjson.loads(await request.read())
        self.arrivals.append(
            Arrival(
                path=request.match_info["path"],
                webhook_id=request.headers.get("webhook-id", ""),
                at=at,
                notification_id=str(body.get("id")),
                marker=str(body.get("body")),
                scheduled_at=epoch(body.get("scheduled_at")),
            )
        )
        return web.Response(status=204)


@dataclass
class Load:
    """`rate_per_s` POSTs a second, paced by the clock (not by answers, so a stalled API does
    not slow the offered load); even ones immediate, odd ones scheduled `ahead_s` ahead
    (spread evenly over that range)."""

    api_url: str
    receiver: ChaosReceiver
    prefix: str
    rate_per_s: float
    ahead_s: tuple[float, float] = (2.0, 5.0)
    timeout_s: float = 10.0
    max_in_flight: int = 1024
    posts: list[Post] = field(default_factory=list)
    dropped: int = 0  # not sent: max_in_flight POSTs were already waiting

    async def run(self, stop: asyncio.Event) -> None:
        """Posts until `stop` is set, then waits for the answers still outstanding."""
        started = time.monotonic()
        tasks: set[asyncio.Task] = set()
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            i = 0
            while not stop.is_set():
                delay = started + i / self.rate_per_s - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
                if len(tasks) >= self.max_in_flight:
                    self.dropped += 1
                else:
                    task = asyncio.create_task(self._post(http, i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.wait(tasks)

    async def _post(self, http: aiohttp.ClientSession, i: int) -> None:
        now = datetime.now(UTC)
        lo, hi = self.ahead_s
        ahead_s = lo + (hi - lo) * ((i // 2) % 4) / 3
        scheduled = now + timedelta(seconds=ahead_s) if i % 2 else None
        post = Post(
            marker=f"{self.prefix}-{i}",
            path=f"d{i % DESTINATIONS}",
            sent_at=now.timestamp(),
            scheduled_at=scheduled.timestamp() if scheduled else None,
        )
        self.posts.append(post)
        body: dict = {
            "body": post.marker,
            "destinations": [{"type": "webhook", "url": self.receiver.url(post.path)}],
        }
        if scheduled is not None:
            body["scheduled_at"] = scheduled.isoformat()
        try:
            async with http.post(f"{self.api_url}/api/notifications", json=body) as r:
                payload = await r.read()
                post.status = r.status
                if r.status == 202:
                    post.notification_id = str(orjson.loads(payload)["id"])
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            post.error = type(exc).__name__
        finally:
            post.done_at = time.time()
