"""`python -m bench.tansu_fetch`: what the test broker costs as its log grows. Starts a private
tansu, produces a steady 1,000 small records a second (10 every 10 ms) for 40 s, with one
consumer reading them (fetch wait as the tests set it) or none, and prints tansu's CPU, as a
share of one core, every 5 s. Kafka's fetch finds its offset through an index; tansu's memory
engine costs more per fetch the more the partition holds (README, "Where tansu differs").

  python -m bench.tansu_fetch                 # with a consumer
  python -m bench.tansu_fetch --no-consumer   # produce only
  python -m bench.tansu_fetch --wait-ms 100   # a longer fetch wait: fewer fetches"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.bench_cpu import TICKS_PER_S, read_stat
from tests.support.tansu import TANSU_FETCH_MAX_WAIT_MS, TansuBroker

RATE_PER_TICK, TICK_S = 10, 0.01  # 1,000 records a second
REPORT_EVERY_S = 5
RECORD = b"x" * 300  # about a delivery job's size


def cpu_s(pid: int) -> float:
    stat = read_stat(pid)
    return stat.cpu_ticks / TICKS_PER_S if stat is not None else 0.0


async def consume(consumer: AIOKafkaConsumer, counts: list[int]) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=100, max_records=500)
        counts[0] += sum(len(records) for records in batches.values())


async def run(seconds: int, wait_ms: int, with_consumer: bool) -> None:
    broker = TansuBroker().start()
    pid = broker.pid
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    read = [0]
    reader: asyncio.Task[None] | None = None
    consumer: AIOKafkaConsumer | None = None
    try:
        await producer.start()
        await producer.send_and_wait("probe", RECORD)  # the topic exists before the consumer
        if with_consumer:
            consumer = AIOKafkaConsumer(
                "probe",
                bootstrap_servers=broker.bootstrap,
                group_id="probe",
                fetch_max_wait_ms=wait_ms,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            reader = asyncio.create_task(consume(consumer, read))
        sent, last_cpu, last_at = 1, cpu_s(pid), time.monotonic()
        print(f"tansu, one topic, 1,000 records/s, consumer: {with_consumer}, wait {wait_ms} ms")
        for second in range(1, seconds + 1):
            for _ in range(int(1 / TICK_S)):
                for _ in range(RATE_PER_TICK):
                    await producer.send("probe", RECORD)
                sent += RATE_PER_TICK
                await asyncio.sleep(TICK_S)
            if second % REPORT_EVERY_S == 0:
                now, used = time.monotonic(), cpu_s(pid)
                share = (used - last_cpu) / (now - last_at)
                held = f"{second:3d} s: {sent:6,} held, {read[0]:6,} read"
                print(f"{held}, tansu {share:4.0%} of a core")
                last_cpu, last_at = used, now
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await producer.stop()
        if consumer is not None:
            await consumer.stop()
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--wait-ms", type=int, default=TANSU_FETCH_MAX_WAIT_MS)
    parser.add_argument("--no-consumer", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.wait_ms, not args.no_consumer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
