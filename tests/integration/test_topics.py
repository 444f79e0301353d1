"""Notifications to topics, on the real Postgres through the in-process API: the topic expanded
in the accept's transaction to every subscriber (or "*"), each once and after the listed
destinations, disabled ones paused (listed or subscribed) until enabled, nothing matched is
unmatched (and retention treats it as finished), bad topic names are 422, and a
replay writes nothing. References by id and name: test_destination_references.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from aiohttp.test_utils import TestClient

from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.store import AcceptOutcome, Store
from notifi.store.destinations import Destinations, Fields
from notifi.store.retention import RetentionPolicy, RetentionStore
from tests.support.api import ahead, creds, iso
from tests.support.stored_destinations import (
    client_ids,
    deliveries,
    notifications_of,
    post,
    stored,
    topic_api,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def names() -> list[str]:
    return client_ids()


@pytest.fixture
async def api(store: Store, names: list[str]) -> AsyncIterator[TestClient]:
    async with topic_api(store, names) as client:
        yield client


async def test_topic_reaches_each_subscribed_destination_once(
    api: TestClient, store: Store, names: list[str]
) -> None:
    me = names[0]
    first = await stored(store, me, topics=["deploys"])
    second = await stored(store, me, topics=["builds", "deploys"])
    everything = await stored(store, me, topics=["*"])
    await stored(store, me, topics=["builds"])  # not subscribed
    await stored(store, names[1], topics=["*"])  # another client's
    body = {
        "body": "v2 is out",
        "topic": "deploys",
        "destinations": [{"destination_id": str(second)}],
    }
    r = await post(api, me, body)
    assert r.status == 202, await r.text()
    doc = await r.json()
    rows = await deliveries(store, doc["id"])
    # The listed one first, then the topic's in id order; `second` once although both name it.
    expected = [second, *sorted([first, everything])]
    assert [row["destination_id"] for row in rows] == expected
    assert [row["position"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert row["kind"] == "webhook"
        assert row["destination"] == {
            "type": "webhook",
            "destination_id": str(row["destination_id"]),
        }
        assert row["status"] == "pending"
    assert doc["topic"] == "deploys"
    assert doc["status"] == "pending"
    shown = [(d["position"], d["destination_id"], d["type"]) for d in doc["destinations"]]
    assert shown == [(i, str(d), "webhook") for i, d in enumerate(expected)]
    assert all("url" not in d and "secret" not in d for d in doc["destinations"])
    got = await (await api.get(f"/api/notifications/{doc['id']}", headers=creds(me))).json()
    assert got["topic"] == "deploys"
    assert [d["destination_id"] for d in got["destinations"]] == [str(d) for d in expected]


async def test_disabled_destinations_are_paused_when_listed_and_when_subscribed(
    api: TestClient, store: Store, names: list[str]
) -> None:
    """Disabled means paused, never dropped: a topic's disabled subscriber waits like a listed
    disabled destination does."""
    me = names[0]
    off_listed = await stored(store, me, enabled=False)
    off_subscribed = await stored(store, me, topics=["deploys"], enabled=False)
    on_subscribed = await stored(store, me, topics=["deploys"])
    body = {"body": "b", "topic": "deploys", "destinations": [{"destination_id": str(off_listed)}]}
    r = await post(api, me, body)
    assert r.status == 202, await r.text()
    doc = await r.json()
    rows = await deliveries(store, doc["id"])
    assert [(row["destination_id"], row["status"]) for row in rows] == [
        (off_listed, "paused"),
        (off_subscribed, "paused"),
        (on_subscribed, "pending"),
    ]
    assert [d["status"] for d in doc["destinations"]] == ["paused", "paused", "pending"]
    assert doc["status"] == "pending"

    # Only a disabled destination: the notification is paused, and nothing routes it.
    r = await post(api, me, {"body": "b", "destinations": [{"destination_id": str(off_listed)}]})
    assert r.status == 202, await r.text()
    doc = await r.json()
    assert doc["status"] == "paused"
    nid = UUID(doc["id"])
    assert await store.pool.fetchval("SELECT status FROM notifications WHERE id = $1", nid) == (
        "paused"
    )
    jobs, later = await store.route([nid], 60.0)
    assert (jobs, later) == ([], 0)
    await store.backstop(0, 1023, 0.0, 100)  # routes what nobody routed: not paused rows
    assert (
        await store.pool.fetchval("SELECT count(*) FROM outbox WHERE notification_id = $1", nid)
        == 0
    )
    assert [row["status"] for row in await deliveries(store, nid)] == ["paused"]

    # A delete cancels what waits paused.
    r = await api.delete(f"/api/notifications/{nid}", headers=creds(me))
    assert r.status == 200
    assert (await r.json())["status"] == "cancelled"
    assert [row["status"] for row in await deliveries(store, nid)] == ["cancelled"]


async def test_a_topic_nobody_subscribes_to_is_accepted_unmatched(
    api: TestClient, store: Store, names: list[str]
) -> None:
    me = names[0]
    await stored(store, me, topics=["deploys"])
    for body in ({"body": "b", "topic": "nobody"}, {"body": "b", "topic": "x", "destinations": []}):
        r = await post(api, me, body)
        assert r.status == 202, await r.text()
        doc = await r.json()
        assert doc["status"] == "unmatched"
        assert doc["destinations"] == []
        got = await (await api.get(f"/api/notifications/{doc['id']}", headers=creds(me))).json()
        assert (got["status"], got["destinations"], got["topic"]) == (
            "unmatched",
            [],
            body["topic"],
        )
        assert await deliveries(store, doc["id"]) == []
    listed = await api.get("/api/notifications?status=unmatched", headers=creds(me))
    assert len((await listed.json())["items"]) == 2


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"body": "b", "topic": "Deploys"}, "/topic"),
        ({"body": "b", "topic": "de ploys"}, "/topic"),
        ({"body": "b", "topic": ""}, "/topic"),
        ({"body": "b", "topic": "*"}, "/topic"),
        ({"body": "b", "topic": "a" * 65}, "/topic"),
        ({"body": "b", "topic": "deploys\n"}, "/topic"),
        ({"body": "b", "topic": 5}, "/topic"),
        ({"body": "b", "topic": ["deploys"]}, "/topic"),
        ({"body": "b"}, "/destinations"),
        ({"body": "b", "destinations": []}, "/destinations"),
        ({"body": "b", "topic": None, "destinations": []}, "/destinations"),
    ],
)
async def test_bad_topics_and_missing_destinations_are_422(
    api: TestClient, store: Store, names: list[str], body: dict, pointer: str
) -> None:
    r = await post(api, names[0], body)
    assert r.status == 422, await r.text()
    assert (await r.json())["errors"][0]["pointer"] == pointer
    assert await notifications_of(store, names[0]) == 0


async def test_topic_names_at_the_edges_are_accepted(
    api: TestClient, store: Store, names: list[str]
) -> None:
    for topic in ("a", "a" * 64, "deploys.prod_eu-1", "0"):
        r = await post(api, names[0], {"body": "b", "topic": topic})
        assert r.status == 202, await r.text()


async def test_idempotent_replay_with_a_topic_writes_nothing_more(
    api: TestClient, store: Store, names: list[str]
) -> None:
    me = names[0]
    await stored(store, me, topics=["deploys"])
    await stored(store, me, topics=["*"])
    body = {"body": "b", "topic": "deploys"}
    first = await post(api, me, body, **{"Idempotency-Key": "k1"})
    assert first.status == 202
    nid = (await first.json())["id"]
    await stored(store, me, topics=["deploys"])  # a new subscriber does not change a replay
    again = await post(api, me, body, **{"Idempotency-Key": "k1"})
    assert again.status == 200
    doc = await again.json()
    assert doc["id"] == nid and len(doc["destinations"]) == 2
    assert len(await deliveries(store, nid)) == 2
    assert await notifications_of(store, me) == 1
    other_topic = await post(api, me, {**body, "topic": "builds"}, **{"Idempotency-Key": "k1"})
    assert other_topic.status == 409
    assert await notifications_of(store, me) == 1


async def test_retention_removes_unmatched_like_delivered_and_keeps_paused(
    api: TestClient, store: Store, names: list[str]
) -> None:
    me = names[0]
    off = await stored(store, me, enabled=False)
    unmatched = (await (await post(api, me, {"body": "b", "topic": "nobody"})).json())["id"]
    body = {"body": "b", "destinations": [{"destination_id": str(off)}]}
    paused = (await (await post(api, me, body)).json())["id"]
    await store.pool.execute(
        "UPDATE notifications SET updated_at = now() - interval '2 days' "
        "WHERE id = ANY ($1::uuid[])",
        [UUID(unmatched), UUID(paused)],
    )
    await store.pool.execute(
        "UPDATE deliveries SET updated_at = now() - interval '2 days' WHERE notification_id = $1",
        UUID(paused),
    )
    # Windows shorter than the notifications' age: ids are made now, so the horizon must pass them.
    policy = RetentionPolicy(delivered_s=86_400.0, failed_s=86_400.0)
    await RetentionStore(store.pool).sweep(
        0, 1023, 100, policy, now=datetime.now(UTC) + timedelta(days=2)
    )
    left = await store.pool.fetch(
        "SELECT id::text FROM notifications WHERE id = ANY ($1::uuid[])",
        [UUID(unmatched), UUID(paused)],
    )
    assert [r["id"] for r in left] == [paused]


async def test_enabling_the_destination_resumes_a_paused_delivery(
    api: TestClient, store: Store, names: list[str]
) -> None:
    """Across the two halves: the accept pauses, the destinations store's enable resumes."""
    me = names[0]
    off = await stored(store, me, enabled=False)
    r = await post(api, me, {"body": "b", "destinations": [{"destination_id": str(off)}]})
    nid = UUID((await r.json())["id"])

    def enabled(row: dict) -> Fields:
        return Fields(
            row["name"], row["description"], row["config"], row["topics"], row["rate_limit"], True
        )

    assert await Destinations(store.pool).update(off, me, enabled) is not None
    assert [d["status"] for d in await deliveries(store, nid)] == ["pending"]
    assert await store.pool.fetchval("SELECT count(*) FROM outbox WHERE notification_id = $1", nid)
    doc = await (await api.get(f"/api/notifications/{nid}", headers=creds(me))).json()
    assert doc["status"] == "pending"


