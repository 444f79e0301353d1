"""The in-process bus of `--roles all`: per topic one append-only log, consumer groups with
committed offsets, competing consumers within a group. No I/O; bounded by `max_pending`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from notifi.bus.base import Record, ResetHook, RevokedHook, TopicPartition


@dataclass
class _Topic:
    name: str
    base: int = 0  # offset of records[0]
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)  # group -> next offset to hand out
    committed: dict[str, int] = field(default_factory=dict)  # group -> next offset to read
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def end(self) -> int:
        return self.base + len(self.records)

    def trim(self) -> None:
        """Drops what every group has committed, so memory stays bounded."""
        if not self.committed:
            return
        low = min(self.committed.get(g, self.base) for g in self.positions)
        if low > self.base:
            del self.records[: low - self.base]
            self.base = low


class MemoryBus:
    def __init__(self, max_pending: int = 100_000) -> None:
        self._topics: dict[str, _Topic] = {}
        self._max_pending = max_pending

    def _topic(self, name: str) -> _Topic:
        if name not in self._topics:
            self._topics[name] = _Topic(name)
        return self._topics[name]

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def ping(self) -> bool:
        return True

    @property
    def resets(self) -> int:
        return 0  # nothing outside the process can lose this bus's contents

    def on_reset(self, hook: ResetHook) -> None:
        pass  # never fires: see `resets`

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        t = self._topic(topic)
        async with t.changed:
            if not t.positions:
                # Nobody in this process consumes the topic (e.g. the events feed): keep only
                # the newest messages, so an unread topic cannot stall its publishers.
                t.records.extend(messages)
                excess = len(t.records) - self._max_pending
                if excess > 0:
                    del t.records[:excess]
                    t.base += excess
                return
            # Back-pressure: wait while the uncommitted log is at its bound.
            await t.changed.wait_for(lambda: len(t.records) < self._max_pending)
            t.records.extend(messages)
            t.changed.notify_all()

    def consumer(self, topic: str, group: str, *, instance_id: str | None = None) -> MemoryConsumer:
        return MemoryConsumer(self._topic(topic), group)


class MemoryConsumer:
    def __init__(self, topic: _Topic, group: str) -> None:
        self._topic, self._group = topic, group

    async def start(self) -> None:
        t = self._topic
        # Like a rebalance: the group goes on from its committed offset, so work a crashed
        # member had fetched but not committed is handed out again.
        t.positions[self._group] = t.committed.get(self._group, t.base)

    async def stop(self) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return {(self._topic.name, 0)}

    def on_revoked(self, hook: RevokedHook) -> None:
        pass  # one member owns the one partition for good: nothing is ever revoked

    async def fetch(self, max_records: int, timeout_s: float) -> list[Record]:
        t, group = self._topic, self._group
        async with t.changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await t.changed.wait_for(lambda: t.positions[group] < t.end)
            start = max(t.positions[group], t.base)
            stop = min(start + max_records, t.end)
            if start >= stop:
                return []
            t.positions[group] = stop
            return [
                Record(t.name, 0, offset, *t.records[offset - t.base])
                for offset in range(start, stop)
            ]

    async def lag(self) -> int | None:
        return self._topic.end - self._topic.positions[self._group]

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        t = self._topic
        offset = offsets.get((t.name, 0))
        if offset is None:
            return
        async with t.changed:
            t.committed[self._group] = max(t.committed.get(self._group, 0), offset)
            t.trim()
            t.changed.notify_all()
