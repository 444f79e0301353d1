"""Which offsets may be committed when records finish out of order: per partition, everything
below the oldest record still in flight.

A partition's bookkeeping starts over when the consumer loses it (a rebalance revoked it:
`forget`) or when its log goes back (the broker lost its data and the consumer reads the new
log from an earlier offset). Acks of records tracked before that are then ignored: their
offsets belong to a log, or an ownership, that is gone."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass(eq=False, slots=True)
class _Partition:
    committed: int  # the next offset to read, as last committed (or where reading started)
    next: int  # highest offset tracked + 1
    pending: list[int] = field(default_factory=list)  # min-heap, cleaned as its head finishes
    done: set[int] = field(default_factory=set)  # finished offsets still in `pending`


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}

    def track(self, tp: TopicPartition, offset: int) -> Callable[[], None]:
        """Registers a record in flight; call the result when its work is durable."""
        part = self._partitions.get(tp)
        if part is None or offset < part.next:
            # New to this consumer, or the log went back (offsets only grow within one log):
            # start from here; nothing below it is this consumer's to commit.
            part = self._partitions[tp] = _Partition(committed=offset, next=offset)
        heapq.heappush(part.pending, offset)
        part.next = offset + 1

        def done() -> None:
            if self._partitions.get(tp) is part:  # else: revoked or reset since
                part.done.add(offset)

        return done

    def in_flight(self, partitions: Iterable[TopicPartition] | None = None) -> int:
        """Records tracked and not yet done (in `partitions`, or in all)."""
        parts = self._select(partitions)
        return sum(len(p.pending) - len(p.done) for p in parts.values())

    def committable(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Offsets (next to read) that advanced since the last call, for `partitions` (or all)."""
        out = {}
        for tp, part in self._select(partitions).items():
            heap, done = part.pending, part.done
            while heap and heap[0] in done:
                done.discard(heapq.heappop(heap))
            position = heap[0] if heap else part.next
            if position > part.committed:
                part.committed = position
                out[tp] = position
        return out

    def positions(self) -> dict[TopicPartition, int]:
        """Every partition's position as last offered, to offer again: a commit the broker did
        not take (the bus logs and drops it) would otherwise wait for newer work to carry it."""
        return {tp: part.committed for tp, part in self._partitions.items()}

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drops the partitions (revoked): later acks of their records are ignored."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    def _select(
        self, partitions: Iterable[TopicPartition] | None
    ) -> dict[TopicPartition, _Partition]:
        if partitions is None:
            return self._partitions
        return {tp: self._partitions[tp] for tp in partitions if tp in self._partitions}
