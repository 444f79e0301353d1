"""PATCH /api/notifications/{id}: moves a notification none of whose deliveries has started to
a new time (`{"scheduled_at": …}`, null meaning now), with the same never-early promise as at
submit. The store moves the notification, its deliveries and its outbox rows in one
transaction; a job already on the bus for the old time is sent back for the new one by the
delivery worker that holds it (actors/delivery.py). The route itself is app.py's: it reads the
request and calls `move` (so this module needs nothing of app.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from notifi.api import resources
from notifi.api.validation import Validator
from notifi.errors import Conflict, InvalidRequest, NotFound
from notifi.store import RescheduleOutcome, Store


class AlreadyStarted(Conflict):
    """A delivery of this notification has started, so it can no longer be moved."""

    title = "Already started"
    slug = "already-started"


async def move(
    store: Store,
    validator: Validator,
    notification_id: UUID,
    client_id: str | None,
    body: Any,
) -> dict[str, Any]:
    """The moved notification as the API shows it, or the problem that says why not."""
    now = datetime.now(UTC)
    scheduled_at = validator.reschedule(body, now)
    result = await store.reschedule(notification_id, client_id, scheduled_at, now)
    if result.outcome is RescheduleOutcome.NOT_FOUND:
        raise NotFound("No notification has this id.", pointer="id")
    if result.outcome is RescheduleOutcome.DELETED:
        raise AlreadyStarted("The notification was deleted: its deliveries are cancelled.")
    if (started := result.started) is not None:
        raise AlreadyStarted(
            f"The notification cannot be moved: {started.reason}.",
            destination={"position": started.position, "status": started.status},
        )
    if result.outcome is RescheduleOutcome.AFTER_EXPIRY and result.expires_at is not None:
        raise InvalidRequest(
            "scheduled_at must be before the notification's expiry "
            f"({result.expires_at.isoformat()}): no attempt starts at or after it",
            pointer="/scheduled_at",
        )
    row = await store.get(notification_id, client_id)
    if row is None:  # removed by retention in between: only a finished one could be
        raise NotFound("No notification has this id.", pointer="id")
    return resources.notification(row)