async def test_enabling_a_disabled_subscriber_resumes_what_its_topic_paused(
    api: TestClient, store: Store, names: list[str]
) -> None:
    """A topic's only subscriber is disabled: the notification is paused (not unmatched), and
    enabling the destination sends it through the outbox like a listed one."""
    me = names[0]
    off = await stored(store, me, topics=["deploys"], enabled=False)
    r = await post(api, me, {"body": "b", "topic": "deploys"})
    assert r.status == 202, await r.text()
    doc = await r.json()
    assert doc["status"] == "paused"
    assert [(d["destination_id"], d["status"]) for d in doc["destinations"]] == [
        (str(off), "paused")
    ]
    nid = UUID(doc["id"])
    assert [(d["destination_id"], d["status"]) for d in await deliveries(store, nid)] == [
        (off, "paused")
    ]

    def enabled(row: dict) -> Fields:
        return Fields(
            row["name"], row["description"], row["config"], row["topics"], row["rate_limit"], True
        )

    assert await Destinations(store.pool).update(off, me, enabled) is not None
    assert [d["status"] for d in await deliveries(store, nid)] == ["pending"]
    assert await store.pool.fetchval("SELECT count(*) FROM outbox WHERE notification_id = $1", nid)
    got = await (await api.get(f"/api/notifications/{nid}", headers=creds(me))).json()
    assert got["status"] == "pending"


