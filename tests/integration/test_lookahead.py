"""Jobs published ahead of their time (`poller.lookahead`) and held by the delivery process: the
real process (`--roles all`) and a loopback receiver. A change made while a job is held still
applies: a DELETE prevents it, a PATCH of its stored destination sends it to the new URL, and
nothing arrives before its time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import aiohttp
import asyncpg
import pytest

from tests.support.api import running_notifi
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(60)


def ahead(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
async def notifi(settings_env: dict[str, str]) -> AsyncIterator[tuple[str, Receiver]]:
    receiver = await Receiver().start()
    env = {**settings_env, "NOTIFI_POLLER__LOOKAHEAD": "10", "NOTIFI_POLLER__INTERVAL": "0.2"}
    try:
        async with running_notifi(env) as base:
            yield base, receiver
    finally:
        await receiver.stop()


async def call(method: str, url: str, body: object = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else {})


async def held(dsn: str, notification_id: str) -> None:
    """Until the notification is routed with nothing left in the outbox: its job is on the bus,
    loaded by the delivery process ahead of its time."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = await conn.fetchrow(
                "SELECT routed_at IS NOT NULL AS routed,"
                " (SELECT count(*) FROM outbox WHERE notification_id = $1) AS rows"
                " FROM notifications WHERE id = $1",
                UUID(notification_id),
            )
            if row is not None and row["routed"] and row["rows"] == 0:
                await asyncio.sleep(0.3)  # fetched and loaded by the delivery consumer
                return
            await asyncio.sleep(0.02)
        raise AssertionError("not published ahead of its time")
    finally:
        await conn.close()


async def test_a_held_job_goes_to_its_destination_as_patched_and_never_early(
    notifi: tuple[str, Receiver], dsn: str
) -> None:
    base, receiver = notifi
    status, dest = await call(
        "POST", f"{base}/api/destinations", {"type": "webhook", "url": receiver.url("old")}
    )
    assert status == 201, dest
    scheduled = ahead(3)
    status, doc = await call(
        "POST",
        f"{base}/api/notifications",
        {"body": "b", "scheduled_at": scheduled, "destinations": [{"destination_id": dest["id"]}]},
    )
    assert status == 202, doc
    await held(dsn, doc["id"])
    status, _ = await call(
        "PATCH", f"{base}/api/destinations/{dest['id']}", {"url": receiver.url("new")}
    )
    assert status == 200
    await receiver.wait_for("new", 1, 10)
    [arrival] = receiver.received["new"]
    assert arrival.at >= datetime.fromisoformat(scheduled).timestamp()
    await asyncio.sleep(0.5)
    assert receiver.count("old") == 0 and receiver.count("new") == 1


async def test_a_held_job_deleted_before_its_time_is_never_sent(
    notifi: tuple[str, Receiver], dsn: str
) -> None:
    base, receiver = notifi
    body = {"body": "b", "destinations": [{"type": "webhook", "url": receiver.url("gone")}]}
    status, doc = await call(
        "POST", f"{base}/api/notifications", {**body, "scheduled_at": ahead(2.5)}
    )
    assert status == 202, doc
    status, _ = await call(
        "POST", f"{base}/api/notifications", {**body, "scheduled_at": ahead(2.5)}
    )
    assert status == 202
    await held(dsn, doc["id"])
    status, deleted = await call("DELETE", f"{base}/api/notifications/{doc['id']}")
    assert status == 200 and deleted["status"] == "cancelled"
    await receiver.wait_for("gone", 1, 10)  # the one not deleted, at its time
    await asyncio.sleep(1.0)
    assert receiver.count("gone") == 1


async def test_a_held_job_survives_a_clean_restart_of_the_embedded_process(
    settings_env: dict[str, str], dsn: str
) -> None:
    """The in-process bus keeps nothing across a restart: on SIGTERM the jobs held ahead of
    their time go back to the outbox, and the next process sends them at their time (not a
    back-stop grace period later)."""
    receiver = await Receiver().start()
    env = {**settings_env, "NOTIFI_POLLER__LOOKAHEAD": "10", "NOTIFI_POLLER__INTERVAL": "0.2"}
    body = {"body": "b", "destinations": [{"type": "webhook", "url": receiver.url("restart")}]}
    try:
        async with running_notifi(env) as base:
            scheduled = ahead(5)
            status, doc = await call(
                "POST", f"{base}/api/notifications", {**body, "scheduled_at": scheduled}
            )
            assert status == 202, doc
            await held(dsn, doc["id"])
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE notification_id = $1", UUID(doc["id"])
            )
        finally:
            await conn.close()
        assert rows == 1  # written back for its time by the stopping process
        assert receiver.count("restart") == 0
        async with running_notifi(env):
            await receiver.wait_for("restart", 1, 15)
            [arrival] = receiver.received["restart"]
            assert arrival.at >= datetime.fromisoformat(scheduled).timestamp()
            assert arrival.at < datetime.fromisoformat(scheduled).timestamp() + 5
    finally:
        await receiver.stop()
