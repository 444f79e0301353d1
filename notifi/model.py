"""The domain: notifications, their deliveries, and the jobs that carry them between roles."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due now, waiting for a worker
    SCHEDULED = "scheduled"  # due at the notification's scheduled_at
    DELIVERING = "delivering"  # attempted at least once, another attempt is coming
    DELIVERED = "delivered"
    FAILED = "failed"  # permanent failure or retry schedule exhausted
    CANCELLED = "cancelled"  # the notification, or its stored destination, was deleted first
    EXPIRED = "expired"  # its notification's expiry came first: no attempt starts after it
    PAUSED = "paused"  # its stored destination is disabled: waits, goes out when enabled again


# A delivery in one of these may still be attempted; the others are final.
OPEN_STATUSES = frozenset(
    {DeliveryStatus.PENDING, DeliveryStatus.SCHEDULED, DeliveryStatus.DELIVERING}
)


class NotificationStatus(StrEnum):
    """Derived from the deliveries (the SQL function notifi_refresh_status)."""

    SCHEDULED = "scheduled"
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # every delivery expired
    PAUSED = "paused"  # nothing open but a delivery waiting for its disabled destination
    UNMATCHED = "unmatched"  # its topic matched no destination: no deliveries at all


@dataclass(frozen=True, slots=True)
class NewNotification:
    """A validated request, ready to be written."""

    id: UUID
    client_id: str
    idempotency_key: str | None
    request_hash: bytes
    title: str
    body: str
    data: dict[str, Any]
    scheduled_at: datetime | None
    partition_key: int
    destinations: list[dict[str, Any]]
    created_at: datetime
    expires_at: datetime | None = None  # no attempt starts at or after it (None: never)
    topic: str | None = None  # expands at accept to the client's subscribed stored destinations

    def due_at(self) -> datetime:
        if self.scheduled_at is None or self.scheduled_at < self.created_at:
            return self.created_at
        return self.scheduled_at


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One attempt at one destination of one notification, due at `due_at`."""

    notification_id: UUID
    position: int
    attempt: int
    due_at: datetime

    @property
    def key(self) -> tuple[UUID, int]:
        return (self.notification_id, self.position)

    def later(self, due_at: datetime) -> DeliveryJob:
        """The same attempt, sent back to the outbox to be tried at `due_at`."""
        return replace(self, due_at=due_at)


@dataclass(frozen=True, slots=True)
class NotificationState:
    """What a delivery worker re-reads when a job comes due: whether the notification is gone
    (deleted, or removed), and its schedule now (a PATCH may have moved it)."""

    deleted: bool
    scheduled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DestinationState:
    """What a delivery worker re-reads of a stored destination when a job comes due: whether it
    is gone (deleted) or enabled now (a disable or a delete may have come since the load)."""

    gone: bool
    enabled: bool = False
    updated_at: datetime | None = None  # its last change (fields, secret, state)


@dataclass(frozen=True, slots=True)
class Notification:
    """What a destination is told: the content of one stored notification, built once per job
    from the loaded row; each channel renders its own body from it."""

    id: UUID
    title: str
    body: str
    data: Mapping[str, Any] = field(default_factory=dict)
    scheduled_at: datetime | None = None
    created_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Notification:
        return cls(
            id=row["notification_id"],
            title=row["title"] or "",
            body=row["body"],
            data=row["data"] or {},
            scheduled_at=row["scheduled_at"],
            created_at=row["created_at"],
        )
