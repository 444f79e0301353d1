"""Postgres goes away for a few seconds under a running poller and router (a TCP proxy in
front of the real server is cut, then restored): neither crashes into its supervisor, and
the work that fell due meanwhile is published within seconds of the return."""

from __future__ import annotations

import asyncio
import time

from actors.poller import Poller
from actors.router import Router
from notifi import events
from notifi.runtime import ChildSpec, Supervisor
from notifi.store import Store
from tests.support.factories import new_notification
from tests.support.fakes import FakeBus, eventually
from tests.support.proxy import CuttableProxy

SOURCE, TARGET = "t.notifications", "t.deliveries"
OUTAGE_S = 3.0


def published_ids(bus: FakeBus) -> set[str]:
    return {
        str(events.read_delivery_due(v).notification_id) for _, v in bus.published.get(TARGET, [])
    }


async def test_poller_and_router_ride_out_postgres_going_away(store: Store, dsn: str) -> None:
    proxy = await CuttableProxy("127.0.0.1", 5432).start()
    proxied = await Store.open(
        dsn.replace(":5432/", f":{proxy.port}/"), min_size=1, max_size=2, command_timeout=2
    )
    bus = FakeBus()
    crashes: list[tuple[str, BaseException]] = []
    tree = Supervisor(
        [
            ChildSpec(
                "poller-0",
                lambda: Poller(
                    "poller-0",
                    bus,
                    proxied,
                    lo=0,
                    hi=1023,
                    target=TARGET,
                    interval_s=0.1,
                    batch=100,
                ),
                shutdown_timeout_s=2,
            ),
            ChildSpec(
                "router-0",
                lambda: Router(
                    "router-0",
                    bus,
                    proxied,
                    source=SOURCE,
                    group="router",
                    target=TARGET,
                    horizon_s=0.1,
                    fetch_max=100,
                ),
                shutdown_timeout_s=2,
            ),
        ],
        max_restarts=1,  # so a crash loop would end the tree, as it ended the pollers
        period_s=30,
        on_crash=lambda child, error: crashes.append((child, error)),
    )
    running = asyncio.create_task(tree.run())
    try:
        # It works before the outage.
        before = new_notification()
        await store.accept([before])
        await bus.feed(SOURCE, [events.accepted(before.id, before.partition_key)])
        await eventually(lambda: str(before.id) in published_ids(bus), 15)

        # Postgres goes away. Meanwhile: a scheduled notification falls due (the poller's
        # work), and an immediate one is accepted elsewhere and announced (the router's).
        proxy.cut()
        scheduled = new_notification(in_s=1.0)
        await store.accept([scheduled])
        await store.route([scheduled.id], 0.1)  # to the outbox, as the router would have
        immediate = new_notification()
        await store.accept([immediate])
        await bus.feed(SOURCE, [events.accepted(immediate.id, immediate.partition_key)])
        await asyncio.sleep(OUTAGE_S)
        assert published_ids(bus) == {str(before.id)}  # nothing moved without Postgres
        assert not running.done() and crashes == []

        proxy.restore()
        back = time.monotonic()
        await eventually(lambda: {str(scheduled.id), str(immediate.id)} <= published_ids(bus), 15)
        resumed_s = time.monotonic() - back
        assert resumed_s < 5.0, f"work resumed {resumed_s:.1f}s after Postgres returned"
        assert not running.done() and crashes == []
        await eventually(lambda: bus.committed(SOURCE) == 2, 5)  # both events, once durable
    finally:
        tree.stop()
        outcome = await asyncio.wait_for(running, 10)
        await proxied.close()
        await proxy.stop()
    assert outcome.ok, outcome.reason
