"""Postgres goes away at the moment of success: the delivery is not sent again when its job
is retried (Redis remembers the delivered id), and Postgres catches up when it returns."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import redis.asyncio as aioredis
from aiohttp import web

from actors.delivery import Work
from notifi.claims import Claims
from notifi.destinations.http_client import HttpClient
from notifi.destinations.network import AddressPolicy
from notifi.destinations.webhook import WebhookSender
from notifi.model import DeliveryJob
from notifi.runtime import Mailbox
from notifi.store import Store
from tests.support.delivery import delivery_tree
from tests.support.factories import new_notification
from tests.support.proxy import CuttableProxy


async def test_success_while_postgres_is_down_is_not_sent_twice(
    store: Store, dsn: str, redis: aioredis.Redis, key_prefix: str
) -> None:
    proxy = await CuttableProxy("127.0.0.1", 5432).start()
    received: list[bytes] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        proxy.cut()  # Postgres is gone at the moment of success
        arrived.set()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"

    n = new_notification(destinations=[{"type": "webhook", "url": url}])
    await store.accept([n])
    key = (n.id, 0)
    row = (await store.load_jobs([key]))[key]
    proxied = await Store.open(
        dsn.replace(":5432/", f":{proxy.port}/"), min_size=1, max_size=2, command_timeout=2
    )
    claims = Claims(redis, proxied, prefix=key_prefix, claim_ttl_s=30, delivered_ttl_s=60)
    policy = AddressPolicy(["127.0.0.0/8"])
    session = HttpClient(policy)
    sender = WebhookSender(session, 2)
    now = datetime.now(UTC)
    job = DeliveryJob(n.id, 0, 1, now)
    try:
        # First run: sent, then the process dies while Postgres is unreachable.
        work: Mailbox = Mailbox("work", 10)
        first = delivery_tree(proxied, claims, sender, work)
        running = asyncio.create_task(first.run())
        await work.put(Work(job, row, "copy-1", lambda: None, now))
        await asyncio.wait_for(arrived.wait(), 10)
        await asyncio.sleep(0.3)  # the recorder is failing to write
        first.stop()
        await running
        assert (await store.get(n.id, None))["status"] == "pending"  # nothing was recorded

        # The job comes back (as Kafka would redeliver it), Postgres still down.
        acked = asyncio.Event()
        work = Mailbox("work", 10)
        second = delivery_tree(proxied, claims, sender, work)
        running = asyncio.create_task(second.run())
        await work.put(Work(job, row, "copy-2", acked.set, now))
        await asyncio.sleep(0.5)
        assert len(received) == 1  # not sent again
        assert not acked.is_set()  # and not acknowledged before it is written
        proxy.restore()  # Postgres is back: the record catches up
        await asyncio.wait_for(acked.wait(), 15)
        second.stop()
        await running
        stored = await store.get(n.id, None)
        assert stored["status"] == "delivered"
        assert len(received) == 1
    finally:
        await session.close()
        await proxied.close()
        await runner.cleanup()
        await proxy.stop()
