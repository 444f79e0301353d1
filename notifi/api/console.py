"""The web console at `/console`: a few static files (HTML, CSS, ES modules) served from memory
with strict security headers, and `config.json`, which tells the page how callers authenticate.

The files carry no data and need no credentials; the page reads everything through the public
API with the caller's own credentials, so it can show nothing the caller could not `curl`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

from notifi.api.context import ApiContext
from notifi.auth import CloudflareAuth, NoAuth, TokenAuth
from notifi.errors import MethodNotAllowed, NotFound, Problem

PREFIX = "/console"
FILES_DIR = Path(__file__).with_name("console")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# No inline script or style, nothing from elsewhere, never framed (clickjacking), no forms
# posted away; `connect-src 'self'` is the API, same origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Files have stable names (no build step, so no hashed names): the browser revalidates every
# time, and the ETag makes that a 304 when nothing changed, so an upgrade shows at once.
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_files(folder: Path = FILES_DIR) -> dict[str, StaticFile]:
    """Every servable file of the console folder, by name, read once at start-up."""
    files = {}
    for path in sorted(folder.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue  # a README or an editor's leftovers are not served
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[path.name] = StaticFile(body, content_type, etag)
    return files


def auth_mode(auth: object) -> str:
    """The auth mode the page should expect, from the app's authenticator."""
    if isinstance(auth, TokenAuth):
        return "tokens"
    if isinstance(auth, CloudflareAuth):
        return "cloudflare"
    if isinstance(auth, NoAuth):
        return "none"
    return "tokens"  # an unknown kind: ask for credentials, the API's 401 says the rest


def _problem(problem: Problem) -> web.Response:
    return web.Response(
        body=orjson.dumps(problem.document()),
        status=problem.status,
        content_type="application/problem+json",
        headers=SECURITY_HEADERS,
    )


def _respond(request: web.Request, file: StaticFile) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": CACHE_CONTROL, "ETag": file.etag}
    if file.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=file.body, headers={**headers, "Content-Type": file.content_type})


def _file_handler(files: dict[str, StaticFile]) -> Callable:
    async def serve(request: web.Request) -> web.Response:
        name = request.match_info.get("name") or "index.html"
        file = files.get(name)
        if file is None:
            return _problem(NotFound("No console file has this name.", pointer="name"))
        return _respond(request, file)

    return serve


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(f"{PREFIX}/")


def _config_handler(ctx: ApiContext) -> Callable:
    body = orjson.dumps(
        {
            "auth_mode": auth_mode(ctx.auth),
            "page_size": ctx.default_page_size,
            "max_page_size": ctx.max_page_size,
        }
    )
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}

    async def config(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", headers=headers)

    return config


def _is_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


@web.middleware
async def console_is_public(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Console paths are answered here, before authentication: a browser asks for the page
    before it has any credentials to give, and the page holds no data. Other paths go on
    through the app's middleware as before."""
    if not _is_console(request.path):
        return await handler(request)
    refused = request.match_info.http_exception
    if refused is not None:
        kind = MethodNotAllowed if refused.status == 405 else NotFound
        return _problem(kind())
    return await request.match_info.handler(request)


def add_console_routes(app: web.Application, ctx: ApiContext) -> None:
    """Routes `/console`, its files and `config.json`, answered without credentials."""
    serve = _file_handler(load_files())
    app.router.add_get(PREFIX, _redirect, allow_head=False)
    app.router.add_get(f"{PREFIX}/", serve)
    app.router.add_get(f"{PREFIX}/config.json", _config_handler(ctx), allow_head=False)
    app.router.add_get(PREFIX + "/{name:[A-Za-z0-9_.-]+}", serve)
    # Outermost, so it needs to know nothing of the app's own middleware (console requests
    # are not in the API's request metrics). The app is not frozen yet, so this is allowed.
    app.middlewares.insert(0, console_is_public)
