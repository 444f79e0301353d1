"""Messages on the topics: a versioned JSON envelope (type, version, id, occurred_at, data).

Each type has a JSON Schema in notifi/schemas/ (`<type>.v<version>.json`); tests check that
what is produced validates against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import uuid_utils

from notifi.model import DeliveryJob

ACCEPTED = "notification.accepted"
DELIVERY_DUE = "delivery.due"
# Operational events on <prefix>.events, for other systems to react to.
SUCCEEDED = "delivery.succeeded"
FAILED = "delivery.failed"  # ended failed at once: a permanent failure
EXHAUSTED = "delivery.exhausted"  # ended failed: the retry schedule ran out
EXPIRED = "delivery.expired"  # ended expired: its notification's expiry came first
DESTINATION_DISABLED = "destination.disabled"  # a stored destination was disabled automatically
VERSION = 1


class BadEvent(ValueError):
    """A message on a topic is not an event Notifi understands."""


def envelope(kind: str, data: dict[str, Any]) -> bytes:
    """An event's bytes; its id a UUIDv7 made and formatted by uuid_utils itself (the stdlib
    `UUID` of `uuid_utils.compat` costs 1.5 us more to make and format, three events a
    delivered webhook)."""
    return orjson.dumps(
        {
            "type": kind,
            "version": VERSION,
            "id": str(uuid_utils.uuid7()),
            "occurred_at": datetime.now(UTC),
            "data": data,
        }
    )


def _open(raw: bytes, kind: str) -> dict[str, Any]:
    try:
        event = orjson.loads(raw)
        if event["type"] != kind or event["version"] != VERSION:
            raise BadEvent(f"expected {kind} v{VERSION}, got {event['type']} v{event['version']}")
        return event["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise BadEvent(f"not a {kind} event: {exc}") from None


def accepted(notification_id: UUID, partition_key: int) -> tuple[bytes, bytes]:
    """(key, value) of `notification.accepted`; keyed by notification id."""
    data = {"notification_id": str(notification_id), "partition_key": partition_key}
    return notification_id.bytes, envelope(ACCEPTED, data)


def read_accepted(raw: bytes) -> UUID:
    try:
        return UUID(_open(raw, ACCEPTED)["notification_id"])
    except (KeyError, ValueError, TypeError) as exc:
        raise BadEvent(f"bad {ACCEPTED}: {exc}") from None


def delivery_due(jobs: Iterable[DeliveryJob]) -> list[tuple[bytes, bytes]]:
    """(key, value) of `delivery.due` per job, keyed by notification id."""
    return [
        (
            job.notification_id.bytes,
            envelope(
                DELIVERY_DUE,
                {
                    "notification_id": str(job.notification_id),
                    "position": job.position,
                    "attempt": job.attempt,
                    "due_at": job.due_at,
                },
            ),
        )
        for job in jobs
    ]


def read_delivery_due(raw: bytes) -> DeliveryJob:
    data = _open(raw, DELIVERY_DUE)
    try:
        return DeliveryJob(
            notification_id=UUID(data["notification_id"]),
            position=int(data["position"]),
            attempt=int(data["attempt"]),
            due_at=datetime.fromisoformat(data["due_at"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise BadEvent(f"bad {DELIVERY_DUE}: {exc}") from None


def delivery_outcome(
    kind: str,
    job: DeliveryJob,
    *,
    client_id: str,
    channel: str,
    status_code: int | None,
    error: str | None,
) -> tuple[bytes, bytes]:
    """(key, value) of an operational event about one delivery's end."""
    data = {
        "notification_id": str(job.notification_id),
        "client_id": client_id,
        "position": job.position,
        "channel": channel,
        "attempt": job.attempt,
        "status_code": status_code,
        "error": error,
    }
    return job.notification_id.bytes, envelope(kind, data)


def destination_disabled(row: Mapping[str, Any], cause: str) -> tuple[bytes, bytes]:
    """(key, value) of `destination.disabled`, keyed by destination id; `row` is the
    destination as the recorder's transaction disabled it, `cause` gone or failing."""
    destination_id: UUID = row["id"]
    data = {
        "destination_id": str(destination_id),
        "client_id": row["client_id"],
        "name": row["name"],
        "type": row["kind"],
        "cause": cause,
        "reason": row["disabled_reason"],
        "disabled_at": row["disabled_at"],
    }
    return destination_id.bytes, envelope(DESTINATION_DISABLED, data)
