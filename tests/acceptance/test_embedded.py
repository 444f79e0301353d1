"""The main job (`supervisor.py --roles all`, in-process bus) as a real process, driven over
HTTP, delivering to real webhook receivers on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.process import NotifiProcess, free_port
from tests.support.receiver import Receiver

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(
        script={"flaky": [500, 500, 200], "bad": [400], "down": [503], "fixed": [400, 200]}
    ).start()
    yield r
    await r.stop()


@pytest.fixture
async def notifi(
    settings_env: dict[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    port = free_port()
    env = {
        **settings_env,
        "NOTIFI_API__PORT": str(port),
        "NOTIFI_POLLER__INTERVAL": "0.1",
        "NOTIFI_DELIVERY__RETRY_SCHEDULE": "[0.3, 0.3]",
        "NOTIFI_DELIVERY__RETRY_JITTER": "0",
        "NOTIFI_DELIVERY__TIMEOUT": "2",
        "NOTIFI_LOG__LEVEL": "debug",
    }
    proc = NotifiProcess(["--roles", "all"], env, ready_port=port).start()
    try:
        await proc.wait_ready()
        request.node.notifi_process = proc
        yield f"http://127.0.0.1:{port}"
        assert await proc.terminate() == 0, proc.output()
    finally:
        proc.kill()


async def post(api: str, body: dict) -> dict:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{api}/api/notifications", json=body) as r,
    ):
        assert r.status == 202, await r.text()
        assert r.headers["Location"].startswith("/api/notifications/")
        return await r.json()


async def get(api: str, path: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{api}{path}") as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def wait_status(api: str, nid: str, status: str, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        doc = await get(api, f"/api/notifications/{nid}")
        if doc["status"] == status or time.monotonic() > deadline:
            assert doc["status"] == status, doc
            return doc
        await asyncio.sleep(0.05)


async def test_delivers_a_signed_webhook(
    notifi: str, receiver: Receiver, request: pytest.FixtureRequest
) -> None:
    doc = await post(
        notifi,
        {
            "title": "Deploy",
            "body": "api v2.3 is live",
            "data": {"service": "api"},
            "destinations": [{"type": "webhook", "url": receiver.url("ok"), "secret": SECRET}],
        },
    )
    await receiver.wait_for("ok")
    got = receiver.received["ok"][0]
    payload = Webhook(SECRET).verify(got.body, got.headers)  # raises when the signature is bad
    assert payload["id"] == doc["id"] == got.headers["webhook-id"]
    assert payload["body"] == "api v2.3 is live" and payload["data"] == {"service": "api"}
    done = await wait_status(notifi, doc["id"], "delivered")
    assert done["destinations"][0]["attempts"] == 1
    assert SECRET[6:] not in str(done)
    await asyncio.sleep(0.5)
    assert receiver.count("ok") == 1
    logs = request.node.notifi_process.output(limit=None)  # the whole log, not a tail
    assert "started" in logs  # the log is there to look at
    assert SECRET[6:] not in logs  # and never carries the secret


async def test_scheduled_is_never_early(notifi: str, receiver: Receiver) -> None:
    lateness = []
    docs = []
    for i in range(5):
        at = datetime.now(UTC) + timedelta(seconds=1.5 + i * 0.1)
        docs.append(
            (
                at,
                await post(
                    notifi,
                    {
                        "body": "later",
                        "scheduled_at": at.isoformat(),
                        "destinations": [{"type": "webhook", "url": receiver.url(f"s{i}")}],
                    },
                ),
            )
        )
    assert all(d["status"] == "scheduled" for _, d in docs)
    for i, (at, _) in enumerate(docs):
        await receiver.wait_for(f"s{i}", timeout_s=10)
        arrived = receiver.received[f"s{i}"][0].at
        lateness.append(arrived - at.timestamp())
    print(f"\nscheduled lateness (s): {[round(x, 4) for x in lateness]}")
    assert min(lateness) >= 0, lateness  # never early
    assert max(lateness) < 1.0, lateness


async def test_delete_before_due_prevents_delivery(notifi: str, receiver: Receiver) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1)
    doc = await post(
        notifi,
        {
            "body": "x",
            "scheduled_at": at.isoformat(),
            "destinations": [{"type": "webhook", "url": receiver.url("del")}],
        },
    )
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{notifi}/api/notifications/{doc['id']}") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "cancelled"
        async with http.delete(f"{notifi}/api/notifications/{doc['id']}") as r:
            assert r.status == 200  # harmless again
    await asyncio.sleep(2.0)
    assert receiver.count("del") == 0
    listed = await get(notifi, "/api/notifications")
    assert doc["id"] not in [n["id"] for n in listed["items"]]
    listed = await get(notifi, "/api/notifications?deleted=true")
    assert doc["id"] in [n["id"] for n in listed["items"]]


async def test_retries_then_succeeds(notifi: str, receiver: Receiver) -> None:
    doc = await post(
        notifi, {"body": "x", "destinations": [{"type": "webhook", "url": receiver.url("flaky")}]}
    )
    done = await wait_status(notifi, doc["id"], "delivered")
    assert receiver.count("flaky") == 3
    assert done["destinations"][0]["attempts"] == 3
    ids = {r.headers["webhook-id"] for r in receiver.received["flaky"]}
    assert ids == {doc["id"]}  # stable across retries


async def test_client_error_fails_at_once(notifi: str, receiver: Receiver) -> None:
    doc = await post(
        notifi, {"body": "x", "destinations": [{"type": "webhook", "url": receiver.url("bad")}]}
    )
    done = await wait_status(notifi, doc["id"], "failed")
    assert receiver.count("bad") == 1
    assert done["destinations"][0]["last_status_code"] == 400


async def test_always_failing_ends_failed_after_the_schedule(
    notifi: str, receiver: Receiver
) -> None:
    doc = await post(
        notifi,
        {
            "body": "x",
            "destinations": [
                {"type": "webhook", "url": receiver.url("down")},
                {"type": "webhook", "url": receiver.url("fine")},
            ],
        },
    )
    done = await wait_status(notifi, doc["id"], "partially_failed")
    assert receiver.count("down") == 3  # 1 + len(retry_schedule)
    assert [d["status"] for d in done["destinations"]] == ["failed", "delivered"]
    assert done["destinations"][0]["attempts"] == 3


async def test_attempt_log(notifi: str, receiver: Receiver) -> None:
    doc = await post(
        notifi, {"body": "x", "destinations": [{"type": "webhook", "url": receiver.url("flaky")}]}
    )
    await wait_status(notifi, doc["id"], "delivered")
    log = await get(notifi, f"/api/notifications/{doc['id']}/attempts")
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in log["items"]] == [
        (1, "retry", 500),
        (2, "retry", 500),
        (3, "delivered", 200),
    ]
    assert all(
        a["duration_ms"] >= 0 and a["destination"]["type"] == "webhook" for a in log["items"]
    )
    assert "HTTP 500" in log["items"][0]["error"]


async def test_replay_requeues_failed_deliveries_only(notifi: str, receiver: Receiver) -> None:
    doc = await post(
        notifi,
        {
            "body": "x",
            "destinations": [
                {"type": "webhook", "url": receiver.url("fixed")},
                {"type": "webhook", "url": receiver.url("fine2")},
            ],
        },
    )
    await wait_status(notifi, doc["id"], "partially_failed")
    url = f"{notifi}/api/notifications/{doc['id']}/retry"
    async with aiohttp.ClientSession() as http, http.post(url) as r:
        assert r.status == 202
    done = await wait_status(notifi, doc["id"], "delivered")
    assert receiver.count("fixed") == 2 and receiver.count("fine2") == 1
    assert [d["attempts"] for d in done["destinations"]] == [2, 1]


@pytest.mark.parametrize("path", ["/retry", "/attempts"])
async def test_replay_and_attempts_of_unknown_ids(notifi: str, path: str) -> None:
    async with aiohttp.ClientSession() as http:
        for nid in ["nope", "0190e8c8-aaaa-7bbb-8ccc-ddddeeeeffff"]:
            method = http.post if path == "/retry" else http.get
            async with method(f"{notifi}/api/notifications/{nid}{path}") as r:
                assert r.status == 404
                assert r.content_type == "application/problem+json"


async def test_json_logs_carry_context_and_no_secret(
    notifi: str, receiver: Receiver, request: pytest.FixtureRequest
) -> None:
    doc = await post(
        notifi,
        {
            "body": "x",
            "destinations": [
                {
                    "type": "webhook",
                    "url": receiver.url("flaky"),
                    "secret": SECRET,
                    "headers": {"Authorization": "Bearer hunter2"},
                }
            ],
        },
    )
    await wait_status(notifi, doc["id"], "delivered")
    await asyncio.sleep(0.2)
    output = request.node.notifi_process.output(limit=None)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert lines and all("level" in e and "timestamp" in e for e in lines)
    mine = [e for e in lines if e.get("notification_id") == doc["id"]]
    events = {e["event"] for e in mine}
    assert {"notification_accepted", "delivery_attempted"} <= events
    for e in mine:
        if e["event"] == "delivery_attempted":
            assert e["actor"].startswith("worker-") and e["client_id"] == "anonymous"
    assert SECRET[6:] not in output and "hunter2" not in output
