"""The accept writer on fakes: requests are answered only after their batch is committed, a
refused item does not sink its batch, an unreachable database is a 503 with Retry-After, and
`notification.accepted` is published after the commit, surviving a publish failure, whose
events the republisher publishes once the bus is back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

import actors.api
from actors.api import AcceptStore, AcceptWriter, Republisher, Submission, Unpublished, submit
from notifi import events, metrics
from notifi.bus import BusError
from notifi.errors import InvalidRequest, Unavailable
from notifi.model import NewNotification
from notifi.outage import Backoff
from notifi.runtime import Mailbox
from notifi.store import Accepted, AcceptOutcome, Store
from tests.support.factories import new_notification
from tests.support.fakes import (
    FakeBus,
    FakeStore,
    assert_implements,
    eventually,
    metric_value,
    running,
)

TOPIC = "t.notifications"


class GatedStore(FakeStore):
    """Holds every write until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0  # writes held at the gate

    async def accept(self, batch: Sequence[NewNotification]) -> list[Accepted]:
        self.waiting += 1
        await self.gate.wait()
        return await super().accept(batch)


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def inbox() -> Mailbox[Submission]:
    return Mailbox("accept", 100)


@pytest.fixture
def unpublished() -> Unpublished:
    return Unpublished()


def make_writer(
    inbox: Mailbox[Submission],
    store: FakeStore,
    bus: FakeBus,
    unpublished: Unpublished | None = None,
    *,
    linger_s: float = 0.01,
    linger_batch: int | None = None,
) -> AcceptWriter:
    held = unpublished if unpublished is not None else Unpublished()
    return AcceptWriter(
        inbox, store, bus, TOPIC, 50, linger_s, unpublished=held, linger_batch=linger_batch
    )


def accepted_ids(bus: FakeBus) -> list[str]:
    return [str(events.read_accepted(v)) for _, v in bus.published.get(TOPIC, [])]


def test_the_store_has_what_the_accept_writer_needs() -> None:
    assert_implements(Store, AcceptStore)
    assert_implements(FakeStore, AcceptStore)


async def test_answers_only_after_the_commit(inbox: Mailbox[Submission], bus: FakeBus) -> None:
    store = GatedStore()
    n = new_notification()
    async with running(make_writer(inbox, store, bus)):
        answer = asyncio.create_task(submit(inbox, n))
        await eventually(lambda: store.waiting == 1)
        await asyncio.sleep(0.05)
        assert not answer.done()  # written only when the gate opens
        store.gate.set()
        result = await asyncio.wait_for(answer, 5)
        assert n.id in store.notifications  # committed before the answer
    assert result == Accepted(AcceptOutcome.CREATED, n.id)


async def test_concurrent_requests_share_one_write(
    inbox: Mailbox[Submission], bus: FakeBus
) -> None:
    store = FakeStore()
    batch = [new_notification() for _ in range(10)]
    async with running(make_writer(inbox, store, bus)):
        results = await asyncio.gather(*(submit(inbox, n) for n in batch))
    assert [r.id for r in results] == [n.id for n in batch]
    assert store.calls.count("accept") < len(batch)


async def test_requests_within_the_linger_share_one_write_and_one_publish(
    inbox: Mailbox[Submission], bus: FakeBus, unpublished: Unpublished
) -> None:
    """Requests that come one after another, within the linger, make one batch, which goes on
    as one: one transaction and one publish (so one route, one load downstream)."""
    store = FakeStore()
    first, second = new_notification(), new_notification()
    async with running(make_writer(inbox, store, bus, unpublished, linger_s=0.5)):
        answer = asyncio.create_task(submit(inbox, first))
        await asyncio.sleep(0.05)
        assert not answer.done()  # lingering for more
        await submit(inbox, second)
        await answer
    assert store.calls.count("accept") == 1
    assert bus.publishes == 1
    assert accepted_ids(bus) == [str(first.id), str(second.id)]


