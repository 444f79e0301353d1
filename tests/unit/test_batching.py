"""The coalescer: one call of the batch function for the callers of a turn, and, while a batch
is on its way, one for everyone who came meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from notifi.batching import Coalescer


class Slow:
    """A batch function that takes `delay_s` (then waits for `gate`, when given) and remembers
    its batches."""

    def __init__(
        self, delay_s: float = 0.0, fail_on: int | None = None, gate: asyncio.Event | None = None
    ) -> None:
        self.delay_s, self.fail_on, self.gate = delay_s, fail_on, gate
        self.batches: list[list[int]] = []
        self.running = self.most_running = 0

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay_s)
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_on in items:
                raise RuntimeError("the batch failed")
            return [i * 10 for i in items]
        finally:
            self.running -= 1


async def test_the_callers_of_one_turn_share_one_call() -> None:
    fn = Slow()
    coalesce = Coalescer(fn)
    assert await asyncio.gather(*(coalesce(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert fn.batches == [[0, 1, 2, 3, 4]]


async def test_callers_that_come_while_a_batch_is_on_its_way_share_the_next() -> None:
    gate = asyncio.Event()
    fn = Slow(gate=gate)
    coalesce = Coalescer(fn)
    first = asyncio.ensure_future(coalesce(0))
    for _ in range(5):  # a few turns: the first batch is on its way
        await asyncio.sleep(0)
    assert fn.batches == [[0]]
    later = []
    for i in range(1, 7):
        later.append(asyncio.ensure_future(coalesce(i)))
        await asyncio.sleep(0)  # each in a turn of its own
    gate.set()
    assert await asyncio.gather(first, *later) == [i * 10 for i in range(7)]
    assert fn.batches == [[0], [1, 2, 3, 4, 5, 6]] and fn.most_running == 1


async def test_more_in_flight_when_allowed_and_batches_are_bounded() -> None:
    fn = Slow(delay_s=0.02)
    coalesce = Coalescer(fn, max_batch=3, max_in_flight=2)
    assert await asyncio.gather(*(coalesce(i) for i in range(8))) == [i * 10 for i in range(8)]
    assert fn.batches == [[0, 1, 2], [3, 4, 5], [6, 7]] and fn.most_running == 2


async def test_a_quiet_caller_does_not_wait_for_anything() -> None:
    fn = Slow()
    coalesce = Coalescer(fn)
    for i in range(3):
        assert await coalesce(i) == i * 10
    assert fn.batches == [[0], [1], [2]]


async def test_a_failed_batch_fails_its_callers_only_and_the_next_one_runs() -> None:
    fn = Slow(delay_s=0.02, fail_on=1)
    coalesce = Coalescer(fn)
    first = [asyncio.ensure_future(coalesce(i)) for i in (0, 1)]
    await asyncio.sleep(0.005)
    second = asyncio.ensure_future(coalesce(2))
    for f in first:
        with pytest.raises(RuntimeError, match="the batch failed"):
            await f
    assert await second == 20
    assert fn.batches == [[0, 1], [2]]


async def test_a_batch_function_that_answers_too_few_fails_its_callers_instead_of_hanging() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    coalesce = Coalescer(short)
    results = await asyncio.gather(*(coalesce(i) for i in range(3)), return_exceptions=True)
    assert [str(r) for r in results] == ["2 results for a batch of 3"] * 3
    with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
        await asyncio.wait_for(coalesce(7), 1)  # the next batch runs, and answers too


async def test_a_call_is_its_future_so_shielding_it_needs_no_task() -> None:
    """A worker shields its delivered mark, one per webhook: a coroutine there cost a task."""
    coalesce = Coalescer(Slow())
    call = coalesce(3)
    assert isinstance(call, asyncio.Future) and not isinstance(call, asyncio.Task)
    assert await asyncio.shield(call) == 30
