"""The one consuming actor (actors/consumer.py) on the recording memory bus: what cannot be
decoded or handled is set aside and the partition moves on, a revoke commits finished work
only, a stop drains what is in hand, and a stop while a dependency is away commits nothing.
Also the offset tracker's starting over (revoked partitions, a log that went back)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from actors.consumer import ConsumingActor, Message
from notifi import metrics
from notifi.bus import Record
from notifi.bus.memory import MemoryConsumer
from notifi.offsets import OffsetTracker
from notifi.outage import StopRequested
from tests.support.fakes import FakeBus, eventually, metric_value, running

pytestmark = pytest.mark.timeout(30)
TOPIC, GROUP = "t.things", "things"
TP = (TOPIC, 0)


class Things(ConsumingActor[str]):
    """Decodes UTF-8 (b"\\xff" is undecodable); `fail` values raise in handle; with `hold`,
    messages are handed over (kept in `held`) instead of acked at once."""

    def __init__(self, bus: FakeBus, *, hold: bool = False, drain_timeout_s: float = 0.0) -> None:
        super().__init__(
            "things-0",
            bus,
            topic=TOPIC,
            group=GROUP,
            fetch_max=100,
            drain_timeout_s=drain_timeout_s,
        )
        self.hold = hold
        self.handled: list[str] = []
        self.held: list[tuple[str, Callable[[], None]]] = []
        self.fail: set[str] = set()
        self.stop_on: set[str] = set()

    def decode(self, record: Record) -> str:
        return record.value.decode()

    async def handle(self, messages: list[Message[str]]) -> None:
        values = [m.value for m in messages]
        if self.stop_on & set(values):
            raise StopRequested(self.name)
        if bad := self.fail & set(values):
            raise RuntimeError(f"cannot handle {sorted(bad)}")
        self.handled += values
        for m in messages:
            if self.hold:
                self.held.append((m.value, m.hand_over()))
            else:
                m.ack()


def values(*items: str) -> list[tuple[bytes | None, bytes]]:
    return [(None, i.encode()) for i in items]


def set_aside(reason: str) -> float:
    return metric_value(metrics.consumer_set_aside, {"group": GROUP, "reason": reason})


async def test_an_undecodable_message_is_set_aside_and_the_partition_moves_on() -> None:
    bus = FakeBus()
    before = set_aside("undecodable")
    await bus.feed(TOPIC, [(None, b"\xff"), *values("a", "b")])
    actor = Things(bus)
    with capture_logs() as logs:
        async with running(actor):
            await eventually(lambda: bus.committed(TOPIC) == 3)
    assert actor.handled == ["a", "b"]
    [aside] = [e for e in logs if e["event"] == "message_set_aside"]
    assert aside["reason"] == "undecodable" and aside["offset"] == 0
    assert set_aside("undecodable") == before + 1


async def test_a_message_that_cannot_be_handled_is_set_aside_alone() -> None:
    bus = FakeBus()
    before = set_aside("unhandled")
    await bus.feed(TOPIC, values("a", "poison", "c"))
    actor = Things(bus)
    actor.fail = {"poison"}
    with capture_logs() as logs:
        async with running(actor) as task:
            await eventually(lambda: bus.committed(TOPIC) == 3)
            await bus.feed(TOPIC, values("d"))
            await eventually(lambda: bus.committed(TOPIC) == 4)
            assert not task.done()
    # The batch failed, then each message was tried alone: only the poison one set aside.
    assert actor.handled == ["a", "c", "d"]
    [aside] = [e for e in logs if e["event"] == "message_set_aside"]
    assert aside["reason"] == "unhandled" and aside["offset"] == 1
    assert set_aside("unhandled") == before + 1


async def test_a_revoke_commits_finished_work_only_and_forgets_the_partition() -> None:
    bus = FakeBus()
    await bus.feed(TOPIC, values("a", "b", "c", "d"))
    actor = Things(bus, hold=True)
    async with running(actor):
        await eventually(lambda: len(actor.held) == 4)
        acks = dict(actor.held)
        acks["a"]()
        acks["b"]()
        acks["d"]()  # c still in flight: nothing at or above it may be committed
        bus.commits.clear()
        await bus.consumers[0].revoke()
        assert bus.commits == [{TP: 2}]
        acks["c"]()  # too late: the partition went to its next owner, who reads c again
        await asyncio.sleep(0.4)  # longer than the commit interval
        assert bus.commits == [{TP: 2}]


async def test_a_commit_that_did_not_land_is_offered_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dropped: list[dict] = []
    land = MemoryConsumer.commit

    async def lossy(self: MemoryConsumer, offsets: dict) -> None:
        if not dropped:  # the broker never takes the first one (the bus logs and drops it)
            dropped.append(dict(offsets))
            return
        await land(self, offsets)

    monkeypatch.setattr(MemoryConsumer, "commit", lossy)
    bus = FakeBus()
    await bus.feed(TOPIC, values("a", "b", "c"))
    actor = Things(bus)
    actor.recommit_interval_s = 0.3
    async with running(actor):
        await eventually(lambda: actor.handled == ["a", "b", "c"] and dropped == [{TP: 3}])
        # No newer work comes to carry it: the periodic offer lands it.
        await eventually(lambda: bus.commits.count({TP: 3}) >= 2)
    assert bus._topic(TOPIC).committed[GROUP] == 3  # it landed


async def test_a_stop_drains_the_work_in_hand_then_commits_it() -> None:
    bus = FakeBus()
    await bus.feed(TOPIC, values("a", "b"))
    actor = Things(bus, hold=True, drain_timeout_s=10)
    await actor.on_start()
    task = asyncio.create_task(actor.run())
    await eventually(lambda: len(actor.held) == 2)
    actor.request_stop()
    await asyncio.sleep(0.3)
    assert not task.done()  # waiting for the work in hand
    for _, ack in actor.held:
        ack()
    await asyncio.wait_for(task, 5)
    await actor.on_stop()
    assert bus.committed(TOPIC) == 2


async def test_a_drain_gives_up_after_its_timeout() -> None:
    bus = FakeBus()
    await bus.feed(TOPIC, values("a", "b"))
    actor = Things(bus, hold=True, drain_timeout_s=0.2)
    async with running(actor):
        await eventually(lambda: len(actor.held) == 2)
        actor.held[0][1]()
    assert bus.committed(TOPIC) == 1  # a was done, b is read again by the next owner


async def test_a_stop_while_a_dependency_is_away_commits_nothing_of_that_batch() -> None:
    bus = FakeBus()
    await bus.feed(TOPIC, values("a", "b"))
    actor = Things(bus)
    actor.stop_on = {"b"}
    with capture_logs() as logs:
        async with running(actor) as task:
            await eventually(lambda: task.done())
    assert task.exception() is None
    assert bus.commits == []
    assert "consumer_stopped_uncommitted" in [e["event"] for e in logs]


async def test_the_lag_gauge_is_set() -> None:
    bus = FakeBus()
    await bus.feed(TOPIC, values("a"))
    actor = Things(bus)
    async with running(actor):
        await eventually(lambda: bus.committed(TOPIC) == 1)
        await eventually(lambda: metric_value(metrics.consumer_lag, {"group": GROUP}) == 0)


def test_tracker_ignores_acks_of_a_forgotten_partition() -> None:
    t = OffsetTracker()
    late = t.track(TP, 5)
    t.forget([TP])
    late()
    again = t.track(TP, 5)  # read again after the partition came back
    assert t.in_flight() == 1 and t.committable() == {}
    again()
    assert t.committable() == {TP: 6}


def test_tracker_starts_over_when_the_log_goes_back() -> None:
    """The broker lost its log: offsets restart low, and the old log's acks mean nothing."""
    t = OffsetTracker()
    old = t.track(TP, 500)
    t.track(TP, 501)()
    first = t.track(TP, 0)
    old()
    assert t.in_flight() == 1 and t.committable() == {}
    first()
    assert t.committable() == {TP: 1}


def test_tracker_commits_per_partition_selection() -> None:
    t = OffsetTracker()
    t.track(("t", 0), 1)()
    t.track(("t", 1), 7)()
    assert t.committable([("t", 1)]) == {("t", 1): 8}
    assert t.committable() == {("t", 0): 2}
