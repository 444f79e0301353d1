"""JSON answers and problem documents (RFC 9457), as every API route sends them."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from notifi.errors import Problem


def json_response(body: Any, status: int = 200, **kwargs: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", **kwargs
    )


def problem_response(problem: Problem) -> web.Response:
    response = web.Response(
        body=orjson.dumps(problem.document()),
        status=problem.status,
        content_type="application/problem+json",
        headers=problem.headers,
    )
    if problem.closes_connection:  # aiohttp would drop it after the answer anyway: say so
        response.force_close()
    return response
