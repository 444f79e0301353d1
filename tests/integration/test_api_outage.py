"""Every route answers 503 with Retry-After while Postgres cannot be reached, never a 500."""

from __future__ import annotations

import pytest

from notifi.store import Store
from tests.support.api import api_client, creds
from tests.support.process import free_port

ID = "01936f6e-0000-7000-8000-000000000000"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/notifications"),
        ("GET", f"/api/notifications/{ID}"),
        ("DELETE", f"/api/notifications/{ID}"),
        ("GET", "/api/destinations"),
        ("GET", f"/api/destinations/{ID}"),
        ("DELETE", f"/api/destinations/{ID}"),
        ("GET", "/api/stats"),
    ],
)
async def test_a_route_answers_503_while_the_database_is_away(method: str, path: str) -> None:
    # Nothing listens on this port: every connection attempt is refused at once.
    store = await Store.open(f"postgresql://postgres@127.0.0.1:{free_port()}/x", min_size=0)
    try:
        async with api_client(store) as client:
            response = await client.request(method, path, headers=creds("alpha"))
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert response.content_type == "application/problem+json"
            assert (await response.json())["status"] == 503
    finally:
        await store.close()
