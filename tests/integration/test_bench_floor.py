"""`python -m bench.floor` measures what it says: the relay answers every POST and sends one
webhook each, the Postgres part runs each statement of a notification's way through the store
(every one ends recorded delivered), the Redis part claims and marks on a private Redis, and
the table's floor is the sum of its parts."""

from __future__ import annotations

import aiohttp

from bench import floor
from bench.__main__ import start_receiver
from notifi.store import Store


async def test_the_relay_answers_every_post_and_sends_a_webhook_each() -> None:
    receiver, url = await start_receiver()
    try:
        cpu_ms, answered = await floor.relay_cpu(200, 0.3, hook=f"{url}/hook")
        async with aiohttp.ClientSession() as http, http.get(f"{url}/count?phase=floor") as r:
            arrived = await r.json()
    finally:
        receiver.kill()
        receiver.wait()
    assert answered == 60 and cpu_ms >= 0
    assert arrived == {"distinct": 60, "repeats": 0}


async def test_the_postgres_part_takes_each_notification_through_every_statement(
    store: Store, dsn: str
) -> None:
    shares, delivered = await floor.postgres_cpu(dsn, floor.Pace(1000, 0.2))
    assert delivered == 200  # accepted, routed, loaded and recorded, in batches of 5 and 20
    assert list(shares) == list(floor.STATEMENTS) and all(ms >= 0 for ms in shares.values())
    routed = await store.pool.fetchval(
        "SELECT count(*) FROM notifications WHERE routed_at IS NOT NULL"
    )
    assert routed == 200


async def test_the_redis_part_claims_and_marks_on_a_private_redis(store: Store, dsn: str) -> None:
    cpu_ms, keys = await floor.redis_cpu(dsn, floor.Pace(1000, 0.1))
    assert keys == 100 and cpu_ms >= 0  # a delivered mark each, every claim dropped by it


def test_the_floor_is_the_relay_with_its_webhook_postgres_and_redis() -> None:
    parts = floor.Floor(
        relay_accept_ms=0.15,
        relay_send_ms=0.25,
        postgres_ms={"accept": 0.08, "route": 0.07, "load": 0.05, "record": 0.05},
        redis_ms=0.03,
        answered=10,
        delivered=5,
    )
    assert abs(parts.total_ms - 0.53) < 1e-9
    text = floor.table(parts, floor.Pace(1000, 20, batch=8))
    assert "floor: relay with the webhook + Postgres + Redis        | 0.530" in text
    assert "Postgres: record (batches of 20)" in text and "Postgres: load (batches of 8)" in text
    assert "issue 11's target for the whole system" in text and "| 0.400" in text
