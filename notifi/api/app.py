"""The REST API's aiohttp application: routes, authentication, problem documents.
Bodies are read through `notifi.api.body` (guarded: size, time, encoding, nesting); the
webhook secrets and header values of a decoded body are declared to the log redaction
(`notifi.logs.hide`)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from aiohttp import web

from notifi import logs, metrics
from notifi.api import dates, paging, reschedule, resources, stats
from notifi.api.body import decode_json, expect_within, read_body
from notifi.api.console import add_console_routes
from notifi.api.context import CONTEXT, ApiContext
from notifi.api.destinations import add_destination_routes
from notifi.api.health import add_health_routes
from notifi.api.openapi import openapi
from notifi.api.responses import json_response, problem_response
from notifi.api.schemas import NOTIFICATION_STATUSES, destination_schemas
from notifi.auth import Client, Forbidden
from notifi.errors import (
    Conflict,
    InternalError,
    InvalidParameter,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Problem,
    TooManyRequests,
    Unavailable,
    UnsupportedMediaType,
)
from notifi.model import NewNotification
from notifi.outage import POSTGRES_AWAY
from notifi.store import ID_MAX, ID_MIN, AcceptOutcome, id_at, references

log = structlog.get_logger(__name__)

MAX_IDEMPOTENCY_KEY = 255


BULK_BODY_BYTES = web.AppKey("bulk_body_bytes", int)
CLIENT = web.RequestKey("client", Client)
PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/api/openapi.json"})


@web.middleware
async def authenticate(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Who is calling, whether they may, and whether they are within their rate."""
    if request.path in PUBLIC:
        return await handler(request)
    ctx = request.app[CONTEXT]
    client = await ctx.auth.authenticate(request.headers)
    request[CLIENT] = client
    if client.read_only and request.method not in ("GET", "HEAD"):
        raise Forbidden("This client may only read.")
    if (wait_s := ctx.limiter.take(client.id)) is not None:
        retry = str(max(1, math.ceil(wait_s)))
        raise TooManyRequests(headers={"Retry-After": retry})
    return await handler(request)


