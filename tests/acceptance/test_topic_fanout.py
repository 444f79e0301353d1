"""Topic fan-out end to end: the main job (`supervisor.py --roles all`) as a real process,
one notification to a topic with three subscribed stored destinations (one subscribed to "*")
and one that is not, delivered to real webhook receivers on loopback: each of the three gets
it exactly once, the fourth nothing.

The stored destinations are inserted with SQL, as the destinations API stores them (their
fields in `config`); the delivery side reads them when it sends."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
import pytest
from uuid_utils.compat import uuid7

from tests.support.api import running_notifi
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_a_topic_reaches_its_three_subscribers_once_each(
    settings_env: dict[str, str], dsn: str, receiver: Receiver
) -> None:
    client_id = f"fanout-{uuid.uuid4().hex[:8]}"  # its own client: no other test's destinations
    secret = f"{client_id}-secret"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    env = {
        **settings_env,
        "NOTIFI_AUTH__MODE": "tokens",
        "NOTIFI_AUTH__CLIENTS": f'[{{id = "{client_id}", secret_sha256 = "{digest}"}}]',
        "NOTIFI_POLLER__INTERVAL": "0.1",
    }
    headers = {"CF-Access-Client-Id": client_id, "CF-Access-Client-Secret": secret}
    subscriptions = {
        "deploys": ["deploys"],
        "two-topics": ["builds", "deploys"],
        "everything": ["*"],
        "builds-only": ["builds"],
    }
    async with running_notifi(env) as api:
        conn = await asyncpg.connect(dsn)
        try:
            for path, topics in subscriptions.items():
                await conn.execute(
                    "INSERT INTO destinations (id, client_id, name, kind, config, topics) "
                    "VALUES ($1, $2, $3, 'webhook', $4::jsonb, $5)",
                    uuid7(),
                    client_id,
                    path,
                    orjson.dumps({"url": receiver.url(path)}).decode(),
                    topics,
                )
        finally:
            await conn.close()
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.post(
                f"{api}/api/notifications", json={"body": "v2 is out", "topic": "deploys"}
            ) as r,
        ):
            assert r.status == 202, await r.text()
            accepted = await r.json()
        assert len(accepted["destinations"]) == 3
        nid = accepted["id"]
        for path in ("deploys", "two-topics", "everything"):
            await receiver.wait_for(path)
        doc = await wait_status_as(api, nid, headers)
        assert {d["status"] for d in doc["destinations"]} == {"delivered"}
    # The process has stopped: nothing more can arrive.
    assert {p: receiver.count(p) for p in subscriptions} == {
        "deploys": 1,
        "two-topics": 1,
        "everything": 1,
        "builds-only": 0,
    }
    for path in ("deploys", "two-topics", "everything"):
        assert receiver.received[path][0].json["id"] == nid


async def wait_status_as(
    api: str, nid: str, headers: dict[str, str], timeout_s: float = 20.0
) -> dict:
    """The notification once it is delivered, read with this test's credentials."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(headers=headers) as http:
        while True:
            async with http.get(f"{api}/api/notifications/{nid}") as r:
                assert r.status == 200, await r.text()
                doc = await r.json()
            if doc["status"] == "delivered" or time.monotonic() > deadline:
                assert doc["status"] == "delivered", doc
                return doc
            await asyncio.sleep(0.05)
