"""Stored rows to the API's resources: the one place that decides what a client sees.
Secrets and header values never leave."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from notifi.model import OPEN_STATUSES, NewNotification


def _destination(given: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {"type": given["type"]}
    if "destination_id" in given:  # a stored destination: its fields are its own resource
        shown["destination_id"] = given["destination_id"]
    if "name" in given:
        shown["name"] = given["name"]
    if "url" in given and "name" not in given:
        shown["url"] = given["url"]
    if given.get("secret"):
        shown["has_secret"] = True
    return shown


def delivery(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "position": row["position"],
        **_destination(row["destination"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "last_status_code": row["last_status_code"],
        "next_attempt_at": row["next_attempt_at"] if row["status"] in OPEN_STATUSES else None,
        "delivered_at": row["delivered_at"],
        "updated_at": row["updated_at"],
    }


def attempt(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "position": row["position"],
        "destination": _destination(row["destination"]),
        "attempt": row["attempt"],
        "started_at": row["started_at"],
        "duration_ms": round(row["duration_ms"], 3),
        "outcome": row["outcome"],
        "status_code": row["status_code"],
        "error": row["error"],
    }


def notification(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored notification (with its "deliveries" rows) as the API shows it."""
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "title": row["title"],
        "body": row["body"],
        "data": row["data"],
        "topic": row.get("topic"),
        "scheduled_at": row["scheduled_at"],
        "expires_at": row.get("expires_at"),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "deleted_at": row["deleted_at"],
        "delivered_at": row["delivered_at"],
        "destinations": [delivery(d) for d in row["deliveries"]],
    }


def accepted(
    n: NewNotification,
    status: str | None = None,
    deliveries: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A notification just written, shown without reading it back: from its request, or with
    the `status` and `deliveries` the accept wrote when they may differ (a topic, stored
    destinations)."""
    due: datetime = n.due_at()
    scheduled = "scheduled" if due > n.created_at else "pending"
    if deliveries is None:
        status = scheduled
        deliveries = [
            {"position": i, "destination": d, "status": scheduled, "next_attempt_at": due}
            for i, d in enumerate(n.destinations)
        ]
    return notification(
        {
            "id": n.id,
            "status": status,
            "title": n.title,
            "body": n.body,
            "data": n.data,
            "topic": n.topic,
            "scheduled_at": n.scheduled_at,
            "expires_at": n.expires_at,
            "created_at": n.created_at,
            "updated_at": n.created_at,
            "deleted_at": None,
            "delivered_at": None,
            "deliveries": [
                {
                    "position": d["position"],
                    "destination": d["destination"],
                    "status": d["status"],
                    "attempts": 0,
                    "last_error": None,
                    "last_status_code": None,
                    "next_attempt_at": d["next_attempt_at"],
                    "delivered_at": None,
                    "updated_at": n.created_at,
                }
                for d in deliveries
            ],
        }
    )
