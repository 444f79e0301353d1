"""The roles as separate processes over a real Kafka-protocol broker (tansu): api, router, two
pollers on split ranges, delivery. A SIGKILL of delivery mid-flight loses nothing and sends
nothing twice; SIGTERM makes every role exit 0."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.process import NotifiProcess, free_port
from tests.support.receiver import Receiver
from tests.support.tansu import TansuBroker, kafka_env

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


# What each role's /metrics must show after real traffic (counters above zero).
EXPECTED = {
    "api": {"notifi_api_requests", "notifi_notifications_accepted"},
    "router": {"notifi_notifications_routed", "notifi_consumer_lag_messages"},
    "poller": {"notifi_poller_dispatched", "notifi_poller_lag_seconds"},
    "delivery": {
        "notifi_delivery_attempts",
        "notifi_delivery_lateness_seconds",
        "notifi_delivery_duration_seconds",
        "notifi_consumer_lag_messages",
        "notifi_mailbox_depth",
    },
}


async def check_metrics(role_name: str, port: int) -> None:
    """Scrapes a process and parses the text with Prometheus's own parser."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in EXPECTED[role_name]:
        assert name in families, (role_name, name, sorted(families))
        family = families[name]
        assert family.samples, (role_name, name)
        if family.type in ("counter", "histogram"):
            assert max(s.value for s in family.samples) > 0, (role_name, name)


def role(args: list[str], env: dict[str, str]) -> NotifiProcess:
    port = free_port()
    key = "NOTIFI_API__PORT" if args[1] == "api" else "NOTIFI_METRICS__PORT"
    return NotifiProcess(args, {**env, key: str(port)}, ready_port=port)


async def test_split_roles_survive_a_killed_delivery(
    broker: TansuBroker, settings_env: dict[str, str]
) -> None:
    env = {
        **settings_env,
        **kafka_env(broker.bootstrap, f"t{uuid.uuid4().hex[:8]}"),
        "NOTIFI_KAFKA__PARTITIONS": "4",
        # tansu holds each static join for 6 s or more (README, faults): dynamic members here.
        "NOTIFI_KAFKA__STATIC_MEMBERSHIP": "false",
        "NOTIFI_POLLER__INTERVAL": "0.2",
        # The scheduled half (1-2.8 s ahead) goes through the outbox and the pollers, not the
        # router's lookahead: every role's own path is taken, and its metrics checked below.
        "NOTIFI_POLLER__LOOKAHEAD": "0.5",
        "NOTIFI_POLLER__BACKSTOP_INTERVAL": "1",
        "NOTIFI_POLLER__BACKSTOP_GRACE": "5",
        "NOTIFI_DELIVERY__CLAIM_TTL": "3",
        "NOTIFI_SUPERVISOR__SHUTDOWN_TIMEOUT": "5",
    }
    receiver = await Receiver().start()
    api = role(["--roles", "api"], env)
    procs = [
        api,
        role(["--roles", "router"], env),
        role(["--roles", "poller", "--replica-index", "0", "--replica-count", "2"], env),
        role(["--roles", "poller", "--replica-index", "1", "--replica-count", "2"], env),
    ]
    delivery = role(["--roles", "delivery"], env)
    try:
        for p in [*procs, delivery]:
            p.start()
        for p in [*procs, delivery]:
            await p.wait_ready(60)
        url = f"http://127.0.0.1:{api.ready_port}/api/notifications"
        ids: dict[str, str] = {}
        kill_at = 0.0
        async with aiohttp.ClientSession() as http:
            for i in range(120):
                body: dict = {
                    "body": f"n{i}",
                    "destinations": [{"type": "webhook", "url": receiver.url(f"n{i}")}],
                }
                if i % 2:
                    at = datetime.now(UTC) + timedelta(seconds=1 + (i % 7) * 0.3)
                    body["scheduled_at"] = at.isoformat()
                async with http.post(url, json=body) as r:
                    assert r.status == 202, await r.text()
                    ids[f"n{i}"] = (await r.json())["id"]
                if i == 60:
                    await receiver.wait_for("n0", timeout_s=30)  # deliveries are flowing
                    kill_at = time.time()
                    delivery.kill()  # SIGKILL mid-flight
                await asyncio.sleep(0.01)
        delivery = role(["--roles", "delivery"], env)
        delivery.start()
        await delivery.wait_ready(60)
        for path in ids:
            await receiver.wait_for(path, timeout_s=60)  # nothing lost
        await asyncio.sleep(4)  # leases run out; anything pending would arrive now
        dups = {p: [r.at for r in receiver.received[p]] for p in ids if receiver.count(p) > 1}
        # The only duplicate a crash may cause: a request the receiver had got while the killed
        # process had not yet recorded its answer (receivers dedupe by webhook-id for that).
        unexplained = {p: ats for p, ats in dups.items() if abs(ats[0] - kill_at) > 0.2}
        print(f"\n{len(ids)} delivered after SIGKILL; in-flight duplicates: {len(dups)}")
        assert unexplained == {}
        for p, nid in ids.items():
            assert {r.headers["webhook-id"] for r in receiver.received[p]} == {nid}
        async with aiohttp.ClientSession() as http:
            for nid in ids.values():
                async with http.get(f"{url}/{nid}") as r:
                    assert (await r.json())["status"] == "delivered"
        roles = {"api": api, "router": procs[1], "poller": procs[2], "delivery": delivery}
        for name, proc in roles.items():
            await check_metrics(name, proc.ready_port)
        await check_metrics("poller", procs[3].ready_port)
        codes = [await p.terminate(30) for p in [*procs, delivery]]
        assert codes == [0] * len(codes), [p.output() for p in [*procs, delivery]]
    finally:
        for p in [*procs, delivery]:
            p.kill()
        await receiver.stop()
