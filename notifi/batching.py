"""Turns many concurrent single calls into one batched call (one round trip for many callers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """Calls made while a batch is on its way share the next call of `fn` (up to `max_batch`
    items); with nothing on its way, the calls of one event-loop turn share one.

    At most `max_in_flight` calls of `fn` run at once. A burst of callers therefore makes a
    few large batches instead of one small batch per loop turn, all in flight together: with
    one per turn, 10,000 deliveries due at one instant made about 1,500 claim, mark and state
    round trips each, of 5 to 7 items, up to 15 on their way at once. A quiet caller waits for
    nothing: its batch starts at the next loop turn.

    `fn` takes the items and returns one result per item, in order. A call returns the item's
    future, not a coroutine: awaiting it is the same, and `asyncio.shield` of it needs no task
    of its own (a worker shields its delivered mark, one per webhook).
    """

    def __init__(
        self,
        fn: Callable[[list[K]], Awaitable[Sequence[V]]],
        max_batch: int = 1000,
        max_in_flight: int = 1,
    ):
        self._fn = fn
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._scheduled = False

    def __call__(self, item: K) -> asyncio.Future[V]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled and len(self._flushing) < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and len(self._flushing) < self._max_in_flight:
            batch, self._pending = (
                self._pending[: self._max_batch],
                self._pending[self._max_batch :],
            )
            task = asyncio.ensure_future(self._run(batch))
            self._flushing.add(task)
            task.add_done_callback(self._landed)

    def _landed(self, task: asyncio.Task[None]) -> None:
        """A batch is done: what came meanwhile goes next, after the woken callers' turn (they
        may add to it)."""
        self._flushing.discard(task)
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _run(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            results = await self._fn([item for item, _ in batch])
        except BaseException as exc:  # handed to every caller; they decide
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if len(results) != len(batch):  # a bug in `fn`: every caller hears of it, none hangs
            wrong = RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(wrong)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
