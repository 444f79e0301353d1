"""A notification's derived status (notifi_refresh_status, migration 0008) on the real Postgres,
table by table: 'cancelled' when the notification was deleted and something was cancelled, or
when everything was; otherwise what the deliveries that are not cancelled say (a stored
destination's delete cancels only its own), by the rules before stored destinations."""

from __future__ import annotations

from uuid import UUID

import pytest

from notifi.store import Store
from notifi.store.destinations import Destinations
from notifi.store.sql import query
from tests.support.factories import new_notification
from tests.support.stored_destinations import client_ids, stored

# A delivery: its status, or (status, attempts) when it was attempted.
Delivery = str | tuple[str, int]

BEFORE = [  # the cases of the rule before stored destinations, which keep their meaning
    (["pending", "pending"], False, "pending"),
    (["scheduled", "scheduled"], False, "scheduled"),
    (["scheduled", "pending"], False, "pending"),
    ([("pending", 1), "pending"], False, "delivering"),
    (["delivering", "pending"], False, "delivering"),
    (["delivered", "pending"], False, "delivering"),
    (["failed", "scheduled"], False, "delivering"),
    (["delivered", "delivered"], False, "delivered"),
    (["expired", "expired"], False, "expired"),
    (["failed", "failed"], False, "failed"),
    (["failed", "expired"], False, "failed"),
    (["delivered", "failed"], False, "partially_failed"),
    (["delivered", "expired"], False, "partially_failed"),
    (["paused"], False, "paused"),
    (["paused", "delivered"], False, "paused"),
    (["paused", "pending"], False, "pending"),
    (["cancelled"], False, "cancelled"),
    (["cancelled", "cancelled"], False, "cancelled"),
    # Deleted: what was undelivered was cancelled, so the notification is.
    (["cancelled", "cancelled"], True, "cancelled"),
    (["delivered", "cancelled"], True, "cancelled"),
    (["failed", ("cancelled", 2)], True, "cancelled"),
    (["cancelled", "delivered", "delivered"], True, "cancelled"),
    # Deleted after everything had ended: nothing was cancelled, the status stays.
    (["delivered", "delivered"], True, "delivered"),
    (["delivered", "failed"], True, "partially_failed"),
]

AFTER = [  # cancelled by a stored destination's delete, the notification not deleted
    (["cancelled", "delivered", "delivered"], False, "delivered"),
    (["delivered", "cancelled", "delivered"], False, "delivered"),
    (["cancelled", "failed", "failed"], False, "failed"),
    (["delivered", "failed", "cancelled"], False, "partially_failed"),
    (["cancelled", "cancelled", "cancelled"], False, "cancelled"),
    (["cancelled", "expired"], False, "expired"),
    (["cancelled", "pending", "pending"], False, "pending"),
    (["cancelled", "scheduled"], False, "scheduled"),
    ([("cancelled", 3), "pending"], False, "pending"),  # its attempts do not count either
    (["cancelled", "delivering"], False, "delivering"),
    (["cancelled", "delivered", "pending"], False, "delivering"),
    (["cancelled", "paused"], False, "paused"),
    (["cancelled", "paused", "delivered"], False, "paused"),
]


def _split(d: Delivery) -> tuple[str, int]:
    return (d, 0) if isinstance(d, str) else d


async def derived(store: Store, deliveries: list[Delivery], deleted: bool) -> tuple[str, bool]:
    """A notification of the test's own with these deliveries: its refreshed status, and
    whether delivered_at is set."""
    n = new_notification(
        destinations=[
            {"type": "webhook", "url": f"https://e.com/{i}"} for i in range(len(deliveries))
        ]
    )
    await store.accept([n])
    statuses, attempts = zip(*map(_split, deliveries), strict=True)
    await store.pool.execute(
        "UPDATE deliveries d"
        "   SET status = t.status, attempts = t.attempts,"
        "       delivered_at = CASE WHEN t.status = 'delivered' THEN now() END"
        "  FROM unnest($2::text[], $3::int[]) WITH ORDINALITY AS t (status, attempts, i)"
        " WHERE d.notification_id = $1 AND d.position = t.i - 1",
        n.id,
        list(statuses),
        list(attempts),
    )
    if deleted:
        await store.pool.execute("UPDATE notifications SET deleted_at = now() WHERE id = $1", n.id)
    await store.pool.execute(query("refresh_status"), [n.id])
    row = await store.pool.fetchrow(
        "SELECT status, delivered_at FROM notifications WHERE id = $1", n.id
    )
    return row["status"], row["delivered_at"] is not None


@pytest.mark.parametrize(("deliveries", "deleted", "expected"), BEFORE + AFTER)
async def test_status_of_the_deliveries(
    store: Store, deliveries: list[Delivery], deleted: bool, expected: str
) -> None:
    status, has_delivered_at = await derived(store, deliveries, deleted)
    assert status == expected
    assert has_delivered_at == (expected == "delivered")


async def test_deleting_one_of_three_stored_destinations_leaves_the_delivered_status(
    store: Store,
) -> None:
    """The reviewer's case through the store: a notification to three stored destinations, two
    delivered, the third deleted while its delivery waited; then the other way round."""
    client = client_ids()[0]
    targets = [await stored(store, client) for _ in range(3)]
    n = new_notification(
        client_id=client,
        destinations=[{"type": "webhook", "url": f"https://e.com/{i}"} for i in range(3)],
    )
    await store.accept([n])
    await store.pool.execute(
        "UPDATE deliveries d SET destination_id = ($2::uuid[])[d.position + 1],"
        "       status = CASE WHEN d.position < 2 THEN 'delivered' ELSE 'pending' END,"
        "       delivered_at = CASE WHEN d.position < 2 THEN now() END"
        " WHERE d.notification_id = $1",
        n.id,
        targets,
    )
    await store.pool.execute(query("refresh_status"), [n.id])
    assert await status_of(store, n.id) == "delivering"
    assert await Destinations(store.pool).delete(targets[2], client) is True
    assert await status_of(store, n.id) == "delivered"
    # Deleted afterwards: a deleted notification with a cancelled delivery is cancelled, though
    # this delete cancelled nothing (a delivery does not record who cancelled it).
    assert await store.delete(n.id, client) is True
    assert await status_of(store, n.id) == "cancelled"


async def test_deleting_the_notification_after_a_destination_delete_cancels_it(
    store: Store,
) -> None:
    client = client_ids()[0]
    targets = [await stored(store, client) for _ in range(2)]
    n = new_notification(
        client_id=client,
        destinations=[{"type": "webhook", "url": f"https://e.com/{i}"} for i in range(2)],
    )
    await store.accept([n])
    await store.pool.execute(
        "UPDATE deliveries d SET destination_id = ($2::uuid[])[d.position + 1]"
        " WHERE d.notification_id = $1",
        n.id,
        targets,
    )
    assert await Destinations(store.pool).delete(targets[0], client) is True
    assert await status_of(store, n.id) == "pending"  # the other one is still to go
    assert await store.delete(n.id, client) is True
    assert await status_of(store, n.id) == "cancelled"


async def status_of(store: Store, notification_id: UUID) -> str:
    return await store.pool.fetchval(
        "SELECT status FROM notifications WHERE id = $1", notification_id
    )
