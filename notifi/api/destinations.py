"""The stored destinations resource (issue 12): `/api/destinations` and its id routes (create,
list, get, PATCH, delete, rotate-secret, recover). Requests are read and the resource shaped in
notifi.api.destination_requests; the rows are notifi.store.destinations'. Tenancy as for
notifications: a client sees and changes only its own (404 for another's), an admin all.
Named destinations from settings.toml are not part of this resource."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from uuid_utils.compat import uuid7

from notifi import logs
from notifi.api import destination_requests as dreq
from notifi.api import paging
from notifi.api.body import decode_json, expect_within, read_body
from notifi.api.context import ApiContext
from notifi.api.destination_schemas import TOPIC_PATTERN
from notifi.api.responses import json_response
from notifi.auth import Client
from notifi.errors import (
    Conflict,
    InvalidParameter,
    InvalidRequest,
    NotFound,
    UnsupportedMediaType,
)
from notifi.store import ID_MAX
from notifi.store.destinations import (
    Destinations,
    NameTaken,
    NewDestination,
    RotateOutcome,
    TooMany,
)

PATH = "/api/destinations"
LIST_PARAMS = frozenset({"limit", "offset", "cursor", "topic", "enabled"})
RECOVER_PARAMS = frozenset({"dry_run"})
_TOPIC = re.compile(TOPIC_PATTERN)


class DuplicateName(Conflict):
    """This client already has a destination with this name."""

    title = "Name taken"
    slug = "name-taken"


class TooManyDestinations(Conflict):
    """This client already stores as many destinations as it may."""

    title = "Too many destinations"
    slug = "too-many-destinations"


@dataclass(frozen=True, slots=True)
class DestinationsApi:
    ctx: ApiContext
    store: Destinations
    client: Callable[[web.Request], Client]  # app.py's reader of the caller


DESTINATIONS = web.AppKey("destinations", DestinationsApi)


def _client(request: web.Request) -> Client:
    return request.app[DESTINATIONS].client(request)


def _id(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["id"])
    except ValueError:
        raise NotFound("No destination has this id (ids are UUIDs).", pointer="id") from None


def _missing() -> NotFound:
    return NotFound("No destination has this id.", pointer="id")


async def _body(request: web.Request, *, optional: bool = False) -> Any:
    """The JSON body, its secret and header values declared to the log redaction. With
    `optional`, no body at all reads as {}."""
    api = request.app[DESTINATIONS]
    if optional and not request.body_exists:
        return {}
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise UnsupportedMediaType(pointer="Content-Type")
    raw = await read_body(request, api.ctx.max_body_bytes, api.ctx.body_timeout_s)
    body = decode_json(raw)
    if isinstance(body, dict):
        hidden = [body.get("secret")]
        if isinstance(headers := body.get("headers"), dict):
            hidden += headers.values()
        logs.hide(v for v in hidden if isinstance(v, str))
    return body


async def create_destination(request: web.Request) -> web.Response:
    api = request.app[DESTINATIONS]
    body = await _body(request)
    created = dreq.create(body, api.ctx.validator, api.ctx.address_policy)
    new = NewDestination(
        id=uuid7(),
        client_id=_client(request).id,
        kind=created.kind,
        secret=created.secret,
        fields=created.fields,
    )
    try:
        row = await api.store.create(new, api.ctx.max_stored_destinations)
    except NameTaken as exc:
        raise DuplicateName(exc.detail, pointer="/name") from None
    except TooMany as exc:
        raise TooManyDestinations(exc.detail) from None
    return json_response(
        dreq.resource(row, secret=created.secret),
        201,
        headers={"Location": f"{PATH}/{new.id}"},
    )


def _enabled_param(request: web.Request) -> bool | None:
    text = request.query.get("enabled")
    if text is None:
        return None
    if text.lower() not in ("true", "false", "1", "0"):
        raise InvalidParameter("enabled must be true or false", pointer="enabled")
    return text.lower() in ("true", "1")


def _topic_param(request: web.Request) -> str | None:
    text = request.query.get("topic")
    if text is None:
        return None
    if text != "*" and not _TOPIC.fullmatch(text):
        raise InvalidParameter(
            'topic must be 1-64 characters of a-z0-9._- (or "*")', pointer="topic"
        )
    return text


async def list_destinations(request: web.Request) -> web.Response:
    """Paged as GET /api/notifications: limit, offset or cursor; `next` and `next_cursor`."""
    api = request.app[DESTINATIONS]
    unknown = sorted(set(request.query) - LIST_PARAMS)
    if unknown:
        raise InvalidParameter(f"unknown query parameter {unknown[0]!r}", pointer=unknown[0])
    at = paging.window(request, api.ctx.default_page_size, api.ctx.max_page_size)
    rows = await api.store.list(
        _client(request).sees,
        topic=_topic_param(request),
        enabled=_enabled_param(request),
        limit=at.limit,
        offset=at.offset,
        before=at.cursor or ID_MAX,
    )
    return json_response(paging.page(request, at, rows, [dreq.resource(r) for r in rows]))


async def get_destination(request: web.Request) -> web.Response:
    api = request.app[DESTINATIONS]
    row = await api.store.get(_id(request), _client(request).sees)
    if row is None:
        raise _missing()
    return json_response(dreq.resource(row))


async def patch_destination(request: web.Request) -> web.Response:
    """Given fields replace; the merged destination is checked as a whole (under the row's
    lock, so two PATCHes cannot each pass alone and combine into something invalid)."""
    api = request.app[DESTINATIONS]
    destination_id = _id(request)
    body = await _body(request)
    ctx = api.ctx
    try:
        async with ctx.changing(destinations=[destination_id]):
            row = await api.store.update(
                destination_id,
                _client(request).sees,
                lambda row: dreq.patch(body, row, ctx.validator, ctx.address_policy),
            )
    except NameTaken as exc:
        raise DuplicateName(exc.detail, pointer="/name") from None
    if row is None:
        raise _missing()
    return json_response(dreq.resource(row))


async def delete_destination(request: web.Request) -> web.Response:
    api = request.app[DESTINATIONS]
    destination_id = _id(request)
    async with api.ctx.changing(destinations=[destination_id]):
        deleted = await api.store.delete(destination_id, _client(request).sees)
    if not deleted:
        raise _missing()
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    api = request.app[DESTINATIONS]
    destination_id = _id(request)
    secret = dreq.rotation_secret(await _body(request, optional=True))
    logs.hide([secret])
    async with api.ctx.changing(destinations=[destination_id]):
        result = await api.store.rotate_secret(
            destination_id, _client(request).sees, secret, api.ctx.rotation_overlap_s
        )
    if result.outcome is RotateOutcome.NOT_FOUND:
        raise _missing()
    if result.outcome is RotateOutcome.NOT_WEBHOOK:
        raise InvalidRequest("only a webhook destination has a secret", pointer="id")
    return json_response({"secret": secret, "previous_secret_expires_at": result.previous_until})


async def recover(request: web.Request) -> web.Response:
    """One more attempt for each delivery to it that ended failed in [since, until)."""
    api = request.app[DESTINATIONS]
    destination_id = _id(request)
    unknown = sorted(set(request.query) - RECOVER_PARAMS)
    if unknown:
        raise InvalidParameter(f"unknown query parameter {unknown[0]!r}", pointer=unknown[0])
    dry_run = paging.bool_param(request, "dry_run")
    since, until = dreq.recover_window(await _body(request), datetime.now(UTC))
    count = await api.store.recover(
        destination_id, _client(request).sees, since, until, dry_run=dry_run
    )
    if count is None:
        raise _missing()
    return json_response({"count": count}, 202)


def add_destination_routes(
    app: web.Application, ctx: ApiContext, client: Callable[[web.Request], Client]
) -> None:
    """The routes, over a `Destinations` on the store's pool; `client` is app.py's reader of
    the caller (handed over so that this module never imports app.py, which imports it)."""
    app[DESTINATIONS] = DestinationsApi(ctx, Destinations(ctx.store.pool), client)
    expect = expect_within(ctx.max_body_bytes)
    app.router.add_post(PATH, create_destination, expect_handler=expect)
    app.router.add_get(PATH, list_destinations, allow_head=False)
    app.router.add_get(PATH + "/{id}", get_destination, allow_head=False)
    app.router.add_patch(PATH + "/{id}", patch_destination, expect_handler=expect)
    app.router.add_delete(PATH + "/{id}", delete_destination)
    app.router.add_post(PATH + "/{id}/rotate-secret", rotate_secret, expect_handler=expect)
    app.router.add_post(PATH + "/{id}/recover", recover, expect_handler=expect)
