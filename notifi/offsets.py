"""Which offsets may be committed when records finish out of order: per partition, everything
below the oldest record still in flight."""

from __future__ import annotations

import heapq
from collections.abc import Callable

TopicPartition = tuple[str, int]


class OffsetTracker:
    def __init__(self) -> None:
        self._pending: dict[TopicPartition, list[int]] = {}  # min-heaps, lazily cleaned
        self._done: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}  # highest offset seen + 1
        self._committed: dict[TopicPartition, int] = {}

    def track(self, tp: TopicPartition, offset: int) -> Callable[[], None]:
        """Registers a record in flight; call the result when its work is durable."""
        heapq.heappush(self._pending.setdefault(tp, []), offset)
        self._committed.setdefault(tp, offset)  # where this consumer started: nothing to commit
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

        def done() -> None:
            self._done.setdefault(tp, set()).add(offset)

        return done

    def in_flight(self) -> int:
        return sum(len(h) for h in self._pending.values()) - sum(
            len(d) for d in self._done.values()
        )

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets (next to read) that advanced since the last call."""
        out = {}
        for tp, heap in self._pending.items():
            done = self._done.get(tp, set())
            while heap and heap[0] in done:
                done.discard(heapq.heappop(heap))
            position = heap[0] if heap else self._next[tp]
            if position > self._committed[tp]:
                self._committed[tp] = position
                out[tp] = position
        return out
