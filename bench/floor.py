"""The floor under issue 11's CPU target: what the parts DESIGN fixes cost per notification at a
steady 1,000/s on this machine before any of Notifi's own logic runs, each read from /proc as
`make bench` reads the system's CPU. The target (0.4 ms for Notifi, Postgres and Redis together)
is below their sum here; see README, Benchmark.

* relay: an aiohttp server (DESIGN §1: the api is aiohttp REST) takes each POST, decodes its
  JSON and answers 202, storing nothing; then the same plus one webhook POST per request
  through Notifi's HTTP client (`notifi.destinations.http_client`) to a receiver in a process
  of its own. The load comes from `bench.load.open_loop`, in a process of its own.
* postgres: the backend CPU of Notifi's own statements for one notification (DESIGN §3:
  accept, route, the delivery's load, the recorded outcome), in the batch sizes a steady
  1,000/s makes (5 a batch for the first three, 20 for the recorder), each on a connection of
  its own so that each statement's share is read from its own backend.
* redis: the server CPU of Notifi's claim and delivered mark (`notifi.claims`), 5 a batch.

    python -m bench.floor [--seconds 20] [--rate 1000] [--batch 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context

import orjson
import redis.asyncio as aioredis
import uuid_utils
import uvloop
from aiohttp import web

from bench import load
from bench.__main__ import machine, start_receiver
from bench.bench_cpu import cpu_seconds, pids_with_args
from bench.bench_system import SHARED_PG, fresh_database
from notifi.claims import Claims, job_token
from notifi.destinations.http_client import HttpClient
from notifi.destinations.network import AddressPolicy
from notifi.model import DeliveryJob, DeliveryStatus
from notifi.store import Finished, Store
from tests.support.factories import new_notification
from tests.support.process import free_port
from tests.support.services import PrivateRedis

TARGET_MS = 0.4
BATCH = 5  # notifications a batch at 1,000/s with the accept writer's 5 ms linger
RECORD_BATCH = 20  # outcomes a recorder batch at 1,000/s with its 20 ms linger
STATEMENTS = ("accept", "route", "load", "record")


@dataclass(frozen=True)
class Floor:
    relay_accept_ms: float  # aiohttp: POST decoded, 202 answered
    relay_send_ms: float  # the same plus one webhook POST
    postgres_ms: dict[str, float]  # statement -> backend CPU ms per notification
    redis_ms: float  # claim + delivered mark
    answered: int  # 202s over both relay runs
    delivered: int  # deliveries the postgres run recorded delivered

    @property
    def total_ms(self) -> float:
        return self.relay_send_ms + sum(self.postgres_ms.values()) + self.redis_ms


# -- relay ---------------------------------------------------------------------------------


async def _relay(port: int, hook: str | None) -> None:
    client = HttpClient(AddressPolicy(["127.0.0.0/8"]))
    sending: set[asyncio.Task[object]] = set()

    async def accept(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        notification_id = str(uuid_utils.uuid7())
        if hook is not None:
            payload = orjson.dumps({"id": notification_id, "body": body["body"]})
            headers = {"Content-Type": "application/json"}
            task = asyncio.ensure_future(client.post(hook, headers, payload, timeout_s=10))
            sending.add(task)
            task.add_done_callback(sending.discard)
        return web.Response(
            status=202, body=orjson.dumps({"id": notification_id}), content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/api/notifications", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Event().wait()


def serve_relay(port: int, hook: str | None) -> None:
    """The relay's process: answers POSTs (and sends a webhook each when `hook` is given)."""
    uvloop.run(_relay(port, hook))


