"""A stored destination's `rate_limit` holds across delivery processes: two delivery processes
and a poller (separate processes over a private tansu broker) send 100 deliveries to a
destination limited to 5 per second. They take at least 19 s (99 gaps of 0.2 s, the bound the
issue asks for), and each arrives exactly once.

The deliveries are written straight into Postgres as the accept and the router leave them (a
delivery naming the stored destination, an outbox row due now, the notification routed): what
is under test is the delivery side, not how a notification names its destination."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from uuid_utils.compat import uuid7

from notifi.store import Store
from notifi.store.destinations import Destinations, Fields, NewDestination
from tests.support.factories import new_notification
from tests.support.process import NotifiProcess, free_port
from tests.support.receiver import Receiver
from tests.support.tansu import TansuBroker, kafka_env

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

COUNT = 100
RATE_PER_S = 5


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


async def attempts_made(port: int) -> int:
    """The delivery attempts a process counted (its /metrics, read with Prometheus's parser)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return int(
        sum(
            s.value
            for family in text_string_to_metric_families(text)
            if family.name == "notifi_delivery_attempts"
            for s in family.samples
            if s.name.endswith("_total")
        )
    )


def role(args: list[str], env: dict[str, str]) -> NotifiProcess:
    port = free_port()
    return NotifiProcess(args, {**env, "NOTIFI_METRICS__PORT": str(port)}, ready_port=port)


async def queue_deliveries(store: Store, destination_id: uuid.UUID, paths: list[str]) -> None:
    """One notification per path, its delivery naming the stored destination, due now."""
    batch = [new_notification(client_id="client-r", partition_key=i) for i in range(len(paths))]
    await store.accept(batch)
    async with store.pool.acquire() as conn, conn.transaction():
        for n, path in zip(batch, paths, strict=True):
            await conn.execute(
                "UPDATE deliveries SET destination_id = $2, destination ="
                " jsonb_build_object('type', 'webhook', 'destination_id', $3::text)"
                " WHERE notification_id = $1",
                n.id,
                destination_id,
                str(destination_id),
            )
            # The path tells the deliveries apart at the receiver: it is in the body.
            await conn.execute("UPDATE notifications SET body = $2 WHERE id = $1", n.id, path)
        await conn.execute(
            "UPDATE notifications SET routed_at = now() WHERE id = ANY ($1::uuid[])",
            [n.id for n in batch],
        )
        await conn.execute(
            "INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key)"
            " SELECT id, 0, 1, now(), partition_key FROM notifications"
            " WHERE id = ANY ($1::uuid[])",
            [n.id for n in batch],
        )


async def test_rate_limit_holds_across_two_delivery_processes(
    broker: TansuBroker, settings_env: dict[str, str], store: Store
) -> None:
    env = {
        **settings_env,
        **kafka_env(broker.bootstrap, f"t{uuid.uuid4().hex[:8]}"),
        "NOTIFI_KAFKA__PARTITIONS": "4",
        "NOTIFI_KAFKA__STATIC_MEMBERSHIP": "false",  # tansu holds static joins (README)
        "NOTIFI_POLLER__INTERVAL": "0.2",
        "NOTIFI_SUPERVISOR__SHUTDOWN_TIMEOUT": "5",
    }
    receiver = await Receiver().start()
    destination = NewDestination(
        uuid7(),
        "client-r",
        "webhook",
        None,
        Fields(None, "", {"url": receiver.url("limited")}, [], RATE_PER_S, True),
    )
    destination_id = (await Destinations(store.pool).create(destination))["id"]
    procs = [
        role(["--roles", "poller"], env),
        role(["--roles", "delivery", "--instance-id", "delivery-a"], env),
        role(["--roles", "delivery", "--instance-id", "delivery-b"], env),
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            await p.wait_ready(60)
        paths = [f"n{i}" for i in range(COUNT)]
        await queue_deliveries(store, destination_id, paths)
        await receiver.wait_for("limited", COUNT, timeout_s=120)  # nothing lost
        await asyncio.sleep(2)  # anything sent twice would arrive by now
        got = receiver.received["limited"]
        bodies = sorted(r.json["body"] for r in got)
        assert bodies == sorted(paths)  # each exactly once
        span_s = got[-1].at - got[0].at
        sent = [await attempts_made(p.ready_port) for p in procs[1:]]
        print(f"\n{COUNT} deliveries at {RATE_PER_S}/s, {sent} per process: {span_s:.1f} s")
        assert span_s >= 19.0
        # Evenly spread, not a burst then a trickle: no second holds more than the budget (one
        # more at most, for arrivals on either edge of a window).
        times = [r.at for r in got]
        busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
        assert busiest <= RATE_PER_S + 1, busiest
        assert sum(sent) == COUNT and min(sent) > 0  # both processes shared the budget
        rows = await store.pool.fetch(
            "SELECT status, attempts FROM deliveries WHERE destination_id = $1", destination_id
        )
        assert sorted((r["status"], r["attempts"]) for r in rows) == [("delivered", 1)] * COUNT
        codes = [await p.terminate(30) for p in procs]
        assert codes == [0] * len(codes), [p.output() for p in procs]
    finally:
        for p in procs:
            p.kill()
        await receiver.stop()
