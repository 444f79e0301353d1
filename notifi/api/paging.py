"""How the API's lists page (notifications and stored destinations alike): `limit` with
`offset`, or a keyset `cursor` (the last id of a page, opaque to the client), and the answer's
`next` and `next_cursor`. Query parameters that are wrong are a 400 naming the parameter."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aiohttp import web

from notifi.errors import InvalidParameter
from notifi.store import ID_MAX

MAX_OFFSET = 100_000  # deeper pages are slow by nature; a cursor is the way there


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer", pointer=name) from None
    if not lo <= value <= hi:
        raise InvalidParameter(f"{name} must be between {lo} and {hi}", pointer=name)
    return value


def bool_param(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise InvalidParameter(f"{name} must be true or false", pointer=name)
    return text in ("true", "1")


def encode_cursor(last_id: UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def cursor_param(request: web.Request) -> UUID | None:
    text = request.query.get("cursor")
    if text is None:
        return None
    if text == "":
        return ID_MAX  # an empty cursor starts keyset paging from the newest
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise InvalidParameter("cursor is not one this API gave out", pointer="cursor") from None


@dataclass(frozen=True, slots=True)
class Window:
    """Which page a list request asks for."""

    limit: int
    offset: int
    cursor: UUID | None  # None: paging by offset


def window(request: web.Request, default_size: int, max_size: int) -> Window:
    """`limit`, and `offset` or `cursor` (not both)."""
    limit = int_param(request, "limit", default_size, 1, max_size)
    offset = int_param(request, "offset", 0, 0, MAX_OFFSET)
    cursor = cursor_param(request)
    if cursor is not None and "offset" in request.query:
        raise InvalidParameter("give cursor or offset, not both", pointer="offset")
    return Window(limit, offset, cursor)


def page(
    request: web.Request, at: Window, rows: Sequence[Mapping[str, Any]], items: list[Any]
) -> dict[str, Any]:
    """The answer of a list: `items` (the `rows` as published) and where the next page is,
    by the paging the request used (none when this page was not full)."""
    following = next_cursor = None
    if len(rows) == at.limit:
        next_cursor = encode_cursor(rows[-1]["id"])
        if at.cursor is not None:
            following = str(request.rel_url.update_query(cursor=next_cursor, limit=at.limit))
        elif at.offset + at.limit <= MAX_OFFSET:
            following = str(
                request.rel_url.update_query(offset=at.offset + at.limit, limit=at.limit)
            )
    return {
        "items": items,
        "limit": at.limit,
        "offset": at.offset,
        "next": following,
        "next_cursor": next_cursor,
    }
