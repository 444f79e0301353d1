"""Receivers that misbehave, through the whole process: a slow host gets at most its bound of
attempts at once, and a failing host is paused by its circuit breaker (its jobs wait in the
outbox) while other work goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from tests.integration.test_email import Handler
from tests.support.process import NotifiProcess, free_port
from tests.support.receiver import Receiver

Start = Callable[[dict[str, str]], "asyncio.Future[str]"]


@pytest.fixture
async def start(settings_env: dict[str, str]) -> AsyncIterator:
    procs: list[NotifiProcess] = []

    async def run(extra: dict[str, str]) -> str:
        port = free_port()
        env = {
            **settings_env,
            "NOTIFI_API__PORT": str(port),
            "NOTIFI_POLLER__INTERVAL": "0.1",
            **extra,
        }
        proc = NotifiProcess(["--roles", "all"], env, ready_port=port).start()
        procs.append(proc)
        await proc.wait_ready()
        return f"http://127.0.0.1:{port}"

    yield run
    for proc in procs:
        assert await proc.terminate() == 0, proc.output()
        proc.kill()


async def post_many(api: str, urls: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for url in urls:
            body = {"body": "x", "destinations": [{"type": "webhook", "url": url}]}
            async with http.post(f"{api}/api/notifications", json=body) as r:
                assert r.status == 202


async def test_a_slow_host_gets_at_most_its_bound(start) -> None:
    api = await start({"NOTIFI_DELIVERY__MAX_IN_FLIGHT_PER_HOST": "2"})
    receiver = await Receiver(delay_s=0.3).start()
    try:
        await post_many(api, [receiver.url(f"slow{i}") for i in range(8)])
        for i in range(8):
            await receiver.wait_for(f"slow{i}", timeout_s=20)
        assert receiver.max_in_flight == 2
    finally:
        await receiver.stop()


async def test_a_failing_host_is_paused_by_its_breaker(start) -> None:
    api = await start(
        {
            "NOTIFI_DELIVERY__BREAKER_THRESHOLD": "2",
            "NOTIFI_DELIVERY__BREAKER_COOLDOWN": "2",
            "NOTIFI_DELIVERY__RETRY_SCHEDULE": "[30]",
        }
    )
    receiver = await Receiver(script={f"down{i}": [503] for i in range(6)}).start()
    try:
        await post_many(api, [receiver.url(f"down{i}") for i in range(2)])
        await receiver.wait_for("down1")
        await asyncio.sleep(0.2)  # the second failure is recorded: the breaker is open
        await post_many(api, [receiver.url(f"down{i}") for i in range(2, 6)])
        await asyncio.sleep(1.0)
        sent = sum(receiver.count(f"down{i}") for i in range(6))
        assert sent == 2  # the breaker opened after two failures; the rest wait
        await asyncio.sleep(2.5)  # past the pause: one trial, which fails again
        assert sum(receiver.count(f"down{i}") for i in range(6)) == 3
        async with aiohttp.ClientSession() as http, http.get(f"{api}/metrics") as r:
            text = await r.text()
        assert 'notifi_delivery_deferred_total{reason="open"}' in text
    finally:
        await receiver.stop()


async def test_email_and_slack_end_to_end(start) -> None:
    handler, smtp_port = Handler(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    receiver = await Receiver().start()
    try:
        api = await start({"NOTIFI_SMTP__PORT": str(smtp_port)})
        body = {
            "title": "Deploy of $service",
            "body": "done",
            "data": {"service": "api"},
            "destinations": [
                {"type": "email", "to": "oncall@example.com"},
                {"type": "slack", "url": receiver.url("slack")},
            ],
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{api}/api/notifications", json=body) as r,
        ):
            assert r.status == 202
        await receiver.wait_for("slack")
        for _ in range(100):
            if handler.messages:
                break
            await asyncio.sleep(0.05)
        assert handler.messages[0][2]["Subject"] == "Deploy of api"
        assert receiver.received["slack"][0].json["text"].startswith("Deploy of $service")
    finally:
        controller.stop()
        await receiver.stop()
