"""The REST API for integration tests: in process on the real store (an accept writer on a
memory bus, an authenticator of the test's choice, default service tokens for the clients
below, and an aiohttp test client), or the whole main job as a real process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import TestClient, TestServer

from actors.api import AcceptWriter, Unpublished, submit
from notifi.api.app import ApiContext, build_app
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.auth import Authenticator, TokenAuth
from notifi.bus import MemoryBus
from notifi.marks import ChangeMarks
from notifi.model import NewNotification
from notifi.runtime import Mailbox
from notifi.store import Accepted, Store
from tests.support.process import NotifiProcess, free_port

HOOK = {"type": "webhook", "url": "https://example.com/hook"}


def ahead(seconds: float) -> datetime:
    """Now plus `seconds`, made when called (a test's times must not age during a long run)."""
    return datetime.now(UTC) + timedelta(seconds=seconds)


def iso(when: datetime) -> str:
    return when.isoformat()


Submit = Callable[[NewNotification], Awaitable[Accepted]]
CLIENTS = [
    {"id": "alpha", "secret_sha256": hashlib.sha256(b"alpha-secret").hexdigest()},
    {"id": "beta", "secret_sha256": hashlib.sha256(b"beta-secret").hexdigest()},
    {"id": "root", "secret_sha256": hashlib.sha256(b"root-secret").hexdigest(), "admin": True},
    {
        "id": "viewer",
        "secret_sha256": hashlib.sha256(b"viewer-secret").hexdigest(),
        "read_only": True,
    },
]


def creds(client_id: str) -> dict[str, str]:
    return {"CF-Access-Client-Id": client_id, "CF-Access-Client-Secret": f"{client_id}-secret"}


@asynccontextmanager
async def accepting(
    store: Store,
) -> AsyncIterator[Callable[[NewNotification], Awaitable[Accepted]]]:
    """The accept writer on an in-process bus, as the api role runs it; yields the `submit` an
    `ApiContext` takes."""
    bus = MemoryBus()
    await bus.start()
    inbox: Mailbox = Mailbox("accept", 100)
    writer = AcceptWriter(inbox, store, bus, "t.notifications", 50, 0.001, Unpublished())
    task = asyncio.create_task(writer.run())
    try:
        yield lambda n: submit(inbox, n)
    finally:
        writer.request_stop()
        task.cancel()
        await bus.stop()


@asynccontextmanager
async def api_client(
    store: Store, auth: Authenticator | None = None, marks: ChangeMarks | None = None
) -> AsyncIterator[TestClient]:
    async def ready() -> dict[str, bool]:
        return {"postgres": True}

    async with accepting(store) as submit_:
        ctx = ApiContext(
            store=store,
            validator=Validator(Limits(5, 50, 500, 500, max_bulk=10), {}, 1024),
            submit=submit_,
            ready=ready,
            default_page_size=50,
            max_page_size=200,
            auth=auth or TokenAuth(CLIENTS),
            marks=marks,
        )
        async with TestClient(TestServer(build_app(ctx))) as client:
            yield client


@asynccontextmanager
async def running_notifi(env: dict[str, str]) -> AsyncIterator[str]:
    """`supervisor.py --roles all` as a real process (in-process bus) with `env` over the test
    settings; yields its base URL, and checks that it stops cleanly."""
    port = free_port()
    proc = NotifiProcess(
        ["--roles", "all"], {**env, "NOTIFI_API__PORT": str(port)}, ready_port=port
    ).start()
    try:
        await proc.wait_ready()
        yield f"http://127.0.0.1:{port}"
        assert await proc.terminate() == 0, proc.output()
    finally:
        proc.kill()
