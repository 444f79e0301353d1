"""The recorder on in-memory fakes: outcomes written in one batch before the jobs are acked,
claims released for what was not delivered, events published after the write, and a store
outage waited out without acking anything unwritten."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest

from actors.delivery import Record, Work
from actors.recorder import Recorder
from notifi import events
from notifi.bus import MemoryBus
from notifi.model import DeliveryJob, DeliveryStatus
from notifi.runtime import Mailbox, Stopped
from notifi.store import Finished
from tests.support.fake_delivery import EVENTS, FakeClaims, FakeJobStore, job_row, wait_until

pytestmark = pytest.mark.timeout(20)


def work(token: str = "t") -> tuple[Work, asyncio.Event]:
    row = job_row()
    now = datetime.now(UTC)
    acked = asyncio.Event()
    job = DeliveryJob(row["notification_id"], 0, 1, now)
    return Work(job, row, token, acked.set, now), acked


async def run_recorder(store: FakeJobStore, claims: FakeClaims, bus: MemoryBus, records):
    box: Mailbox[Record] = Mailbox("records", 100)
    for r in records:
        await box.put(r)
    recorder = Recorder("recorder", box, store=store, claims=claims, batch=10, bus=bus,
                        events_topic=EVENTS, linger_s=0.002)  # fmt: skip
    return recorder, asyncio.create_task(recorder.run())


async def stop(recorder: Recorder, running: asyncio.Task) -> None:
    recorder.request_stop()
    with pytest.raises(Stopped):  # how a run ends: stopped with an empty mailbox
        await asyncio.wait_for(running, 5)


async def test_a_batch_is_written_then_released_acked_and_published() -> None:
    store, claims, bus = FakeJobStore(), FakeClaims(), MemoryBus()
    feed = bus.consumer(EVENTS, "test")
    await feed.start()
    (ok, ok_acked), (bad, bad_acked), (later, later_acked) = work("a"), work("b"), work("c")
    records = [
        Record(ok, Finished(ok.job, DeliveryStatus.DELIVERED, outcome="delivered"),
               event=events.SUCCEEDED),
        Record(bad, Finished(bad.job, DeliveryStatus.FAILED, outcome="permanent", error="x"),
               event=events.FAILED),
        Record(later, requeue=later.job.later(datetime.now(UTC))),
    ]  # fmt: skip
    recorder, running = await run_recorder(store, claims, bus, records)
    for acked in (ok_acked, bad_acked, later_acked):
        await asyncio.wait_for(acked.wait(), 5)
    assert [f.job for f in store.finished] == [ok.job, bad.job]
    assert store.requeued == [records[2].requeue]
    assert claims.released == [(bad.job.key, "b")]  # the delivered one keeps its mark
    published = [orjson.loads(r.value) for r in await feed.fetch(10, timeout_s=1)]
    assert [(e["type"], e["data"]["error"]) for e in published] == [
        (events.SUCCEEDED, None),
        (events.FAILED, "x"),
    ]
    await stop(recorder, running)


async def test_nothing_is_acked_until_written_while_the_store_is_down() -> None:
    store, claims, bus = FakeJobStore(), FakeClaims(), MemoryBus()
    store.down_for = 3
    w, acked = work()
    record = Record(w, Finished(w.job, DeliveryStatus.DELIVERED, outcome="delivered"))
    recorder, running = await run_recorder(store, claims, bus, [record])
    await wait_until(lambda: store.calls.count("record") >= 2)
    assert not acked.is_set() and store.finished == []
    await asyncio.wait_for(acked.wait(), 5)
    assert store.calls.count("record") == 4 and len(store.finished) == 1
    await stop(recorder, running)


@pytest.mark.parametrize(("linger_s", "writes"), [(0.0, 2), (0.2, 1)])
async def test_outcomes_that_come_within_the_linger_are_written_together(
    linger_s: float, writes: int
) -> None:
    store, claims, bus = FakeJobStore(), FakeClaims(), MemoryBus()
    box: Mailbox[Record] = Mailbox("records", 100)
    recorder = Recorder("recorder", box, store=store, claims=claims, batch=10, bus=bus,
                        events_topic=EVENTS, linger_s=linger_s)  # fmt: skip
    running = asyncio.create_task(recorder.run())
    (first, first_acked), (second, second_acked) = work("a"), work("b")
    await box.put(Record(first, Finished(first.job, DeliveryStatus.DELIVERED, outcome="delivered")))
    await asyncio.sleep(0.05)
    await box.put(
        Record(second, Finished(second.job, DeliveryStatus.DELIVERED, outcome="delivered"))
    )
    for acked in (first_acked, second_acked):
        await asyncio.wait_for(acked.wait(), 5)
    assert store.calls.count("record") == writes
    assert [f.job for f in store.finished] == [first.job, second.job]
    await stop(recorder, running)
