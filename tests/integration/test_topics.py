"""Notifications that refer to stored destinations (by id, by name) and to topics, on the real
Postgres through the in-process API: the references checked in one lookup, the topic expanded
in the accept's transaction, each destination once, disabled ones paused, nothing matched is
unmatched, and bad references answered 422 with nothing written.

Stored destinations are inserted with SQL (the destinations API is another module's). The
`destinations` table is not emptied between tests, so every test makes clients of its own."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from aiohttp.test_utils import TestClient, TestServer
from uuid_utils.compat import uuid7

from notifi.api.app import ApiContext, build_app
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.auth import TokenAuth
from notifi.store import AcceptOutcome, Store, references
from notifi.store.retention import RetentionPolicy, RetentionStore
from tests.support.api import accepting, creds

pytestmark = pytest.mark.timeout(60)

CONFIGURED = {
    "ops": {"type": "webhook", "url": "https://ops.example.com/hook"},
    "shared": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x"},
}


@pytest.fixture
def names() -> list[str]:
    """Two client ids of this test's own (another's stored destinations never match)."""
    tag = uuid.uuid4().hex[:8]
    return [f"topics-{tag}-a", f"topics-{tag}-b"]


@pytest.fixture
async def api(store: Store, names: list[str]) -> AsyncIterator[TestClient]:
    """The API in process with this test's clients (the second an admin) and two configured
    named destinations."""

    async def ready() -> dict[str, bool]:
        return {"postgres": True}

    clients = [
        {"id": c, "secret_sha256": hashlib.sha256(f"{c}-secret".encode()).hexdigest()}
        for c in names
    ]
    clients[1]["admin"] = True
    async with accepting(store) as submit:
        ctx = ApiContext(
            store=store,
            validator=Validator(Limits(5, 50, 500, 500, max_bulk=10), CONFIGURED, 1024),
            submit=submit,
            ready=ready,
            default_page_size=50,
            max_page_size=200,
            auth=TokenAuth(clients),
        )
        async with TestClient(TestServer(build_app(ctx))) as client:
            yield client


async def stored(
    store: Store,
    client_id: str,
    *,
    topics: Sequence[str] = (),
    name: str | None = None,
    kind: str = "webhook",
    enabled: bool = True,
) -> UUID:
    """A stored destination, written as the destinations API would (its fields in config)."""
    destination_id = UUID(str(uuid7()))
    config = {"url": f"https://{destination_id}.example.com/hook"}
    await store.pool.execute(
        "INSERT INTO destinations (id, client_id, name, kind, config, topics, enabled) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        destination_id,
        client_id,
        name,
        kind,
        config,
        list(topics),
        enabled,
    )
    return destination_id


async def deliveries(store: Store, notification_id: str | UUID) -> list[dict[str, Any]]:
    rows = await store.pool.fetch(
        "SELECT position, kind, destination, destination_id, status FROM deliveries "
        "WHERE notification_id = $1 ORDER BY position",
        UUID(str(notification_id)),
    )
    return [dict(r) for r in rows]


async def notifications_of(store: Store, client_id: str) -> int:
    return await store.pool.fetchval(
        "SELECT count(*) FROM notifications WHERE client_id = $1", client_id
    )


def post(api: TestClient, client_id: str, body: dict, **headers: str) -> Any:
    return api.post("/api/notifications", json=body, headers={**creds(client_id), **headers})


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


async def test_disabled_destinations_are_paused_when_listed_and_skipped_by_topics(
    api: TestClient, store: Store, names: list[str]
) -> None:
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
        (on_subscribed, "pending"),
    ]
    assert off_subscribed not in [row["destination_id"] for row in rows]
    assert [d["status"] for d in doc["destinations"]] == ["paused", "pending"]
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


@pytest.mark.parametrize(
    ("reference", "pointer"),
    [
        (lambda other, _: {"destination_id": str(other)}, "/destinations/1/destination_id"),
        (lambda _, unknown: {"destination_id": str(unknown)}, "/destinations/1/destination_id"),
        (lambda *_: {"destination_id": "not-a-uuid"}, "/destinations/1/destination_id"),
        (lambda *_: {"destination_id": 7}, "/destinations/1/destination_id"),
        (lambda *_: {"destination_id": str(uuid.uuid4()), "x": 1}, "/destinations/1/x"),
        (lambda *_: {"name": "nobody"}, "/destinations/1/name"),
        (lambda *_: {"name": "theirs"}, "/destinations/1/name"),
    ],
)
async def test_bad_references_are_422_and_write_nothing(
    api: TestClient,
    store: Store,
    names: list[str],
    reference: Callable[[UUID, UUID], dict],
    pointer: str,
) -> None:
    me, other = names
    mine = await stored(store, me)
    theirs = await stored(store, other, name="theirs", topics=["*"])
    body = {
        "body": "b",
        "topic": "deploys",
        "destinations": [{"destination_id": str(mine)}, reference(theirs, uuid.uuid4())],
    }
    r = await post(api, me, body)
    assert r.status == 422, await r.text()
    problem = await r.json()
    assert problem["errors"][0]["pointer"] == pointer, problem
    assert await notifications_of(store, me) == 0


async def test_an_admin_refers_only_to_its_own_stored_destinations(
    api: TestClient, store: Store, names: list[str]
) -> None:
    client, admin = names
    theirs = await stored(store, client)
    own = await stored(store, admin)
    r = await post(api, admin, {"body": "b", "destinations": [{"destination_id": str(theirs)}]})
    assert r.status == 422
    r = await post(api, admin, {"body": "b", "destinations": [{"destination_id": str(own)}]})
    assert r.status == 202, await r.text()


async def test_names_are_the_clients_stored_ones_first_then_the_configured_ones(
    api: TestClient, store: Store, names: list[str]
) -> None:
    me, other = names
    mine = await stored(store, me, name="ops", kind="discord")
    await stored(store, other, name="shared")  # another client's name does not shadow
    body = {"body": "b", "destinations": [{"name": "ops"}, {"name": "shared"}]}
    r = await post(api, me, body)
    assert r.status == 202, await r.text()
    doc = await r.json()
    rows = await deliveries(store, doc["id"])
    assert rows[0]["destination_id"] == mine
    assert rows[0]["destination"] == {"type": "discord", "destination_id": str(mine)}
    assert rows[0]["kind"] == "discord"
    assert rows[1]["destination_id"] is None
    assert rows[1]["destination"] == {**CONFIGURED["shared"], "name": "shared"}
    assert [(d["type"], d.get("destination_id"), d.get("name")) for d in doc["destinations"]] == [
        ("discord", str(mine), None),
        ("slack", None, "shared"),
    ]
    # The other client has no stored "ops": it gets the configured one.
    r = await post(api, other, {"body": "b", "destinations": [{"name": "ops"}]})
    assert r.status == 202
    rows = await deliveries(store, (await r.json())["id"])
    assert rows[0]["destination"] == {**CONFIGURED["ops"], "name": "ops"}


async def test_same_stored_destination_by_id_and_name_gets_one_delivery(
    api: TestClient, store: Store, names: list[str]
) -> None:
    me = names[0]
    mine = await stored(store, me, name="pager")
    body = {
        "body": "b",
        "destinations": [
            {"name": "pager"},
            {"type": "webhook", "url": "https://example.com/h"},
            {"destination_id": str(mine)},
        ],
    }
    r = await post(api, me, body)
    assert r.status == 202, await r.text()
    rows = await deliveries(store, (await r.json())["id"])
    assert [(row["position"], row["destination_id"]) for row in rows] == [(0, mine), (1, None)]


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


async def test_bulk_takes_references_and_topics_with_one_lookup(
    api: TestClient, store: Store, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    me, other = names
    mine = await stored(store, me, name="pager")
    subscribed = await stored(store, me, topics=["deploys"])
    theirs = await stored(store, other)
    lookups: list[tuple[set, set]] = []
    real_find = references.find

    async def counting_find(pool, client_id, ids, names):  # type: ignore[no-untyped-def]
        lookups.append((set(ids), set(names)))
        return await real_find(pool, client_id, ids, names)

    monkeypatch.setattr(references, "find", counting_find)
    items = [
        {"body": "0", "destinations": [{"destination_id": str(mine)}]},
        {"body": "1", "topic": "deploys", "destinations": [{"name": "pager"}]},
        {"body": "2", "destinations": [{"type": "webhook", "url": "https://e.com/h"}]},
        {"body": "3", "destinations": [{"name": "ops"}, {"destination_id": str(theirs)}]},
        {"body": "4", "topic": "Bad"},
        {"body": "5", "topic": "nobody"},
    ]
    r = await api.post("/api/notifications/bulk", json={"notifications": items}, headers=creds(me))
    assert r.status == 200, await r.text()
    doc = await r.json()
    assert lookups == [({mine, theirs}, {"pager", "ops"})]
    assert [i["status"] for i in doc["items"]] == [202, 202, 202, 422, 422, 202]
    assert doc["items"][3]["problem"]["errors"][0]["pointer"] == (
        "/notifications/3/destinations/1/destination_id"
    )
    assert doc["items"][4]["problem"]["errors"][0]["pointer"] == "/notifications/4/topic"
    ids = [i.get("id") for i in doc["items"]]
    assert [r["destination_id"] for r in await deliveries(store, ids[0])] == [mine]
    assert [r["destination_id"] for r in await deliveries(store, ids[1])] == [mine, subscribed]
    assert [r["destination_id"] for r in await deliveries(store, ids[2])] == [None]
    assert await deliveries(store, ids[5]) == []
    statuses = dict(
        await store.pool.fetch(
            "SELECT id::text, status FROM notifications WHERE id = ANY ($1::uuid[])",
            [UUID(i) for i in ids if i],
        )
    )
    assert [statuses[i] for i in ids if i] == ["pending", "pending", "pending", "unmatched"]
    assert await notifications_of(store, me) == 4

    # Nothing refers to a stored destination: nothing to look up (find makes no query then).
    lookups.clear()
    plain = {"notifications": [items[2]]}
    r = await api.post("/api/notifications/bulk", json=plain, headers=creds(me))
    assert r.status == 200 and lookups == [(set(), set())]


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


async def test_a_destination_deleted_after_the_lookup_is_left_out_without_a_gap(
    store: Store, names: list[str]
) -> None:
    me = names[0]
    gone = await stored(store, me)
    kept = await stored(store, me)
    subscribed = await stored(store, me, topics=["deploys"])
    validator = Validator(Limits(5, 50, 500, 500), {}, 16)
    found = await references.find(store.pool, me, [gone, kept], [])
    body = {
        "body": "b",
        "topic": "deploys",
        "destinations": [{"destination_id": str(gone)}, {"destination_id": str(kept)}],
    }
    n = validator.notification(body, me, None, stored=found)
    await store.pool.execute("DELETE FROM destinations WHERE id = $1", gone)
    (result,) = await store.accept([n])
    assert result.outcome is AcceptOutcome.CREATED
    rows = await deliveries(store, n.id)
    assert [(r["position"], r["destination_id"]) for r in rows] == [(0, kept), (1, subscribed)]
    assert [d["position"] for d in result.deliveries or ()] == [0, 1]

    # Every reference gone and no subscriber: unmatched.
    await store.pool.execute("DELETE FROM destinations WHERE id = ANY ($1::uuid[])", [kept])
    n = validator.notification({**body, "topic": "nobody"}, me, None, stored=found)
    (result,) = await store.accept([n])
    assert (result.status, result.deliveries) == ("unmatched", ())
    status = await store.pool.fetchval("SELECT status FROM notifications WHERE id = $1", n.id)
    assert status == "unmatched"


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
