"""Notifications that name stored destinations, by id or by name, on the real Postgres through
the in-process API: one lookup per request or bulk, the client's own only (an admin's too),
names stored first then configured, each destination once, unknown or another client's
references 422 with the item's pointer and nothing written, and a destination deleted
between the lookup and the accept left out without a gap."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from uuid import UUID

import pytest
from aiohttp.test_utils import TestClient

from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.store import AcceptOutcome, Store, references
from tests.support.api import creds
from tests.support.proxy import CuttableProxy
from tests.support.stored_destinations import (
    CONFIGURED,
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


@pytest.mark.parametrize(
    ("reference", "pointer"),
    [
        (lambda other, _: {"destination_id": str(other)}, "/destinations/1/destination_id"),
        (lambda _, unknown: {"destination_id": str(unknown)}, "/destinations/1/destination_id"),
        (lambda *_: {"destination_id": "not-a-uuid"}, "/destinations/1/destination_id"),
        (lambda *_: {"destination_id": 7}, "/destinations/1/destination_id"),
        (lambda *_: {"destination_id": str(uuid.uuid4()), "x": 1}, "/destinations/1/x"),
        (lambda *_: {"name": "nobody"}, "/destinations/1/name"),
        (lambda *_: {"name": "nul\x00"}, "/destinations/1/name"),
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


async def test_the_lookup_answers_503_while_postgres_is_away(
    store: Store, dsn: str, names: list[str]
) -> None:
    me = names[0]
    mine = await stored(store, me)
    proxy = await CuttableProxy("127.0.0.1", 5432).start()
    proxied = await Store.open(
        dsn.replace(":5432/", f":{proxy.port}/"), min_size=1, max_size=2, command_timeout=2
    )
    try:
        async with topic_api(proxied, names) as api:
            proxy.cut()
            body = {"body": "b", "destinations": [{"destination_id": str(mine)}]}
            r = await post(api, me, body)
            assert r.status == 503, await r.text()
            assert r.headers["Retry-After"] == "1"
    finally:
        proxy.restore()
        await proxied.close()
        await proxy.stop()
    assert await notifications_of(store, me) == 0
