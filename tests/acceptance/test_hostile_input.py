"""Issue 14, rows 2, 4 and 5 on a real process (`supervisor.py --roles all`): data nested a
thousand levels deep, framing headers and CR/LF in webhook headers and email fields, and
non-canonical IP literals are each answered 422 at once, write nothing, and leave the process
up, ready, and delivering the next ordinary notification."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.support.process import NotifiProcess, free_port
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(180)

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def notifi(settings_env: dict[str, str]) -> AsyncIterator[tuple[str, NotifiProcess]]:
    port = free_port()
    env = {
        **settings_env,
        "NOTIFI_API__PORT": str(port),
        "NOTIFI_POLLER__INTERVAL": "0.1",
        "NOTIFI_DELIVERY__TIMEOUT": "2",
        "NOTIFI_LOG__FORMAT": "console",  # the format that once rendered locals of deep data
    }
    proc = NotifiProcess(["--roles", "all"], env, ready_port=port).start()
    try:
        await proc.wait_ready()
        yield f"http://127.0.0.1:{port}", proc
        assert await proc.terminate() == 0, proc.output()
    finally:
        proc.kill()


def deep_body(levels: int) -> bytes:
    """The issue's reproduction: data holding `levels` nested objects, about 6 bytes a level."""
    inner = '{"a":' * levels + "1" + "}" * levels
    return (
        '{"body":"b","destinations":[{"type":"webhook","url":"https://example.com/h"}],'
        f'"data":{{"x":{inner}}}}}'
    ).encode()


def webhook(**extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": "https://example.com/h", **extra}


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    *(
        (f"header {name}", webhook(headers={name: value}), f"/headers/{name}")
        for name, value in [
            ("Transfer-Encoding", "chunked"),
            ("Host", "internal.example"),
            ("Content-Length", "1"),
            ("Connection", "close"),
            ("Expect", "100-continue"),
            ("X Test", "x"),
            ("X-Evil", "a\r\nHost: internal.example"),
            ("X-Evil", "a\nb"),
        ]
    ),
    *(
        (f"url {host}", webhook(url=f"http://{host}:9/"), "/url")
        for host in ["127.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0", "1.2.3"]
    ),
    (
        "subject CRLF",
        {"type": "email", "to": "a@example.com", "subject": "hi\r\nBcc: v@example.com"},
        "/subject",
    ),
    ("to CRLF", {"type": "email", "to": "a@example.com\r\nBcc: v@example.com"}, "/to"),
]


async def problem(r: aiohttp.ClientResponse) -> dict[str, Any]:
    assert r.content_type == "application/problem+json", await r.text()
    return await r.json()


async def assert_up(api: str, proc: NotifiProcess, http: aiohttp.ClientSession) -> None:
    """The process is alive and ready, watched for a little while rather than sampled once."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert proc.proc is not None and proc.proc.poll() is None, proc.output()
        async with http.get(f"{api}/readyz", timeout=aiohttp.ClientTimeout(total=10)) as r:
            assert r.status == 200, await r.text()
        await asyncio.sleep(0.2)


async def test_hostile_input_is_refused_and_the_process_delivers_on(
    notifi: tuple[str, NotifiProcess], receiver: Receiver
) -> None:
    api, proc = notifi
    since = quote(datetime.now(UTC).isoformat())  # the database is shared with other tests
    async with aiohttp.ClientSession() as http:
        # Row 2: a 6 KB body nested 1000 levels deep is a quick 422, single and bulk.
        for levels in (1000, 200, 40):
            started = time.monotonic()
            async with http.post(
                f"{api}/api/notifications", data=deep_body(levels), headers=JSON
            ) as r:
                assert r.status == 422, await r.text()
                assert (await problem(r))["errors"][0]["pointer"].startswith("/data")
            assert time.monotonic() - started < 5.0  # milliseconds in practice; was minutes
        bulk = b'{"notifications":[' + deep_body(1000) + b"]}"
        async with http.post(f"{api}/api/notifications/bulk", data=bulk, headers=JSON) as r:
            doc = await r.json()
            pointers = (
                [doc["errors"][0]["pointer"]]
                if r.status == 422
                else [i["problem"]["errors"][0]["pointer"] for i in doc["items"]]
            )
            assert r.status in (200, 422) and pointers[0].startswith("/notifications/0/data"), doc

        # Rows 4 and 5, and the door half of row 1: each a 422 naming the field.
        for case, destination, where in HOSTILE:
            body = {"title": "t", "body": "b", "destinations": [destination]}
            async with http.post(
                f"{api}/api/notifications", data=json.dumps(body), headers=JSON
            ) as r:
                assert r.status == 422, (case, await r.text())
                doc = await problem(r)
                assert doc["errors"][0]["pointer"] == f"/destinations/0{where}", (case, doc)
            bulk_body = {"notifications": [body]}
            async with http.post(
                f"{api}/api/notifications/bulk", data=json.dumps(bulk_body), headers=JSON
            ) as r:
                assert r.status == 200, (case, await r.text())
                item = (await r.json())["items"][0]
                assert item["status"] == 422, (case, item)
                pointer = item["problem"]["errors"][0]["pointer"]
                assert pointer == f"/notifications/0/destinations/0{where}", (case, item)

        await assert_up(api, proc, http)
        async with http.get(f"{api}/api/notifications?deleted=true&created_after={since}") as r:
            assert r.status == 200
            assert (await r.json())["items"] == [], "a refused notification was written"

        # The next ordinary notification (a multi-line title, ordinary headers) is delivered.
        ordinary = {
            "title": "Deploy finished\nall green",
            "body": "b",
            "data": {"nested": {"but": {"not": "deep"}}},
            "destinations": [
                webhook(
                    url=receiver.url("ok"),
                    headers={"Authorization": "Bearer t0ken", "X-Custom": "yes"},
                )
            ],
        }
        async with http.post(f"{api}/api/notifications", json=ordinary) as r:
            assert r.status == 202, await r.text()
            nid = (await r.json())["id"]
        await receiver.wait_for("ok", timeout_s=30)
        got = receiver.received["ok"][0]
        assert got.headers["Authorization"] == "Bearer t0ken"
        assert got.headers["X-Custom"] == "yes" and got.headers["webhook-id"] == nid
        deadline = time.monotonic() + 20
        while True:
            async with http.get(f"{api}/api/notifications/{nid}") as r:
                status = (await r.json())["status"]
            if status == "delivered" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert status == "delivered"
        async with http.get(f"{api}/api/notifications?deleted=true&created_after={since}") as r:
            assert [i["id"] for i in (await r.json())["items"]] == [nid]
        await assert_up(api, proc, http)