_HTTP_PROBLEMS: dict[int, type[Problem]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


@web.middleware
async def problems(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Every error becomes a problem document; the route's metrics are counted here."""
    started = time.perf_counter()
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except Problem as problem:
        response = problem_response(problem)
    except POSTGRES_AWAY:  # on any route: the system of record is briefly away, not a bug
        away = Unavailable("The database is unreachable; try again.", headers={"Retry-After": "1"})
        response = problem_response(away)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _HTTP_PROBLEMS.get(exc.status, Problem)
        problem = kind(exc.text if kind is Problem else None)
        problem.status = exc.status
        response = problem_response(problem)
    except Exception:
        # Rendered plainly and redacted (notifi.logs): no locals, no body, bounded.
        log.exception("api_request_failed", route=name, method=request.method)
        response = problem_response(InternalError())
    labels = {"route": name, "method": request.method, "status": str(response.status)}
    client = request.get(CLIENT)
    labels["client_id"] = request.app[CONTEXT].client_label(client) if client else "none"
    metrics.api_requests.inc(labels)
    metrics.api_latency.observe({"route": name}, time.perf_counter() - started)
    return response


def _client(request: web.Request) -> Client:
    return request[CLIENT]


def _notification_id(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["id"])
    except ValueError:
        raise NotFound("No notification has this id (ids are UUIDs).", pointer="id") from None


def _hide_destination_secrets(body: Any) -> None:
    """Declares the webhook secrets and header values of a body secret to the logs."""
    items = body.get("notifications") if isinstance(body, dict) else None
    notifications = items if isinstance(items, list) else [body]
    values: list[str] = []
    for notification in notifications:
        destinations = notification.get("destinations") if isinstance(notification, dict) else None
        for destination in destinations if isinstance(destinations, list) else ():
            if not isinstance(destination, dict):
                continue
            for key, value in destination.items():
                if key == "headers" and isinstance(value, dict):
                    values += (v for v in value.values() if isinstance(v, str))
                elif isinstance(value, str) and logs.SECRET_KEY.search(key):
                    values.append(value)
    logs.hide(values)


async def _json_body(request: web.Request, max_bytes: int | None = None) -> Any:
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise UnsupportedMediaType(pointer="Content-Type")
    limit = max_bytes if max_bytes is not None else request.app[BULK_BODY_BYTES]
    raw = await read_body(request, limit, request.app[CONTEXT].body_timeout_s)
    body = decode_json(raw)
    _hide_destination_secrets(body)
    return body


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidParameter(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters.",
            pointer="Idempotency-Key",
        )
    return key


async def _stored_destinations(
    ctx: ApiContext, client: Client, bodies: list[Any]
) -> references.StoredDestinations:
    """The client's own stored destinations that the bodies refer to (by id or name): one
    query for a whole request or bulk, none when nothing refers to one (Postgres away is the
    `problems` middleware's 503)."""
    ids, names = references.referenced(bodies, ctx.validator.limits.max_destinations)
    return await references.find(ctx.store.pool, client.id, ids, names)


async def create_notification(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await _json_body(request, ctx.max_body_bytes)
    client = _client(request)
    stored = await _stored_destinations(ctx, client, [body])
    new = ctx.validator.notification(body, client.id, _idempotency_key(request), stored=stored)
    result = await ctx.submit(new)
    location = {"Location": f"/api/notifications/{result.id}"}
    if result.outcome is AcceptOutcome.CONFLICT:
        raise Conflict(
            "This Idempotency-Key was used with a different request body.",
            pointer="Idempotency-Key",
            notification_id=str(result.id),
        )
    if result.outcome is AcceptOutcome.REPLAYED:
        row = await ctx.store.get(result.id, client.id)
        if row is None:  # deleted rows stay, so only a race with a purge lands here
            raise NotFound()
        return json_response(resources.notification(row), 200, headers=location)
    metrics.accepted.inc({"client_id": ctx.client_label(client)})
    shown = resources.accepted(new, result.status, result.deliveries)
    return json_response(shown, 202, headers=location)


async def create_bulk(request: web.Request) -> web.Response:
    """Each item answered on its own, so one bad item does not sink the others; the valid ones
    share the accept writer's batched transactions (not one round trip per item)."""
    ctx = request.app[CONTEXT]
    client = _client(request)
    items = ctx.validator.bulk(await _json_body(request))
    stored = await _stored_destinations(ctx, client, items)
    results: list[dict[str, Any]] = [{} for _ in items]
    valid: list[tuple[int, NewNotification]] = []
    for i, item in enumerate(items):
        try:
            prefix = f"/notifications/{i}"
            new = ctx.validator.notification(item, client.id, None, prefix=prefix, stored=stored)
            valid.append((i, new))
        except Problem as problem:
            results[i] = {"status": problem.status, "problem": problem.document()}
    accepted = await asyncio.gather(*(ctx.submit(n) for _, n in valid))
    for (i, _), result in zip(valid, accepted, strict=True):
        results[i] = {
            "status": 202,
            "id": str(result.id),
            "location": f"/api/notifications/{result.id}",
        }
    if valid:
        metrics.accepted.add({"client_id": ctx.client_label(client)}, len(valid))
    return json_response(
        {"items": results, "accepted": len(valid), "rejected": len(items) - len(valid)}
    )


_LIST_PARAMS = {
    "limit",
    "offset",
    "deleted",
    "status",
    "cursor",
    "created_after",
    "created_before",
    "destination_type",
}
DESTINATION_TYPES = tuple(destination_schemas())  # webhook, email, slack, discord, teams


def _time_param(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    return None if text is None else dates.instant(text, name, name, InvalidParameter)


async def list_notifications(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    unknown = sorted(set(request.query) - _LIST_PARAMS)
    if unknown:
        raise InvalidParameter(f"unknown query parameter {unknown[0]!r}", pointer=unknown[0])
    at = paging.window(request, ctx.default_page_size, ctx.max_page_size)
    after, before = _time_param(request, "created_after"), _time_param(request, "created_before")
    upper = min(at.cursor or ID_MAX, id_at(before) if before else ID_MAX)
    lower = id_at(after) if after else ID_MIN
    deleted = paging.bool_param(request, "deleted")
    status = request.query.get("status")
    if status is not None and status not in NOTIFICATION_STATUSES:
        raise InvalidParameter(
            f"status must be one of: {', '.join(NOTIFICATION_STATUSES)}", pointer="status"
        )
    destination_type = request.query.get("destination_type")
    if destination_type is not None and destination_type not in DESTINATION_TYPES:
        raise InvalidRequest(
            f"destination_type must be one of: {', '.join(DESTINATION_TYPES)}",
            pointer="destination_type",
        )
    rows = await ctx.store.list(
        _client(request).sees,
        deleted=deleted,
        status=status,
        limit=at.limit,
        offset=at.offset,
        before=upper,
        since=lower,
        destination_type=destination_type,
    )
    return json_response(paging.page(request, at, rows, [resources.notification(r) for r in rows]))


async def get_notification(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await ctx.store.get(_notification_id(request), _client(request).sees)
    if row is None:
        raise NotFound("No notification has this id.", pointer="id")
    return json_response(resources.notification(row))


async def delete_notification(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    notification_id, client = _notification_id(request), _client(request).sees
    async with ctx.changing(notifications=[notification_id]):
        deleted = await ctx.store.delete(notification_id, client)
    if not deleted:
        raise NotFound("No notification has this id.", pointer="id")
    row = await ctx.store.get(notification_id, client)
    return json_response(resources.notification(row))


async def list_attempts(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    notification_id = _notification_id(request)
    if await ctx.store.get(notification_id, _client(request).sees) is None:
        raise NotFound("No notification has this id.", pointer="id")
    rows = await ctx.store.attempts(notification_id)
    return json_response({"items": [resources.attempt(r) for r in rows]})


async def retry_notification(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    notification_id, client = _notification_id(request), _client(request).sees
    if await ctx.store.replay(notification_id, client) is None:
        raise NotFound("No notification has this id.", pointer="id")
    row = await ctx.store.get(notification_id, client)
    return json_response(resources.notification(row), 202)


async def reschedule_notification(request: web.Request) -> web.Response:
    """PATCH: see notifi.api.reschedule."""
    ctx = request.app[CONTEXT]
    notification_id, client = _notification_id(request), _client(request).sees
    body = await _json_body(request, ctx.max_body_bytes)
    async with ctx.changing(notifications=[notification_id]):
        moved = await reschedule.move(ctx.store, ctx.validator, notification_id, client, body)
    return json_response(moved)


async def get_stats(request: web.Request) -> web.Response:
    """GET /api/stats: see notifi.api.stats."""
    ctx = request.app[CONTEXT]
    client = _client(request).sees
    return json_response(await stats.overview(ctx.store, client, request.query, datetime.now(UTC)))


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


OPENAPI = web.AppKey("openapi", dict)


def build_app(ctx: ApiContext, max_bulk_body_bytes: int = 4 << 20) -> web.Application:
    app = web.Application(middlewares=[problems, authenticate], client_max_size=max_bulk_body_bytes)
    app[CONTEXT] = ctx
    app[BULK_BODY_BYTES] = max_bulk_body_bytes
    app[OPENAPI] = openapi(ctx.validator)
    app.router.add_post(
        "/api/notifications", create_notification, expect_handler=expect_within(ctx.max_body_bytes)
    )
    app.router.add_post(
        "/api/notifications/bulk", create_bulk, expect_handler=expect_within(max_bulk_body_bytes)
    )
    app.router.add_get("/api/notifications", list_notifications, allow_head=False)
    app.router.add_get("/api/notifications/{id}", get_notification, allow_head=False)
    app.router.add_delete("/api/notifications/{id}", delete_notification)
    app.router.add_get("/api/notifications/{id}/attempts", list_attempts, allow_head=False)
    app.router.add_post("/api/notifications/{id}/retry", retry_notification)
    app.router.add_patch("/api/notifications/{id}", reschedule_notification)
    app.router.add_get("/api/stats", get_stats, allow_head=False)
    add_destination_routes(app, ctx, _client)  # /api/destinations (stored destinations)
    app.router.add_get("/api/openapi.json", openapi_document, allow_head=False)
    add_health_routes(app, ctx.ready)
    add_console_routes(app, ctx)  # the web console at /console
    return app