async def test_enabling_before_the_schedule_resumes_for_the_scheduled_time(
    api: TestClient, store: Store, names: list[str]
) -> None:
    """A delivery paused at accept for a notification due later is not sent early when its
    destination is enabled before that time: its outbox row is due at the schedule."""
    me = names[0]
    off = await stored(store, me, enabled=False)
    when = ahead(3600)
    body = {"body": "b", "scheduled_at": iso(when), "destinations": [{"destination_id": str(off)}]}
    nid = UUID((await (await post(api, me, body)).json())["id"])

    def enabled(row: dict) -> Fields:
        return Fields(
            row["name"], row["description"], row["config"], row["topics"], row["rate_limit"], True
        )

    assert await Destinations(store.pool).update(off, me, enabled) is not None
    assert [d["status"] for d in await deliveries(store, nid)] == ["scheduled"]
    due = await store.pool.fetchval("SELECT due_at FROM outbox WHERE notification_id = $1", nid)
    assert due >= when


async def test_one_accept_batch_expands_each_topic_for_its_own_client(
    store: Store, names: list[str]
) -> None:
    """The accept writer batches many requests into one statement: each notification gets its
    own client's subscribers, whatever else shares the batch (inline-only ones included)."""
    a, b = names
    a_deploys = await stored(store, a, topics=["deploys"])
    a_all = await stored(store, a, topics=["*"])
    b_deploys = await stored(store, b, topics=["deploys"])
    validator = Validator(Limits(5, 50, 500, 500), {}, 16)
    inline = {"type": "webhook", "url": "https://example.com/h"}
    batch = [
        validator.notification({"body": "1", "topic": "deploys"}, a, None),
        validator.notification({"body": "2", "topic": "deploys"}, b, None),
        validator.notification({"body": "3", "destinations": [inline]}, a, None),
        validator.notification({"body": "4", "topic": "builds", "destinations": [inline]}, a, None),
        validator.notification({"body": "5", "topic": "builds"}, b, None),
    ]
    results = await store.accept(batch)
    assert [r.outcome for r in results] == [AcceptOutcome.CREATED] * 5
    got = [[d["destination_id"] for d in await deliveries(store, n.id)] for n in batch]
    assert got == [sorted([a_deploys, a_all]), [b_deploys], [None], [None, a_all], []]
    assert [r.status for r in results] == ["pending", "pending", None, "pending", "unmatched"]


