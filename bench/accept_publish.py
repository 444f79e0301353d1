"""`python -m bench.accept_publish`: what a bus's publish round trip costs the API's answers. The
accept writer alone, on a store whose write takes `--write-ms` and a bus whose publish takes
`--publish-ms` (Kafka with acks=all answers in a few milliseconds), fed an open loop of
`--rate` submissions a second for `--seconds`; prints the answer's p50 / p99 from each
submission's intended instant."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from actors.api import AcceptWriter, Submission, Unpublished, submit
from bench.bench_phases import pct
from notifi import logs
from notifi.model import NewNotification
from notifi.runtime import Mailbox
from notifi.store import Accepted
from tests.support.factories import new_notification
from tests.support.fakes import FakeBus, FakeStore, running

TOPIC = "bench.notifications"


class SlowStore(FakeStore):
    def __init__(self, write_s: float) -> None:
        super().__init__()
        self.write_s = write_s

    async def accept(self, batch: Sequence[NewNotification]) -> list[Accepted]:
        await asyncio.sleep(self.write_s)
        return await super().accept(batch)


class SlowBus(FakeBus):
    def __init__(self, publish_s: float) -> None:
        super().__init__()
        self.publish_s = publish_s

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        await asyncio.sleep(self.publish_s)
        await super().publish(topic, messages)


async def measure(args: argparse.Namespace) -> list[float]:
    inbox: Mailbox[Submission] = Mailbox("accept", 10_000)
    bus = SlowBus(args.publish_ms / 1000)
    writer = AcceptWriter(
        inbox,
        SlowStore(args.write_ms / 1000),
        bus,
        TOPIC,
        500,
        args.linger_ms / 1000,
        Unpublished(),
        linger_batch=32,
    )
    latencies: list[float] = []

    async def one(intended: float) -> None:
        await submit(inbox, new_notification())
        latencies.append(time.monotonic() - intended)

    async with running(writer), asyncio.TaskGroup() as group:
        start = time.monotonic()
        for i in range(int(args.rate * args.seconds)):
            intended = start + i / args.rate
            if (wait_s := intended - time.monotonic()) > 0:
                await asyncio.sleep(wait_s)
            group.create_task(one(intended))
    assert len(bus.published.get(TOPIC, [])) == len(latencies)  # every one published
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--write-ms", type=float, default=2.0)
    parser.add_argument("--publish-ms", type=float, default=5.0)
    parser.add_argument("--linger-ms", type=float, default=5.0)
    args = parser.parse_args()
    if args.rate * args.seconds < 100:
        parser.error("--rate times --seconds: at least 100 submissions, for a p99")
    logs.configure(level="warning")
    latencies = asyncio.run(measure(args))
    print(
        f"write {args.write_ms:g} ms, publish {args.publish_ms:g} ms, linger {args.linger_ms:g}"
        f" ms, {args.rate:,.0f}/s: answer p50 {pct(latencies, 0.5) * 1000:.1f} ms,"
        f" p99 {pct(latencies, 0.99) * 1000:.1f} ms, {len(latencies):,} answered"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
