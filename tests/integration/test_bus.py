"""The same tests for both buses: the in-process one and Kafka (on a real tansu broker)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from notifi.bus import Bus, BusError, KafkaBus, MemoryBus
from tests.support.tansu import TANSU_FETCH_MAX_WAIT_MS, TansuBroker

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


def kafka_bus(broker: TansuBroker, topics: list[str]) -> KafkaBus:
    return KafkaBus(
        broker.bootstrap,
        topics=topics,
        partitions=2,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        request_timeout_ms=3000,
        fetch_max_wait_ms=TANSU_FETCH_MAX_WAIT_MS,
    )


@pytest.fixture(params=["memory", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Bus, str]]:
    topic = f"t{uuid.uuid4().hex[:8]}.deliveries"
    if request.param == "memory":
        b: Bus = MemoryBus()
    else:
        b = kafka_bus(request.getfixturevalue("broker"), [topic])
    await b.start()
    yield b, topic
    await b.stop()


async def drain(consumer, want: int, timeout_s: float = 20.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += await consumer.fetch(500, timeout_s=0.2)
    return got


async def test_round_trip_keeps_key_value_and_order(bus: tuple[Bus, str]) -> None:
    b, topic = bus
    messages = [(b"k", f"m{i}".encode()) for i in range(10)]
    await b.publish(topic, messages)
    consumer = b.consumer(topic, "g")
    await consumer.start()
    got = await drain(consumer, 10)
    await consumer.stop()
    assert [(r.key, r.value) for r in got] == messages  # one key: one partition, in order
    assert await b.ping()


async def test_fetch_times_out_empty(bus: tuple[Bus, str]) -> None:
    b, topic = bus
    await b.publish(topic, [(None, b"x")])
    consumer = b.consumer(topic, "g")
    await consumer.start()
    assert len(await drain(consumer, 1)) == 1
    started = time.monotonic()
    assert await consumer.fetch(10, timeout_s=0.3) == []
    assert time.monotonic() - started < 3
    await consumer.stop()


async def test_a_new_consumer_resumes_after_the_commit(bus: tuple[Bus, str]) -> None:
    b, topic = bus
    await b.publish(topic, [(b"k", f"m{i}".encode()) for i in range(6)])
    first = b.consumer(topic, "g")
    await first.start()
    got = await drain(first, 6)
    done = got[:3]
    await first.commit({(r.topic, r.partition): r.offset + 1 for r in done})
    await first.stop()
    second = b.consumer(topic, "g")
    await second.start()
    again = await drain(second, 3)
    await second.stop()
    assert [r.value for r in again] == [b"m3", b"m4", b"m5"]  # uncommitted work comes back


async def test_each_group_sees_every_record(bus: tuple[Bus, str]) -> None:
    b, topic = bus
    await b.publish(topic, [(None, f"m{i}".encode()) for i in range(20)])
    seen = []
    for group in ("a", "b"):
        c = b.consumer(topic, group)
        await c.start()
        seen.append(sorted(r.value for r in await drain(c, 20)))
        await c.stop()
    assert seen[0] == seen[1] and len(seen[0]) == 20


async def test_many_messages_arrive(bus: tuple[Bus, str]) -> None:
    b, topic = bus
    await b.publish(topic, [(str(i % 7).encode(), str(i).encode()) for i in range(2000)])
    c = b.consumer(topic, "g")
    await c.start()
    got = await drain(c, 2000, timeout_s=30)
    await c.stop()
    assert sorted(int(r.value) for r in got) == list(range(2000))


async def test_named_consumers_revoke_hooks_and_resets(bus: tuple[Bus, str]) -> None:
    b, topic = bus
    assert b.resets == 0  # a fresh broker has lost nothing

    async def on_reset() -> None: ...

    async def on_revoked(partitions: set[tuple[str, int]]) -> None: ...

    b.on_reset(on_reset)
    await b.publish(topic, [(b"k", b"v")])
    consumer = b.consumer(topic, "g", instance_id="router-0")
    consumer.on_revoked(on_revoked)
    await consumer.start()
    got = await drain(consumer, 1)
    assert [r.value for r in got] == [b"v"]
    assert (got[0].topic, got[0].partition) in consumer.assignment()
    await consumer.stop()
    assert b.resets == 0


async def test_memory_bus_trims_and_pushes_back() -> None:
    b = MemoryBus(max_pending=5)
    c = b.consumer("t", "g")
    await c.start()
    await b.publish("t", [(None, b"x")] * 5)
    blocked = asyncio.create_task(b.publish("t", [(None, b"y")]))
    await asyncio.sleep(0.05)
    assert not blocked.done()  # at its bound: the publisher waits
    got = await c.fetch(10, timeout_s=0.1)
    await c.commit({("t", 0): got[-1].offset + 1})
    await asyncio.wait_for(blocked, 1)
    assert [r.value for r in await c.fetch(10, timeout_s=0.1)] == [b"y"]


@pytest.mark.kafka
async def test_kafka_publish_to_a_dead_broker_fails() -> None:
    broker = TansuBroker().start()
    b = kafka_bus(broker, ["dead.topic"])
    await b.start()
    broker.stop()
    with pytest.raises(BusError):
        await asyncio.wait_for(b.publish("dead.topic", [(None, b"x")]), 30)
    await asyncio.wait_for(b.stop(), 30)


async def test_memory_topic_nobody_reads_keeps_the_newest_and_never_blocks() -> None:
    b = MemoryBus(max_pending=3)
    for i in range(10):
        await asyncio.wait_for(b.publish("events", [(None, str(i).encode())]), 1)
    c = b.consumer("events", "late")
    await c.start()
    assert [r.value for r in await c.fetch(10, timeout_s=0.1)] == [b"7", b"8", b"9"]
