"""/healthz, /readyz and /metrics: served by the API, and by every other role's process on
its metrics port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from notifi import metrics
from notifi.errors import MethodNotAllowed, NotFound, Problem

Readiness = Callable[[], Awaitable[dict[str, bool]]]


def add_health_routes(app: web.Application, ready: Readiness) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def readyz(_: web.Request) -> web.Response:
        checks = await ready()
        ok = all(checks.values())
        body = {"status": "ready" if ok else "unavailable", "checks": checks}
        return web.Response(
            body=orjson.dumps(body), status=200 if ok else 503, content_type="application/json"
        )

    async def exposition(request: web.Request) -> web.Response:
        body, headers = metrics.exposition(request.headers.getall("Accept", []))
        return web.Response(body=body, headers=headers)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", exposition)


@web.middleware
async def problem_documents(request: web.Request, handler: Callable) -> web.StreamResponse:
    """The metrics port's own errors (an unknown path, a wrong method) as problem documents;
    the API has its fuller middleware in notifi.api.app."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = {404: NotFound, 405: MethodNotAllowed}.get(exc.status)
        problem = kind() if kind else Problem(exc.reason)
        problem.status = exc.status
        return web.Response(
            body=orjson.dumps(problem.document()),
            status=problem.status,
            content_type="application/problem+json",
        )


def health_app(ready: Readiness) -> web.Application:
    app = web.Application(middlewares=[problem_documents])
    add_health_routes(app, ready)
    return app