async def test_the_description_publishes_topics_and_references(
    api: TestClient,
) -> None:
    doc = await (await api.get("/api/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    request = schemas["NotificationRequest"]
    assert request["properties"]["topic"]["pattern"] == "^[a-z0-9._-]{1,64}$"
    assert request["required"] == ["body"]
    items = request["properties"]["destinations"]["items"]["oneOf"]
    assert {"$ref": "#/components/schemas/StoredDestinationReference"} in items
    assert schemas["StoredDestinationReference"]["required"] == ["destination_id"]
    shown = schemas["Notification"]["properties"]
    assert "topic" in shown
    assert {"paused", "unmatched"} <= set(shown["status"]["enum"])
    assert "destination_id" in shown["destinations"]["items"]["properties"]
    assert "paused" in shown["destinations"]["items"]["properties"]["status"]["enum"]


async def test_a_retry_leaves_a_deleted_destinations_delivery_cancelled(
    api: TestClient, store: Store, names: list[str]
) -> None:
    """POST .../retry re-drives failed and cancelled deliveries, but not those whose stored
    destination was deleted since: deleting it cancelled them for good."""
    me = names[0]
    kept, dropped = await stored(store, me), await stored(store, me)
    body = {"body": "b", "destinations": [{"destination_id": str(d)} for d in (kept, dropped)]}
    nid = UUID((await (await post(api, me, body)).json())["id"])
    await store.pool.execute(
        "UPDATE deliveries SET status = 'failed' WHERE notification_id = $1 AND position = 0", nid
    )
    assert await Destinations(store.pool).delete(dropped, me)
    r = await api.post(f"/api/notifications/{nid}/retry", headers=creds(me))
    assert r.status < 300, await r.text()
    assert [d["status"] for d in await deliveries(store, nid)] == ["pending", "cancelled"]
