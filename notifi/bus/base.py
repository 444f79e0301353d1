"""The bus between roles: one small interface, with Kafka and in-process implementations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

TopicPartition = tuple[str, int]


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


class Bus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Publishes all, returning once every one is acknowledged; raises BusError."""
        ...

    def consumer(self, topic: str, group: str) -> Consumer: ...

    async def ping(self) -> bool: ...
