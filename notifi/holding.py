"""Items held until their due time in one heap under one timer, released in batches: a delivery
process holds the jobs it loaded ahead of their time (`poller.lookahead`) this way, instead of
a sleeping task or a busy worker per job. Never early: an item is released only once the wall
clock has reached its due time (a timer that fires a little early is armed again)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

T = TypeVar("T")


class Holder(Generic[T]):
    """`hold(due_at, item)`; at `due_at` the item goes to `release`, with every other item due
    by then, in due order. Runs on the event loop that calls `hold`."""

    def __init__(self, release: Callable[[list[T]], None]) -> None:
        self._release = release
        self._heap: list[tuple[datetime, int, T]] = []
        self._order = itertools.count()  # ties keep their arrival order (items need no order)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: datetime | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, due_at: datetime, item: T) -> None:
        heapq.heappush(self._heap, (due_at, next(self._order), item))
        if self._armed_for is None or due_at < self._armed_for:
            self._arm()

    def clear(self) -> list[T]:
        """Stops the timer and gives back every item still held (in due order)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_for = None, None
        items = [item for _, _, item in sorted(self._heap)]
        self._heap.clear()
        return items

    def drop(self, unwanted: Callable[[T], bool]) -> int:
        """Stops holding the items `unwanted` picks; how many it did."""
        kept = [entry for entry in self._heap if not unwanted(entry[2])]
        dropped = len(self._heap) - len(kept)
        if dropped:
            heapq.heapify(kept)
            self._heap = kept
            self._arm()
        return dropped

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._heap:
            self._timer, self._armed_for = None, None
            return
        due_at = self._heap[0][0]
        delay_s = max((due_at - datetime.now(UTC)).total_seconds(), 0.0)
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._fire)
        self._armed_for = due_at

    def _fire(self) -> None:
        self._timer, self._armed_for = None, None
        now = datetime.now(UTC)
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        try:
            if due:
                self._release(due)
        finally:
            self._arm()
