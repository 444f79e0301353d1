"""The delivery consumer on in-memory fakes and the memory bus: open jobs go to the workers,
finished, deleted, missing and unreadable ones are acked at once, and offsets are committed
only for jobs acked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from actors.delivery import Record, Work
from actors.delivery_consumer import DeliveryConsumer
from notifi import events
from notifi.bus import MemoryBus
from notifi.model import DeliveryJob
from notifi.outage import Backoff
from notifi.runtime import Mailbox
from tests.support.fake_delivery import FakeJobStore, job_row, wait_until

pytestmark = pytest.mark.timeout(20)
TOPIC, GROUP = "t.deliveries", "delivery"


def committed(bus: MemoryBus) -> int:
    """The group's committed offset (the memory bus's own record of it)."""
    return bus._topics[TOPIC].committed.get(GROUP, 0)


async def test_open_jobs_reach_the_workers_and_the_rest_are_acked() -> None:
    store, bus = FakeJobStore(), MemoryBus()
    rows = {
        "open": job_row(),
        "delivering": job_row(status="delivering"),
        "delivered": job_row(status="delivered"),
        "cancelled": job_row(status="cancelled"),
        "deleted": job_row(deleted_at=datetime.now(UTC)),
    }
    for row in rows.values():
        store.add(row)
    now = datetime.now(UTC)
    jobs = [DeliveryJob(r["notification_id"], 0, 1, now) for r in rows.values()]
    jobs.append(DeliveryJob(job_row()["notification_id"], 0, 1, now))  # not in the store
    box: Mailbox[Work] = Mailbox("work", 100)
    consumer = DeliveryConsumer(
        "consumer", bus, store, box, topic=TOPIC, group=GROUP, fetch_max=100,
        instance_id="pod-0", process_token="p1", drain_timeout_s=1,
    )  # fmt: skip
    await consumer.on_start()
    await bus.publish(TOPIC, events.delivery_due(jobs))
    await bus.publish(TOPIC, [(None, b"not an event")])
    running = asyncio.create_task(consumer.run())
    await wait_until(lambda: box.qsize() == 2)
    handed = [box._items[i].item for i in range(2)]
    assert [w.job.key for w in handed] == [jobs[0].key, jobs[1].key]
    # The claim token names the instance and this run of it (notifi.claims.job_token).
    assert handed[0].token == f"pod-0/p1:{TOPIC}:0:0" and handed[0].row is rows["open"]
    # The two held by workers keep the offset below them uncommitted.
    await asyncio.sleep(0.3)
    assert committed(bus) == 0
    for w in handed:
        w.ack()
    await wait_until(lambda: committed(bus) == 7, timeout_s=5)
    consumer.request_stop()
    await asyncio.wait_for(running, 5)
    await consumer.on_stop()


async def test_postgres_away_at_load_is_ridden_out_and_nothing_is_committed_meanwhile() -> None:
    store, bus = FakeJobStore(), MemoryBus()
    row = job_row()
    store.add(row)
    store.down_for = 4  # the next four loads fail as an unreachable Postgres does
    box: Mailbox[Work] = Mailbox("work", 100)
    consumer = DeliveryConsumer(
        "consumer", bus, store, box, topic=TOPIC, group=GROUP, fetch_max=100,
        instance_id="pod-0", process_token="p1", drain_timeout_s=1,
    )  # fmt: skip
    consumer.backoff = Backoff(initial_s=0.005, cap_s=0.02)
    await consumer.on_start()
    job = DeliveryJob(row["notification_id"], 0, 1, datetime.now(UTC))
    await bus.publish(TOPIC, events.delivery_due([job]))
    running = asyncio.create_task(consumer.run())
    await wait_until(lambda: box.qsize() == 1)
    assert store.calls.count("load_jobs") == 5 and not running.done()
    assert committed(bus) == 0
    box._items[0].item.ack()
    await wait_until(lambda: committed(bus) == 1, timeout_s=5)
    consumer.request_stop()
    await asyncio.wait_for(running, 5)
    await consumer.on_stop()


async def test_jobs_are_loaded_only_while_few_wait_for_a_worker() -> None:
    """A fetch is loaded `load_ahead` jobs at a time, each chunk once fewer wait in the workers'
    mailbox: a job loaded long before a worker takes it would be read again by that worker."""
    store, bus = FakeJobStore(), MemoryBus()
    rows = [job_row() for _ in range(5)]
    for row in rows:
        store.add(row)
    now = datetime.now(UTC)
    jobs = [DeliveryJob(r["notification_id"], 0, 1, now) for r in rows]
    box: Mailbox[Work] = Mailbox("work", 100)
    consumer = DeliveryConsumer(
        "consumer", bus, store, box, topic=TOPIC, group=GROUP, fetch_max=100,
        instance_id="pod-0", process_token="p1", drain_timeout_s=1,
    )  # fmt: skip
    consumer.load_ahead = 2
    await consumer.on_start()
    await bus.publish(TOPIC, events.delivery_due(jobs))
    running = asyncio.create_task(consumer.run())
    await wait_until(lambda: box.qsize() == 2)
    await asyncio.sleep(0.1)  # nobody takes them: the next chunk waits unloaded
    assert box.qsize() == 2 and store.calls.count("load_jobs") == 1
    taken = []
    async with box.take() as work:
        taken.append(work)  # one left waiting, fewer than two: the next chunk comes
    await wait_until(lambda: box.qsize() == 3)
    await asyncio.sleep(0.1)
    assert store.calls.count("load_jobs") == 2
    while len(taken) < 5:
        async with box.take() as work:
            taken.append(work)
    assert [w.job.key for w in taken] == [j.key for j in jobs]
    assert store.calls.count("load_jobs") == 3
    for w in taken:
        w.ack()
    await wait_until(lambda: committed(bus) == 5, timeout_s=5)
    consumer.request_stop()
    await asyncio.wait_for(running, 5)
    await consumer.on_stop()


async def test_jobs_loaded_ahead_are_held_until_due_and_a_stop_leaves_them_uncommitted() -> None:
    """A job published ahead of its time (poller.lookahead) is loaded at once but reaches the
    workers only at its due time, from the consumer's one timer; a stop does not wait for the
    held ones (their offsets stay uncommitted, for whoever reads them next)."""
    store, bus = FakeJobStore(), MemoryBus()
    rows = [job_row() for _ in range(3)]
    for row in rows:
        store.add(row)
    now = datetime.now(UTC)
    dues = [now, now + timedelta(milliseconds=300), now + timedelta(seconds=30)]
    jobs = [DeliveryJob(r["notification_id"], 0, 1, due) for r, due in zip(rows, dues, strict=True)]
    box: Mailbox[Work] = Mailbox("work", 100)
    consumer = DeliveryConsumer(
        "consumer", bus, store, box, topic=TOPIC, group=GROUP, fetch_max=100,
        instance_id="pod-0", process_token="p1", drain_timeout_s=10,
    )  # fmt: skip
    await consumer.on_start()
    await bus.publish(TOPIC, events.delivery_due(jobs))
    running = asyncio.create_task(consumer.run())
    await wait_until(lambda: box.qsize() == 1)
    assert store.calls.count("load_jobs") == 1  # all three loaded in one query
    async with box.take() as first:
        assert first.job.key == jobs[0].key and first.loaded_at <= datetime.now(UTC)
    await wait_until(lambda: box.qsize() == 1, timeout_s=2)
    arrived = datetime.now(UTC)
    async with box.take() as second:
        assert second.job.key == jobs[1].key
    assert arrived >= dues[1]  # never before its time
    first.ack()
    second.ack()
    await wait_until(lambda: committed(bus) == 2, timeout_s=5)
    stop_at = asyncio.get_running_loop().time()
    consumer.request_stop()
    await asyncio.wait_for(running, 5)
    await consumer.on_stop()
    assert asyncio.get_running_loop().time() - stop_at < 2  # not the 10 s drain timeout
    assert committed(bus) == 2 and box.qsize() == 0  # the held one comes back after a restart


async def test_on_a_stop_held_jobs_go_back_to_the_outbox_through_the_recorder() -> None:
    """With the recorder's mailbox given, a stop hands each held job to it to be written back
    to the outbox for its time (an in-process bus keeps nothing across a restart); once written
    (acked), its offset is committed and no successor reads it again."""
    store, bus = FakeJobStore(), MemoryBus()
    row = job_row()
    store.add(row)
    due = datetime.now(UTC) + timedelta(seconds=30)
    job = DeliveryJob(row["notification_id"], 0, 1, due)
    box: Mailbox[Work] = Mailbox("work", 100)
    records: Mailbox[Record] = Mailbox("records", 100)
    consumer = DeliveryConsumer(
        "consumer", bus, store, box, topic=TOPIC, group=GROUP, fetch_max=100,
        instance_id="pod-0", process_token="p1", drain_timeout_s=5, requeue=records,
    )  # fmt: skip
    await consumer.on_start()
    await bus.publish(TOPIC, events.delivery_due([job]))
    running = asyncio.create_task(consumer.run())
    await wait_until(lambda: store.calls.count("load_jobs") == 1)
    await asyncio.sleep(0.05)
    assert box.qsize() == 0 and records.qsize() == 0  # held, not handed to a worker
    consumer.request_stop()
    await wait_until(lambda: records.qsize() == 1)
    async with records.take() as record:
        assert record.finished is None and record.requeue == job  # for its own time
        assert not running.done()  # the drain waits for it to be written
        record.work.ack()
    await asyncio.wait_for(running, 5)
    await consumer.on_stop()
    assert committed(bus) == 1