async def test_a_batch_of_linger_batch_does_not_wait_for_the_linger(
    inbox: Mailbox[Submission], bus: FakeBus, unpublished: Unpublished
) -> None:
    store = FakeStore()
    batch = [new_notification() for _ in range(4)]
    writer = make_writer(inbox, store, bus, unpublished, linger_s=30, linger_batch=4)
    async with running(writer), asyncio.timeout(5):  # the linger is 30 s
        results = await asyncio.gather(*(submit(inbox, n) for n in batch))
    assert [r.id for r in results] == [n.id for n in batch]


async def test_a_refused_item_does_not_sink_its_batch(
    inbox: Mailbox[Submission], bus: FakeBus
) -> None:
    store = FakeStore()
    good, bad, other = new_notification(), new_notification(), new_notification()
    store.refused.add(bad.id)
    async with running(make_writer(inbox, store, bus)):
        results = await asyncio.gather(
            *(submit(inbox, n) for n in (good, bad, other)), return_exceptions=True
        )
    assert results[0] == Accepted(AcceptOutcome.CREATED, good.id)
    assert isinstance(results[1], InvalidRequest) and results[1].status == 422
    assert results[2] == Accepted(AcceptOutcome.CREATED, other.id)
    assert set(store.notifications) == {good.id, other.id}
    assert sorted(accepted_ids(bus)) == sorted([str(good.id), str(other.id)])


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.PostgresConnectionError("refused"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_unreachable_database_is_a_503_with_retry_after(
    inbox: Mailbox[Submission], bus: FakeBus, error: BaseException
) -> None:
    store = FakeStore()
    store.go_down(error)
    n = new_notification()
    async with running(make_writer(inbox, store, bus)) as task:
        with pytest.raises(Unavailable) as raised:
            await asyncio.wait_for(submit(inbox, n), 5)
        assert raised.value.status == 503
        assert raised.value.headers.get("Retry-After") == "1"
        assert store.notifications == {} and accepted_ids(bus) == []
        store.come_back()  # the writer is still there when the database returns
        again = await asyncio.wait_for(submit(inbox, n), 5)
        assert not task.done()
    assert again == Accepted(AcceptOutcome.CREATED, n.id)


async def test_accepted_events_are_published_after_the_commit_for_new_ones_only(
    inbox: Mailbox[Submission], bus: FakeBus
) -> None:
    store = FakeStore()
    first = new_notification(idempotency_key="k")
    replay = new_notification(idempotency_key="k")  # same client, key and body
    async with running(make_writer(inbox, store, bus)):
        created = await submit(inbox, first)
        replayed = await submit(inbox, replay)
    assert created.outcome is AcceptOutcome.CREATED
    assert replayed == Accepted(AcceptOutcome.REPLAYED, first.id)
    assert accepted_ids(bus) == [str(first.id)]


async def test_a_failed_publish_is_survived_and_the_answer_stands(
    inbox: Mailbox[Submission], bus: FakeBus, unpublished: Unpublished
) -> None:
    store = FakeStore()
    lost, later = new_notification(), new_notification()
    labels = {"dependency": "bus", "actor": "accept-writer"}
    outages = metric_value(metrics.dependency_outages, labels)
    bus.go_down()
    async with running(make_writer(inbox, store, bus, unpublished)) as task:
        result = await asyncio.wait_for(submit(inbox, lost), 5)
        assert result == Accepted(AcceptOutcome.CREATED, lost.id)  # committed: routed later
        await eventually(lambda: len(unpublished) == 1)  # its publish runs after the answer
        bus.come_back()
        await asyncio.wait_for(submit(inbox, later), 5)
        assert not task.done()
    assert lost.id in store.notifications
    assert accepted_ids(bus) == []  # no republisher here: both wait for one, in order
    assert held_ids(unpublished) == [str(lost.id), str(later.id)]
    assert metric_value(metrics.dependency_outages, labels) == outages + 1


def held_ids(unpublished: Unpublished) -> list[str]:
    return [str(events.read_accepted(value)) for _, value in unpublished.oldest(len(unpublished))]


async def test_what_the_republisher_cannot_hold_is_left_to_the_backstop(
    inbox: Mailbox[Submission], bus: FakeBus
) -> None:
    store = FakeStore()
    unpublished = Unpublished(limit=2)
    batch = [new_notification() for _ in range(5)]
    bus.go_down()
    async with running(make_writer(inbox, store, bus, unpublished)):
        results = await asyncio.gather(*(submit(inbox, n) for n in batch))
    assert {r.id for r in results} == {n.id for n in batch}  # every one committed and answered
    assert len(held_ids(unpublished)) == 2  # the bound holds; the back-stop has the rest


class HangingBus(FakeBus):
    """A broker that hangs rather than refuses: a publish never comes back."""

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        await asyncio.Event().wait()


async def test_a_publish_that_hangs_is_handed_over_and_accepting_goes_on(
    inbox: Mailbox[Submission], unpublished: Unpublished, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors.api, "PUBLISH_WAIT_S", 0.05)
    store = FakeStore()
    first, second = new_notification(), new_notification()
    async with running(make_writer(inbox, store, HangingBus(), unpublished)):
        await asyncio.wait_for(submit(inbox, first), 5)
        await asyncio.wait_for(submit(inbox, second), 5)  # not behind the hanging publish
    assert held_ids(unpublished) == [str(first.id), str(second.id)]


class GatedBus(FakeBus):
    """A bus whose publishes wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0  # publishes held at the gate

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        self.waiting += 1
        await self.gate.wait()
        await super().publish(topic, messages)


async def test_the_next_batch_is_written_and_answered_while_a_publish_is_on_its_way(
    inbox: Mailbox[Submission], unpublished: Unpublished, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors.api, "PUBLISH_WAIT_S", 30.0)  # slow, not failed
    store, bus = FakeStore(), GatedBus()
    first, second, third = new_notification(), new_notification(), new_notification()
    async with running(make_writer(inbox, store, bus, unpublished)):
        await asyncio.wait_for(submit(inbox, first), 5)
        await eventually(lambda: bus.waiting == 1)
        # Not behind the publish (30 s): written and answered while it waits at the gate.
        assert await asyncio.wait_for(submit(inbox, second), 5) == Accepted(
            AcceptOutcome.CREATED, second.id
        )
        assert second.id in store.notifications
        assert bus.waiting == 1  # one publish at a time: the second's waits for the first's
        third_answer = asyncio.create_task(submit(inbox, third))
        bus.gate.set()
        await asyncio.wait_for(third_answer, 5)
    assert accepted_ids(bus) == [str(first.id), str(second.id), str(third.id)]
    assert len(unpublished) == 0


async def test_events_written_while_a_publish_fails_are_held_behind_it(
    inbox: Mailbox[Submission], unpublished: Unpublished, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors.api, "PUBLISH_WAIT_S", 30.0)
    store, bus = FakeStore(), GatedBus()
    first, second = new_notification(), new_notification()
    async with running(make_writer(inbox, store, bus, unpublished)):
        await asyncio.wait_for(submit(inbox, first), 5)
        await eventually(lambda: bus.waiting == 1)
        await asyncio.wait_for(submit(inbox, second), 5)  # written while the first publishes
        bus.fail_next(BusError("broker away (fake)"))
        bus.gate.set()
    # The second is not published ahead of the first, which failed: both wait, in order.
    assert accepted_ids(bus) == []
    assert held_ids(unpublished) == [str(first.id), str(second.id)]


class BrokenBus(FakeBus):
    """A publish that fails in a way no outage explains (a bug in a client, say)."""

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        raise RuntimeError("unexpected (fake)")


async def test_a_publish_that_crashes_is_held_and_the_writer_goes_on(
    inbox: Mailbox[Submission], unpublished: Unpublished
) -> None:
    store = FakeStore()
    first, second = new_notification(), new_notification()
    async with running(make_writer(inbox, store, BrokenBus(), unpublished)) as task:
        await asyncio.wait_for(submit(inbox, first), 5)
        await eventually(lambda: len(unpublished) == 1)  # held at once, not at the next batch
        await asyncio.wait_for(submit(inbox, second), 5)
        assert not task.done()
    assert inbox.qsize() == 0  # nothing answered went back to the mailbox
    assert held_ids(unpublished) == [str(first.id), str(second.id)]


async def test_a_stop_waits_for_the_publish_on_its_way(
    inbox: Mailbox[Submission], unpublished: Unpublished, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors.api, "PUBLISH_WAIT_S", 30.0)  # slow, not failed
    store, bus = FakeStore(), GatedBus()
    n = new_notification()
    writer = make_writer(inbox, store, bus, unpublished)
    async with running(writer) as task:
        await asyncio.wait_for(submit(inbox, n), 5)
        await eventually(lambda: bus.waiting == 1)
        writer.request_stop()
        await asyncio.sleep(0.05)
        assert not task.done()  # its mailbox is empty, but a publish is on its way
        bus.gate.set()
    assert accepted_ids(bus) == [str(n.id)]


async def test_while_events_are_held_new_ones_join_them_in_order(
    inbox: Mailbox[Submission], bus: FakeBus, unpublished: Unpublished
) -> None:
    store = FakeStore()
    earlier, first, second = new_notification(), new_notification(), new_notification()
    unpublished.hold([events.accepted(earlier.id, 0)])
    async with running(make_writer(inbox, store, bus, unpublished)):
        await asyncio.wait_for(submit(inbox, first), 5)
        await asyncio.wait_for(submit(inbox, second), 5)
    # The bus is up but not tried: a publish now would overtake, or wait on, what is held.
    assert accepted_ids(bus) == []
    assert held_ids(unpublished) == [str(earlier.id), str(first.id), str(second.id)]


async def test_the_republisher_publishes_what_failed_once_the_bus_is_back(
    inbox: Mailbox[Submission], bus: FakeBus, unpublished: Unpublished
) -> None:
    store = FakeStore()
    during = [new_notification() for _ in range(3)]
    after = new_notification()
    republisher = Republisher(unpublished, bus, TOPIC, batch=50)
    republisher.backoff = Backoff(initial_s=0.01, cap_s=0.02)
    bus.go_down()
    async with (
        running(make_writer(inbox, store, bus, unpublished)),
        running(republisher) as task,
    ):
        await asyncio.gather(*(submit(inbox, n) for n in during))
        await asyncio.sleep(0.1)  # the republisher tries and fails while the bus is away
        assert accepted_ids(bus) == []
        bus.come_back()
        await eventually(lambda: len(accepted_ids(bus)) == len(during))
        await asyncio.wait_for(submit(inbox, after), 5)
        assert not task.done()
    assert sorted(accepted_ids(bus)) == sorted(str(n.id) for n in [*during, after])
    assert len(unpublished) == 0


async def test_the_republisher_stops_at_once_while_the_bus_is_away(
    bus: FakeBus, unpublished: Unpublished
) -> None:
    republisher = Republisher(unpublished, bus, TOPIC, batch=50)
    republisher.backoff = Backoff(initial_s=10.0, cap_s=10.0)  # a stop must not wait this out
    bus.go_down()
    unpublished.hold([events.accepted(new_notification().id, 0)])
    async with running(republisher) as task:  # which fails unless it ends within seconds
        await asyncio.sleep(0.05)
        assert not task.done()  # holding on while the bus is away
    assert task.exception() is None
    assert accepted_ids(bus) == []  # left to the back-stop


async def test_a_drain_answers_every_request_in_the_mailbox(
    inbox: Mailbox[Submission], bus: FakeBus
) -> None:
    store = GatedStore()
    batch = [new_notification() for _ in range(5)]
    writer = make_writer(inbox, store, bus)
    async with running(writer):
        answers = [asyncio.create_task(submit(inbox, n)) for n in batch]
        await eventually(lambda: store.waiting >= 1)  # one write in hand, maybe more waiting
        writer.request_stop()
        store.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*answers), 5)
    assert {r.id for r in results} == {n.id for n in batch}
