"""The actor runtime: bounded mailboxes that give work back on a crash, and the supervisor's
order, restarts, back-off, intensity and shutdown."""

from __future__ import annotations

import asyncio
import time

import pytest

from notifi.runtime import Actor, ChildSpec, Mailbox, MailboxFull, Restart, Stopped, Supervisor


async def test_mailbox_bound_is_back_pressure() -> None:
    box: Mailbox[int] = Mailbox("m", 2)
    await box.put(1)
    box.put_nowait(2)
    with pytest.raises(MailboxFull):
        box.put_nowait(3)
    blocked = asyncio.create_task(box.put(3))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    async with box.take() as item:
        assert item == 1
    await asyncio.wait_for(blocked, 1)
    assert box.qsize() == 2


async def test_take_gives_the_item_back_on_error_and_on_cancel() -> None:
    box: Mailbox[str] = Mailbox("m", 5)
    for item in "abc":
        await box.put(item)
    with pytest.raises(RuntimeError):
        async with box.take() as item:
            raise RuntimeError(item)

    async def hold() -> None:
        async with box.take():
            await asyncio.sleep(10)

    task = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with box.take_batch(10) as items:
        assert items == ["a", "b", "c"]  # back at the front, in order


async def test_a_message_counts_the_crashes_of_its_holders_not_cancellations() -> None:
    box: Mailbox[str] = Mailbox("m", 5)
    await box.put("poison")
    await box.put("next")
    for expected in range(3):
        with pytest.raises(RuntimeError):
            async with box.take_letter() as letter:
                assert (letter.item, letter.redeliveries) == ("poison", expected)
                raise RuntimeError("crash")

    async def hold() -> None:
        async with box.take_letter():
            await asyncio.sleep(10)

    task = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with box.take_letters(5) as letters:
        assert [(x.item, x.redeliveries) for x in letters] == [("poison", 3), ("next", 0)]


def feed_later(box: Mailbox[int], items: range) -> asyncio.Task[None]:
    """Puts `items` into `box` 10 ms from now, while a taker lingers."""

    async def later() -> None:
        await asyncio.sleep(0.01)
        for i in items:
            await box.put(i)

    return asyncio.create_task(later())


async def test_take_batch_lingers_for_more_but_not_past_the_limit() -> None:
    box: Mailbox[int] = Mailbox("m", 10)
    await box.put(1)
    feeder = feed_later(box, range(2, 6))
    async with box.take_batch(3, linger_s=0.5) as items:
        assert items == [1, 2, 3]
    with pytest.raises(ValueError):
        async with box.take_batch(5) as items:
            assert items == [4, 5]
            raise ValueError
    assert box.qsize() == 2
    await feeder


async def test_take_batch_stops_lingering_once_enough_wait() -> None:
    box: Mailbox[int] = Mailbox("m", 10)
    await box.put(1)
    feeder = feed_later(box, range(2, 5))
    async with asyncio.timeout(2):  # the linger is 30 s: only `enough` ends it this soon
        async with box.take_batch(10, linger_s=30, enough=3) as items:
            assert items[:3] == [1, 2, 3]
    await feeder


async def test_take_until_a_stop_with_an_empty_mailbox_raises_stopped() -> None:
    box: Mailbox[int] = Mailbox("m", 10)
    stop = asyncio.Event()
    waiting = asyncio.create_task(box.take_batch(5, until=stop).__aenter__())
    await asyncio.sleep(0.01)
    stop.set()
    box.wake_all()
    with pytest.raises(Stopped):
        await asyncio.wait_for(waiting, 1)


