"""The retention sweep at a million rows: `python -m bench.retention`.

Fills a private database on the shared Postgres (created here, dropped at the end; no other
database is touched) with finished notifications older than the retention window, one
delivery and one attempt each, written with generate_series. Then single-row accepts run at
a steady rate (the accept path's own `Store.accept`, one notification per call) first alone
and then while the sweep removes everything, and the figures are printed: rows removed per
second (notifications, and all rows), the Postgres CPU the sweep's backend spent, and the
accept latency before and during the sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from bench.bench_cpu import cpu_seconds
from bench.bench_system import fresh_database
from notifi.partitions import split
from notifi.store import ID_MIN, Store
from notifi.store.retention import TABLES, Removed, RetentionPolicy, RetentionStore
from tests.support.factories import new_notification

DAY = 86_400.0

# Ids are UUIDv7 made 100 to 60 days ago (one every few ms), so all are past a 30-day window.
FILL = (
    """
INSERT INTO notifications (id, client_id, idempotency_key, title, body, data, partition_key,
                           status, created_at, updated_at)
SELECT (lpad(to_hex(t.ms), 12, '0') || '7' || substr(md5(g::text), 1, 3) || '8'
        || substr(md5(g::text), 4, 15))::uuid,
       'bench', 'key-' || g, 'Deploy finished', 'api v2.3 is live', '{"service": "api"}',
       g % 1024, 'delivered', to_timestamp(t.ms / 1000.0), to_timestamp(t.ms / 1000.0)
  FROM generate_series(1, $1) AS g,
       LATERAL (SELECT ((extract(epoch FROM now()) - 100 * 86400) * 1000)::bigint
                       + g * (40 * 86400000::bigint / $1) AS ms) AS t
""",
    """
INSERT INTO deliveries (notification_id, position, kind, destination, status, attempts,
                        next_attempt_at, delivered_at, updated_at)
SELECT id, 0, 'webhook', '{"type": "webhook", "url": "https://example.com/hooks/notifi"}',
       'delivered', 1, created_at, created_at, created_at
  FROM notifications
""",
    """
INSERT INTO delivery_attempts (notification_id, position, attempt, started_at, duration_ms,
                               outcome, status_code)
