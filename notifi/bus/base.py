"""The bus between roles: one small interface, with Kafka and in-process implementations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

TopicPartition = tuple[str, int]
RevokedHook = Callable[[set[TopicPartition]], Awaitable[None]]
ResetHook = Callable[[], Awaitable[None]]


class BusError(Exception):
    """A message could not be published."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Topics:
    notifications: str
    deliveries: str
    events: str


def topic_names(prefix: str) -> Topics:
    return Topics(f"{prefix}.notifications", f"{prefix}.deliveries", f"{prefix}.events")


class Consumer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def fetch(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records` records; [] when none arrived within `timeout_s`."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commits the NEXT offset to read per partition (last processed + 1)."""
        ...

    async def lag(self) -> int | None:
        """Messages behind the end of the partitions this consumer owns (None: unknown)."""
        ...

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer owns now."""
        ...

    def on_revoked(self, hook: RevokedHook) -> None:
        """Registers `hook(partitions)`, awaited when a rebalance takes partitions away and
        before anyone else owns them: the place to commit finished work. It runs inside the
        rebalance (not the fetch loop): it must not wait for the fetch loop."""
        ...


class Bus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Publishes all, returning once every one is acknowledged; raises BusError (on Kafka
        within a bounded time, never hanging on a broker that is away)."""
        ...

    def consumer(self, topic: str, group: str, *, instance_id: str | None = None) -> Consumer:
        """A consumer in `group`; `instance_id` is its name within this process (the actor's
        name), from which a stable static-membership id is made where the bus supports it."""
        ...

    async def ping(self) -> bool: ...

    @property
    def resets(self) -> int:
        """How many times the bus found the broker had lost its data (topics, messages,
        committed offsets); only grows. Work that was only on the bus must come back from
        Postgres when it changes."""
        ...

    def on_reset(self, hook: ResetHook) -> None:
        """Registers `hook()`, awaited (in its own task) each time `resets` grows."""
        ...
