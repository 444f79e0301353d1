"""PATCH /api/notifications/{id}: moves a notification none of whose deliveries has started to
a new time (`{"scheduled_at": …}`, null meaning now), with the same never-early promise as at
submit. The store moves the notification, its deliveries and its outbox rows in one
transaction; a job already on the bus for the old time is sent back for the new one by the
delivery worker that holds it (actors/delivery.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from notifi.api import app as api
from notifi.api import resources
from notifi.errors import Conflict, InvalidRequest, NotFound
from notifi.store import RescheduleOutcome


class AlreadyStarted(Conflict):
    """A delivery of this notification has started, so it can no longer be moved."""

    title = "Already started"
    slug = "already-started"


async def reschedule_notification(request: web.Request) -> web.Response:
    ctx = request.app[api.CONTEXT]
    notification_id, client = api._notification_id(request), api._client(request).sees
    now = datetime.now(UTC)
    scheduled_at = ctx.validator.reschedule(await api._json_body(request, ctx.max_body_bytes), now)
    result = await ctx.store.reschedule(notification_id, client, scheduled_at, now)
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
    row = await ctx.store.get(notification_id, client)
    if row is None:  # removed by retention in between: only a finished one could be
        raise NotFound("No notification has this id.", pointer="id")
    return api.json_response(resources.notification(row))