async def _listening(port: int, timeout_s: float = 20.0) -> None:
    """Returns once something accepts connections on `port` of loopback."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


async def relay_cpu(rate: float, seconds: float, hook: str | None) -> tuple[float, int]:
    """CPU ms per request of the relay at `rate` for `seconds`, and how many got their 202."""
    spawn = get_context("spawn")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    server = spawn.Process(target=serve_relay, args=(port, hook), daemon=True)
    server.start()
    assert server.pid is not None
    try:
        await _listening(port)
        count = int(rate * seconds)
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            loop = asyncio.get_running_loop()
            before = cpu_seconds(server.pid)
            sent = await loop.run_in_executor(
                pool, load.open_loop, api, '"destinations":[]', "floor", rate, count
            )
            await asyncio.sleep(0.5)  # the last webhooks leave
            used_s = cpu_seconds(server.pid) - before
        return 1000 * used_s / count, sum(1 for s in sent if s.status == 202)
    finally:
        server.kill()
        server.join()


# -- postgres and redis --------------------------------------------------------------------


@dataclass(frozen=True)
class Pace:
    rate: float  # notifications per second
    seconds: float  # how long each part runs
    batch: int = BATCH  # notifications a batch of accept, route, load, claims and marks

    @property
    def ticks(self) -> int:
        return int(self.seconds * self.rate / self.batch)

    @property
    def count(self) -> int:
        return self.ticks * self.batch


async def _paced(pace: Pace, step: Callable[[int], Awaitable[None]]) -> None:
    """`step(tick)` every batch / rate seconds, `pace.ticks` times, from one start (no drift)."""
    period_s, started = pace.batch / pace.rate, time.monotonic()
    for tick in range(pace.ticks):
        await step(tick)
        if (wait_s := started + (tick + 1) * period_s - time.monotonic()) > 0:
            await asyncio.sleep(wait_s)


async def _backend(store: Store) -> int:
    async with store.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def postgres_cpu(dsn: str, pace: Pace) -> tuple[dict[str, float], int]:
    """Backend CPU ms per notification of each statement, and how many were recorded
    delivered."""
    stores = {s: await Store.open(dsn, min_size=1, max_size=1) for s in STATEMENTS}
    try:
        backends = {s: await _backend(store) for s, store in stores.items()}
        hook = [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}]
        sent: list[uuid.UUID] = []

        async def step(tick: int) -> None:
            batch = [new_notification(destinations=hook) for _ in range(pace.batch)]
            await stores["accept"].accept(batch)
            ids = [n.id for n in batch]
            await stores["route"].route(ids, 1.0)
            await stores["load"].load_jobs([(i, 0) for i in ids])
            sent.extend(ids)
            if len(sent) >= RECORD_BATCH:
                now = datetime.now(UTC)
                await stores["record"].record([_delivered(i, now) for i in sent], [])
                sent.clear()

        before = {s: cpu_seconds(pid) for s, pid in backends.items()}
        await _paced(pace, step)
        shares = {
            s: 1000 * (cpu_seconds(pid) - before[s]) / pace.count for s, pid in backends.items()
        }
        delivered = await stores["accept"].pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
        )
        return shares, int(delivered)
    finally:
        for store in stores.values():
            await store.close()


def _delivered(notification_id: uuid.UUID, now: datetime) -> Finished:
    return Finished(
        DeliveryJob(notification_id, 0, 1, now),
        DeliveryStatus.DELIVERED,
        started_at=now,
        duration_ms=1.0,
        outcome="delivered",
        status_code=204,
    )


async def redis_cpu(dsn: str, pace: Pace) -> tuple[float, int]:
    """A private Redis's CPU ms per notification for Notifi's claim and delivered mark, and how
    many keys it holds after (a delivered mark per notification, their claims dropped). The
    store at `dsn` is the claims' fallback, unused while Redis answers."""
    server = PrivateRedis().start()
    client = aioredis.from_url(server.url)
    store = await Store.open(dsn, min_size=1, max_size=1)
    try:
        claims = Claims(client, store, prefix="floor", claim_ttl_s=60, delivered_ttl_s=3600)
        [pid] = pids_with_args("redis-server", f":{server.port}")

        async def step(tick: int) -> None:
            keys = [(uuid.uuid4(), 0) for _ in range(pace.batch)]
            offsets = range(tick * pace.batch, (tick + 1) * pace.batch)
            tokens = [job_token("floor", "run", "deliveries", 0, o) for o in offsets]
            await asyncio.gather(*(claims.claim((k, t)) for k, t in zip(keys, tokens, strict=True)))
            await asyncio.gather(*(claims.mark_delivered(k) for k in keys))

        before = cpu_seconds(pid)
        await _paced(pace, step)
        used_ms = 1000 * (cpu_seconds(pid) - before) / pace.count
        return used_ms, int(await client.dbsize())
    finally:
        await store.close()
        await client.aclose()
        server.close()


# -- the table -----------------------------------------------------------------------------


async def measure(pg: str, pace: Pace) -> Floor:
    """Each part in turn, alone: the relay without and with the webhook, Postgres, Redis."""
    rate, seconds = pace.rate, pace.seconds
    accept_ms, answered_alone = await relay_cpu(rate, seconds, hook=None)
    receiver, receiver_url = await start_receiver()
    try:
        send_ms, answered_sending = await relay_cpu(rate, seconds, hook=f"{receiver_url}/hook")
    finally:
        receiver.kill()
        receiver.wait()
    async with fresh_database(pg, "notifi_floor") as dsn:
        postgres_ms, delivered = await postgres_cpu(dsn, pace)
        redis_ms, _ = await redis_cpu(dsn, pace)
    return Floor(
        relay_accept_ms=accept_ms,
        relay_send_ms=send_ms,
        postgres_ms=postgres_ms,
        redis_ms=redis_ms,
        answered=answered_alone + answered_sending,
        delivered=delivered,
    )


def table(floor: Floor, pace: Pace) -> str:
    rows = [
        ("aiohttp: POST decoded, 202 answered, nothing stored", floor.relay_accept_ms),
        ("  the same plus one webhook POST (Notifi's HTTP client)", floor.relay_send_ms),
        *(
            (f"Postgres: {s} (batches of {RECORD_BATCH if s == 'record' else pace.batch})", ms)
            for s, ms in floor.postgres_ms.items()
        ),
        (f"Redis: claim and delivered mark (batches of {pace.batch})", floor.redis_ms),
        ("floor: relay with the webhook + Postgres + Redis", floor.total_ms),
        ("issue 11's target for the whole system", TARGET_MS),
    ]
    head = (
        f"{machine()}\n{pace.rate:,.0f} notifications/s for {pace.seconds:g} s a part;"
        f" {floor.answered:,} answered 202, {floor.delivered:,} recorded delivered"
    )
    width = max(len(label) for label, _ in rows)
    lines = [head, "", f"{'part':<{width}} | CPU ms per notification", "-" * (width + 26)]
    lines += [f"{label:<{width}} | {ms:.3f}" for label, ms in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each part's run")
    parser.add_argument("--rate", type=float, default=1000.0, help="notifications per second")
    parser.add_argument(
        "--batch",
        type=int,
        default=BATCH,
        help="notifications a batch of each Postgres and Redis call",
    )
    args = parser.parse_args()
    pace = Pace(args.rate, args.seconds, args.batch)
    print(table(uvloop.run(measure(SHARED_PG, pace)), pace))


if __name__ == "__main__":
    main()