SELECT id, 0, 1, created_at, 12.5, 'delivered', 200 FROM notifications
""",
)


@dataclass
class Latencies:
    samples: list[float] = field(default_factory=list)

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        ms = sorted(s * 1000 for s in self.samples)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        return (
            f"n={len(ms):>6}  p50 {statistics.median(ms):6.2f} ms  p99 {p99:6.2f} ms  "
            f"max {ms[-1]:7.2f} ms"
        )


async def accept_loop(store: Store, rate: float, stop: asyncio.Event, out: Latencies) -> None:
    """Single-row accepts at `rate` per second, timed from when each was meant to start (so a
    stall shows up as latency, not as fewer requests)."""
    interval = 1.0 / rate
    start = time.perf_counter()
    i = 0
    pending: set[asyncio.Task[None]] = set()

    async def one(meant: float) -> None:
        await store.accept([new_notification(client_id="load", partition_key=i % 1024)])
        out.samples.append(time.perf_counter() - meant)

    while not stop.is_set():
        meant = start + i * interval
        delay = meant - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(meant))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
    if pending:
        await asyncio.gather(*pending)


class Sweep:
    """One sweeper's walk over its partition range, on a pool of one connection (so the CPU of
    its Postgres backend can be read)."""

    def __init__(self, pool: asyncpg.Pool, pid: int, partitions: tuple[int, int]) -> None:
        self.pool, self.pid, self.partitions = pool, pid, partitions
        self.steps: list[float] = []
        self.removed = Removed()

    async def run(self, horizon: UUID, batch: int, policy: RetentionPolicy) -> None:
        retention = RetentionStore(self.pool)
        after = ID_MIN
        while True:
            started = time.perf_counter()
            step = await retention.step(after, horizon, *self.partitions, batch, policy)
            self.steps.append(time.perf_counter() - started)
            self.removed += step.removed
            if step.last_id is None or step.scanned < batch:
                return
            after = step.last_id


async def run(args: argparse.Namespace) -> None:
    async with fresh_database(args.pg, "notifi_bench_retention") as dsn:
        await bench(dsn, args)


async def bench(dsn: str, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    await conn.execute(FILL[0], args.rows)
    for sql in FILL[1:]:
        await conn.execute(sql)
    if args.foreign_keys:  # as before migration 0003, to show what their triggers cost
        await conn.execute(
            "ALTER TABLE deliveries ADD FOREIGN KEY (notification_id) "
            "REFERENCES notifications (id) ON DELETE CASCADE"
        )
        await conn.execute(
            "ALTER TABLE delivery_attempts ADD FOREIGN KEY (notification_id, position) "
            "REFERENCES deliveries ON DELETE CASCADE"
        )
    for table in TABLES:
        await conn.execute(f"VACUUM ANALYZE {table}")
    print(
        f"filled {args.rows:,} finished notifications (+1 delivery, +1 attempt each) in "
        f"{time.perf_counter() - started:.1f} s"
    )
    await conn.close()

    store = await Store.open(dsn, min_size=4, max_size=8)
    policy = RetentionPolicy(delivered_s=30 * DAY, failed_s=90 * DAY)
    before, during = Latencies(), Latencies()
    stop = asyncio.Event()
    load = asyncio.create_task(accept_loop(store, args.rate, stop, before))
    await asyncio.sleep(args.baseline)
    stop.set()
    await load

    # One sweeper per poller replica, each over its own slice of the partition keys.
    sweepers = []
    for partitions in split(0, 1023, args.sweepers):
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        sweepers.append(Sweep(pool, await pool.fetchval("SELECT pg_backend_pid()"), partitions))
    stop = asyncio.Event()
    load = asyncio.create_task(accept_loop(store, args.rate, stop, during))
    horizon = policy.horizon(datetime.now(UTC))
    assert horizon is not None
    cpu0, t0 = sum(cpu_seconds(w.pid) for w in sweepers), time.perf_counter()
    await asyncio.gather(*(w.run(horizon, args.batch, policy) for w in sweepers))
    elapsed = time.perf_counter() - t0
    cpu = sum(cpu_seconds(w.pid) for w in sweepers) - cpu0
    stop.set()
    await load
    left = await store.pool.fetchval("SELECT count(*) FROM notifications WHERE client_id = 'bench'")
    for w in sweepers:
        await w.pool.close()
    await store.close()
    total = sum((w.removed for w in sweepers), Removed())
    steps = [s for w in sweepers for s in w.steps]

    rows = sum(total.by_table().values())
    steps_ms = sorted(s * 1000 for s in steps)
    print(
        f"sweep: {args.sweepers} sweeper(s), batch {args.batch}, {len(steps)} steps, "
        f"{elapsed:.2f} s wall, sweep backend CPU {cpu:.2f} s; "
        f"step p50 {statistics.median(steps_ms):.0f} ms, max {steps_ms[-1]:.0f} ms; "
        f"bench notifications left: {left}"
    )
    print("removed: " + ", ".join(f"{t} {n:,}" for t, n in total.by_table().items()))
    print(
        f"notification rows/s: {total.notifications / elapsed:>10,.0f} wall   "
        f"{total.notifications / cpu:>10,.0f} per backend CPU-second"
    )
    print(
        f"all rows/s:          {rows / elapsed:>10,.0f} wall   "
        f"{rows / cpu:>10,.0f} per backend CPU-second"
    )
    print(f"accept latency at {args.rate:.0f}/s, before the sweep: {before.summary()}")
    print(f"accept latency at {args.rate:.0f}/s, during the sweep: {during.summary()}")
    load1, _, _ = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, load average {load1:.1f} (wall figures shrink "
        "with other load; the per-CPU-second ones do not)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument(
        "--sweepers", type=int, default=1, help="poller replicas, each sweeping its own range"
    )
    parser.add_argument(
        "--foreign-keys", action="store_true", help="put back the foreign keys 0003 drops"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="single-row accepts per second")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of load alone")
    parser.add_argument(
        "--pg", default=os.environ.get("NOTIFI_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