async def test_a_taker_woken_then_cancelled_passes_its_turn_on() -> None:
    box: Mailbox[int] = Mailbox("m", 10)
    first = asyncio.create_task(box.take(until=asyncio.Event()).__aenter__())
    second = asyncio.create_task(box.take(until=asyncio.Event()).__aenter__())
    await asyncio.sleep(0.01)
    await box.put(1)  # wakes the first taker in line...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_cancelled_putter_leaves_the_line() -> None:
    box: Mailbox[int] = Mailbox("m", 1)
    await box.put(0)
    gone = asyncio.create_task(box.put(1))
    waiting = asyncio.create_task(box.put(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.sleep(0)
    async with box.take() as item:
        assert item == 0
    await asyncio.wait_for(waiting, 1)
    async with box.take_batch(5) as items:
        assert items == [2]


async def test_takers_behind_a_lingering_one_are_served() -> None:
    box: Mailbox[int] = Mailbox("m", 10)
    await box.put(1)
    lingering = asyncio.create_task(box.take_batch(10, linger_s=30, enough=5).__aenter__())
    await asyncio.sleep(0.01)
    async with box.take() as item:  # taken while the other lingers for more
        assert item == 1
    behind = asyncio.create_task(box.take(until=asyncio.Event()).__aenter__())
    await asyncio.sleep(0.01)
    await box.put(2)
    assert await asyncio.wait_for(behind, 1) == 2  # not held back by the one waiting for five
    assert not lingering.done()
    for i in range(3, 8):
        await box.put(i)
    assert await asyncio.wait_for(lingering, 1) == [3, 4, 5, 6, 7]


async def test_a_stop_ends_a_linger_with_what_is_there() -> None:
    box: Mailbox[int] = Mailbox("m", 10)
    stop = asyncio.Event()
    await box.put(1)
    taking = asyncio.create_task(box.take_batch(10, linger_s=30, until=stop).__aenter__())
    await asyncio.sleep(0.01)
    stop.set()
    box.wake_all()
    assert await asyncio.wait_for(taking, 1) == [1]


class Recording(Actor):
    """Logs its lifecycle into a shared list; behaviour set per test."""

    def __init__(
        self, name: str, log: list[str], crash_times: int = 0, inbox: Mailbox | None = None
    ) -> None:
        super().__init__(name, inbox)
        self.log, self.crash_times = log, crash_times

    async def on_start(self) -> None:
        self.log.append(f"start {self.name}")

    async def run(self) -> None:
        if self.crash_times:
            self.crash_times -= 1
            raise RuntimeError(f"{self.name} crashed")
        while not self.should_stop:
            await self.sleep(10)

    async def on_stop(self) -> None:
        self.log.append(f"stop {self.name}")


async def wait_until(predicate, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_children_start_in_order_and_stop_in_reverse() -> None:
    log: list[str] = []
    sup = Supervisor([ChildSpec(n, lambda n=n: Recording(n, log)) for n in "abc"])
    running = asyncio.create_task(sup.run())
    await wait_until(sup.all_running)
    sup.stop()
    outcome = await running
    assert outcome.ok
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_one_for_one_restart_with_a_fresh_instance() -> None:
    log: list[str] = []
    crashes: list[str] = []
    instances: list[Recording] = []
    budget = {"n": 1}

    def flaky() -> Recording:
        actor = Recording("b", log, crash_times=budget["n"])
        budget["n"] = 0
        instances.append(actor)
        return actor

    sup = Supervisor(
        [ChildSpec("a", lambda: Recording("a", log)), ChildSpec("b", flaky)],
        backoff_initial_s=0.01,
        on_crash=lambda c, e: crashes.append(c),
    )
    running = asyncio.create_task(sup.run())
    await wait_until(lambda: len(instances) == 2 and sup.all_running())
    assert crashes == ["b"]
    assert instances[0] is not instances[1]
    assert log.count("start a") == 1  # the sibling was left alone
    sup.stop()
    assert (await running).ok


class Holder(Actor):
    """Crashes while holding its first message; a fresh instance must get the same one."""

    crashed = False
    handled: list[int] = []

    async def run(self) -> None:
        while True:
            async with self.receive() as item:
                if not Holder.crashed:
                    Holder.crashed = True
                    raise RuntimeError("crash holding a message")
                Holder.handled.append(item)


async def test_work_held_by_a_crashed_actor_is_not_lost() -> None:
    box: Mailbox[int] = Mailbox("work", 10)
    for i in range(3):
        await box.put(i)
    sup = Supervisor([ChildSpec("holder", lambda: Holder("holder", box))], backoff_initial_s=0.01)
    running = asyncio.create_task(sup.run())
    await wait_until(lambda: len(Holder.handled) == 3)
    sup.stop()
    assert (await running).ok
    assert Holder.handled == [0, 1, 2]


async def test_crash_loop_gives_up_and_stops_everyone() -> None:
    log: list[str] = []
    sup = Supervisor(
        [
            ChildSpec("steady", lambda: Recording("steady", log)),
            ChildSpec("loop", lambda: Recording("loop", log, crash_times=100)),
        ],
        max_restarts=3,
        period_s=10,
        backoff_initial_s=0.001,
    )
    outcome = await asyncio.wait_for(sup.run(), 5)
    assert not outcome.ok and outcome.child == "loop"
    assert isinstance(outcome.error, RuntimeError)
    assert log[-1] == "stop steady"


async def test_stop_during_back_off_is_prompt() -> None:
    log: list[str] = []
    sup = Supervisor(
        [ChildSpec("loop", lambda: Recording("loop", log, crash_times=100))],
        max_restarts=100,
        backoff_initial_s=30,
        backoff_max_s=30,
    )
    running = asyncio.create_task(sup.run())
    await wait_until(lambda: "stop loop" in log)
    started = time.monotonic()
    sup.stop()
    assert (await asyncio.wait_for(running, 2)).ok
    assert time.monotonic() - started < 1


class Stubborn(Actor):
    async def run(self) -> None:
        await asyncio.sleep(3600)  # ignores request_stop


async def test_shutdown_timeout_cancels_a_stubborn_child() -> None:
    sup = Supervisor([ChildSpec("s", lambda: Stubborn("s"), shutdown_timeout_s=0.05)])
    running = asyncio.create_task(sup.run())
    await wait_until(sup.all_running)
    sup.stop()
    assert (await asyncio.wait_for(running, 2)).ok


class Finisher(Actor):
    async def run(self) -> None:
        return


@pytest.mark.parametrize(
    ("restart", "restarted"),
    [(Restart.PERMANENT, True), (Restart.TRANSIENT, False), (Restart.TEMPORARY, False)],
)
async def test_restart_types_on_normal_exit(restart: Restart, restarted: bool) -> None:
    made: list[int] = []

    def factory() -> Actor:
        made.append(1)
        return Finisher("f") if len(made) < 3 else Recording("f", [])

    sup = Supervisor([ChildSpec("f", factory, restart=restart)], backoff_initial_s=0.001)
    running = asyncio.create_task(sup.run())
    await asyncio.sleep(0.1)
    sup.stop()
    assert (await running).ok
    assert (len(made) > 1) is restarted


async def test_temporary_child_is_not_restarted_after_a_crash() -> None:
    log: list[str] = []
    sup = Supervisor([ChildSpec("t", lambda: Recording("t", log, 1), Restart.TEMPORARY)])
    running = asyncio.create_task(sup.run())
    await asyncio.sleep(0.05)
    sup.stop()
    assert (await running).ok
    assert log.count("start t") == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": "", "factory": lambda: None}, "id"),
        ({"id": "x", "factory": 3}, "callable"),
        ({"id": "x", "factory": lambda: None, "shutdown_timeout_s": 0}, "shutdown_timeout_s"),
    ],
)
def test_child_spec_is_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChildSpec(**kwargs)


def test_duplicate_child_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor([ChildSpec("a", lambda: Finisher("a")), ChildSpec("a", lambda: Finisher("a"))])
