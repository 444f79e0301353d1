"""What the bench's peers (`--modes arq`, `--modes celery`: bench.arq_peer, bench.celery_peer)
share: what they take from a request, which answers they try again, and their API. Each peer
runs it in a virtualenv of its own; aiohttp, orjson and uvloop are in every one of them, and in
Notifi's, where the bench's tests import it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import uvloop
from aiohttp import web

JSON = {"Content-Type": "application/json"}  # how a peer POSTs a webhook's payload


class BadItem(ValueError):
    """A request the peer does not take (it knows inline webhooks only)."""


def jobs_of(item: Any) -> tuple[list[str], bytes, datetime | None]:
    """The webhook URLs, the payload they get and the time the jobs are due (None: now)."""
    if not isinstance(item, dict) or not isinstance(item.get("body"), str):
        raise BadItem("body must be a string")
    destinations = item.get("destinations")
    if not isinstance(destinations, list) or not destinations:
        raise BadItem("destinations must be a non-empty list")
    urls = []
    for d in destinations:
        if not isinstance(d, dict) or d.get("type") != "webhook" or "secret" in d:
            raise BadItem("the peer takes unsigned inline webhooks only")
        if not isinstance(d.get("url"), str):
            raise BadItem("a webhook needs a url")
        urls.append(d["url"])
    when = item.get("scheduled_at")
    try:
        due = datetime.fromisoformat(when) if isinstance(when, str) else None
    except ValueError:
        raise BadItem("scheduled_at must be an ISO 8601 date-time") from None
    if due is not None and due.tzinfo is None:
        raise BadItem("scheduled_at needs an offset")
    payload = orjson.dumps({k: item.get(k) for k in ("title", "body", "data")})
    return urls, payload, due


def retryable(status: int) -> bool:
    """Whether a webhook's answer is tried again, as Notifi's
    `notifi.destinations.webhook.retryable_status` (the peers' virtualenvs lack Notifi's
    dependencies, so it is written again here; a test holds the two to the same answers)."""
    return status >= 500 or status in (408, 425, 429)


Send = Callable[[list[str], bytes, datetime | None], Awaitable[str]]


@dataclass(frozen=True)
class Peer:
    """What a peer's API does with a notification: `send` hands its webhooks to the queue and
    answers the first job's id; `ready` says whether the workers are up."""

    send: Send
    ready: Callable[[], Awaitable[bool]]


PEER = web.AppKey("peer", Peer)


def api(start: Callable[[], Awaitable[Peer]]) -> web.Application:
    """A peer's API: `POST /api/notifications` (and `/bulk`, each item on its own) hands each
    notification's webhooks to the `Peer` that `start` makes at start-up and answers 202 with
    the first job's id, or 422 for what `jobs_of` refuses; `GET /readyz` is 200 once the peer
    is `ready`."""

    def respond(body: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    async def started(app: web.Application) -> None:
        app[PEER] = await start()

    async def enqueue(peer: Peer, item: Any) -> dict[str, Any]:
        try:
            urls, payload, due = jobs_of(item)
        except BadItem as exc:
            return {"status": 422, "detail": str(exc)}
        return {"status": 202, "id": await peer.send(urls, payload, due)}

    async def create(request: web.Request) -> web.Response:
        try:
            item = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            item = None
        answer = await enqueue(request.app[PEER], item)
        return respond(answer, answer["status"])

    async def bulk(request: web.Request) -> web.Response:
        try:
            items = orjson.loads(await request.read())["notifications"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            items = None
        if not isinstance(items, list):
            return web.Response(status=422, text="notifications must be a list")
        peer = request.app[PEER]
        return respond({"items": await asyncio.gather(*(enqueue(peer, i) for i in items))})

    async def readyz(request: web.Request) -> web.Response:
        return web.Response(status=200 if await request.app[PEER].ready() else 503)

    app = web.Application()
    app.on_startup.append(started)
    app.router.add_post("/api/notifications", create)
    app.router.add_post("/api/notifications/bulk", bulk)
    app.router.add_get("/readyz", readyz)
    return app


def serve_api(port: int, start: Callable[[], Awaitable[Peer]]) -> None:
    """The peer's `api` on uvloop, on loopback, until killed."""

    async def main() -> None:
        runner = web.AppRunner(api(start), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        await asyncio.Event().wait()

    uvloop.run(main())
