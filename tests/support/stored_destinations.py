"""Stored destinations for the tests of notifications that refer to them: made through the
destinations store (notifi.store.destinations, what the destinations API writes with), the
API in process with
clients of the test's own (the `destinations` table is not emptied between tests, so another
test's destinations never match), and the reads the assertions need."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from aiohttp.test_utils import TestClient, TestServer
from uuid_utils.compat import uuid7

from notifi.api.app import ApiContext, build_app
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.auth import TokenAuth
from notifi.store import Store
from notifi.store.destinations import Destinations, Fields, NewDestination
from tests.support.api import accepting, creds

CONFIGURED = {
    "ops": {"type": "webhook", "url": "https://ops.example.com/hook"},
    "shared": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x"},
}


def client_ids() -> list[str]:
    """Two client ids of a test's own; the second is made an admin by `topic_api`."""
    tag = uuid.uuid4().hex[:8]
    return [f"topics-{tag}-a", f"topics-{tag}-b"]


@asynccontextmanager
async def topic_api(store: Store, names: list[str]) -> AsyncIterator[TestClient]:
    """The API in process with these clients (the second an admin) and two configured named
    destinations (CONFIGURED)."""

    async def ready() -> dict[str, bool]:
        return {"postgres": True}

    clients: list[dict[str, Any]] = [
        {"id": c, "secret_sha256": hashlib.sha256(f"{c}-secret".encode()).hexdigest()}
        for c in names
    ]
    clients[1]["admin"] = True
    async with accepting(store) as submit:
        ctx = ApiContext(
            store=store,
            validator=Validator(Limits(5, 50, 500, 500, max_bulk=10), CONFIGURED, 1024),
            submit=submit,
            ready=ready,
            default_page_size=50,
            max_page_size=200,
            auth=TokenAuth(clients),
        )
        async with TestClient(TestServer(build_app(ctx))) as client:
            yield client


async def stored(
    store: Store,
    client_id: str,
    *,
    topics: Sequence[str] = (),
    name: str | None = None,
    kind: str = "webhook",
    enabled: bool = True,
) -> UUID:
    """A stored destination of `client_id`, as the destinations API makes it."""
    destination_id = UUID(str(uuid7()))
    config = {"url": f"https://{destination_id}.example.com/hook"}
    fields = Fields(name, "", config, list(topics), None, enabled)
    await Destinations(store.pool).create(
        NewDestination(destination_id, client_id, kind, None, fields)
    )
    return destination_id


async def deliveries(store: Store, notification_id: str | UUID) -> list[dict[str, Any]]:
    rows = await store.pool.fetch(
        "SELECT position, kind, destination, destination_id, status FROM deliveries "
        "WHERE notification_id = $1 ORDER BY position",
        UUID(str(notification_id)),
    )
    return [dict(r) for r in rows]


async def notifications_of(store: Store, client_id: str) -> int:
    return await store.pool.fetchval(
        "SELECT count(*) FROM notifications WHERE client_id = $1", client_id
    )


def post(api: TestClient, client_id: str, body: dict, **headers: str) -> Any:
    return api.post("/api/notifications", json=body, headers={**creds(client_id), **headers})
