"""One hostile notification must never take the service down (issue 14, row 1), shown on the
real process: `supervisor.py --roles all` with an SMTP server and a webhook receiver on
loopback is sent the reproductions that used to crash every delivery worker; it stays up,
answers /readyz, delivers ordinary multi-line titles with a one-line Subject, and delivers
the next ordinary notification."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from tests.integration.test_email import Handler
from tests.support.process import NotifiProcess, free_port
from tests.support.receiver import Receiver

pytestmark = pytest.mark.timeout(120)


@dataclass
class Service:
    api: str
    proc: NotifiProcess
    smtp: Handler
    receiver: Receiver


@pytest.fixture
async def service(settings_env: dict[str, str]) -> AsyncIterator[Service]:
    smtp, smtp_port = Handler(), free_port()
    controller = Controller(smtp, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    receiver = await Receiver().start()
    port = free_port()
    env = {
        **settings_env,
        "NOTIFI_API__PORT": str(port),
        "NOTIFI_POLLER__INTERVAL": "0.1",
        "NOTIFI_SMTP__PORT": str(smtp_port),
        "NOTIFI_DELIVERY__RETRY_SCHEDULE": "[0.3]",
    }
    proc = NotifiProcess(["--roles", "all"], env, ready_port=port).start()
    try:
        await proc.wait_ready()
        yield Service(f"http://127.0.0.1:{port}", proc, smtp, receiver)
        assert await proc.terminate() == 0, proc.output()
    finally:
        proc.kill()
        controller.stop()
        await receiver.stop()


async def post(api: str, body: dict) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{api}/api/notifications", json=body) as r,
    ):
        return r.status, await r.json(content_type=None)


async def wait_final(api: str, nid: str, timeout_s: float = 20.0) -> dict:
    """The notification once nothing about it is still open."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{api}/api/notifications/{nid}") as r:
                doc = await r.json()
            if doc["status"] in ("delivered", "failed", "partially_failed", "cancelled"):
                return doc
            assert time.monotonic() < deadline, doc
            await asyncio.sleep(0.05)


async def mail_to(smtp: Handler, message_id: str, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        for _, rcpt, mail in smtp.messages:
            if mail["Message-ID"] == f"<{message_id}@notifi>":
                return rcpt, mail
        assert time.monotonic() < deadline, f"no mail for {message_id}"
        await asyncio.sleep(0.05)


def email(**destination: object) -> dict:
    return {"type": "email", "to": "oncall@example.com", **destination}


async def test_poison_notifications_do_not_take_the_process_down(service: Service) -> None:
    api, smtp = service.api, service.smtp
    # 1. An ordinary multi-line title: delivered, its Subject one line.
    status, doc = await post(
        api, {"title": "Deploy finished\nall green", "body": "b", "destinations": [email()]}
    )
    assert status == 202, doc
    multi_line = doc["id"]
    # 2. A data value with CR/LF filled into the Subject: delivered, no header injected.
    status, doc = await post(
        api,
        {
            "title": "Hello $who",
            "body": "b",
            "data": {"who": "x\r\nBcc: v@example.com"},
            "destinations": [email()],
        },
    )
    assert status == 202, doc
    templated = doc["id"]
    # 3. An explicit subject with CR/LF: refused at the door (422), or, where it is still
    # accepted, ends failed without a crash.
    status, doc = await post(
        api,
        {"body": "b", "destinations": [email(subject="hi\r\nBcc: v@example.com")]},
    )
    assert status in (202, 422), doc
    explicit = doc["id"] if status == 202 else None
    # 4. Framing headers on a webhook: refused (422), or sent without them.
    status, doc = await post(
        api,
        {
            "body": "b",
            "destinations": [
                {
                    "type": "webhook",
                    "url": service.receiver.url("framed"),
                    "headers": {"Transfer-Encoding": "chunked", "Content-Length": "1"},
                }
            ],
        },
    )
    assert status in (202, 422), doc
    framed = doc["id"] if status == 202 else None

    done = await wait_final(api, multi_line)
    assert done["status"] == "delivered", done
    _, mail = await mail_to(smtp, multi_line)
    assert mail["Subject"] == "Deploy finished all green"

    done = await wait_final(api, templated)
    assert done["status"] == "delivered", done
    rcpt, mail = await mail_to(smtp, templated)
    assert rcpt == ["oncall@example.com"] and mail["Bcc"] is None
    assert mail["Subject"] == "Hello x Bcc: v@example.com"

    if explicit is not None:
        done = await wait_final(api, explicit)
        assert done["status"] == "failed", done
        assert all(m["Message-ID"] != f"<{explicit}@notifi>" for _, _, m in smtp.messages)
    if framed is not None:
        done = await wait_final(api, framed)
        assert done["status"] == "delivered", done
        [got] = service.receiver.received["framed"]
        assert "Transfer-Encoding" not in got.headers
        assert int(got.headers["Content-Length"]) == len(got.body)

    # The process stayed up: still running a few seconds on, ready, and delivering.
    await asyncio.sleep(3)
    assert service.proc.proc is not None and service.proc.proc.poll() is None, service.proc.output()
    async with aiohttp.ClientSession() as http, http.get(f"{api}/readyz") as r:
        assert r.status == 200, await r.text()
    status, doc = await post(
        api,
        {
            "title": "After",
            "body": "ordinary",
            "destinations": [{"type": "webhook", "url": service.receiver.url("after")}, email()],
        },
    )
    assert status == 202, doc
    await service.receiver.wait_for("after")
    await mail_to(smtp, doc["id"])
    assert (await wait_final(api, doc["id"]))["status"] == "delivered"
    logs = service.proc.output(limit=None)
    assert "actor_crashed" not in logs and "supervisor_giving_up" not in logs
