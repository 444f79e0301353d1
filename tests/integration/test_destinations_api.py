"""The stored destinations resource (issue 12) in process on the real Postgres: CRUD, every bad
input answered 4xx with nothing written, the secret shown once, rotation, delete cancelling
what is undelivered, enable resuming paused deliveries oldest first, recover (dry run, then
once), the stats, paging and filters, and tenancy. The deliveries these act on are written
directly, as the accept path would (destination_id set)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import fastjsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from uuid_utils.compat import uuid7

from notifi.api import destination_schemas
from notifi.api.app import CONTEXT, build_app
from notifi.destinations.network import AddressPolicy
from notifi.store import Store
from notifi.store.sql import query
from tests.support.api import api_client, creds

URL = "https://example.com/hook"
HOOK = {"type": "webhook", "url": URL}
ALPHA, BETA, ROOT = creds("alpha"), creds("beta"), creds("root")


def tag() -> str:
    """A topic of the test's own (the destinations table outlives each test)."""
    return f"t-{uuid.uuid4().hex[:10]}"


async def create(api: TestClient, body: dict[str, Any], who: dict[str, str] = ALPHA) -> dict:
    r = await api.post("/api/destinations", json=body, headers=who)
    assert r.status == 201, await r.text()
    doc = await r.json()
    assert r.headers["Location"] == f"/api/destinations/{doc['id']}"
    return doc


async def count(store: Store, client_id: str = "alpha") -> int:
    return await store.pool.fetchval(
        "SELECT count(*) FROM destinations WHERE client_id = $1", client_id
    )


async def row(store: Store, destination_id: str) -> dict[str, Any] | None:
    found = await store.pool.fetchrow(
        "SELECT * FROM destinations WHERE id = $1", UUID(destination_id)
    )
    return None if found is None else dict(found)


async def notification(
    store: Store, destination_id: str, statuses: list[str], *, attempts: int = 1
) -> UUID:
    """A notification whose deliveries (one per status) all go to the stored destination."""
    nid = UUID(str(uuid7()))
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO notifications (id, client_id, body, partition_key, status) "
            "VALUES ($1, 'alpha', 'b', 7, 'pending')",
            nid,
        )
        for position, status in enumerate(statuses):
            await conn.execute(
                "INSERT INTO deliveries (notification_id, position, kind, destination, status, "
                "attempts, next_attempt_at, destination_id) "
                "VALUES ($1, $2, 'webhook', $3, $4, $5, now(), $6)",
                nid,
                position,
                {"type": "webhook", "destination_id": destination_id},
                status,
                attempts,
                UUID(destination_id),
            )
    return nid


async def statuses(store: Store, nid: UUID) -> list[str]:
    rows = await store.pool.fetch(
        "SELECT status FROM deliveries WHERE notification_id = $1 ORDER BY position", nid
    )
    return [r["status"] for r in rows]


async def test_crud_round_trip(api: TestClient, store: Store) -> None:
    topic = tag()
    body = {
        **HOOK,
        "headers": {"X-Token": "very-secret-value"},
        "name": f"hooks-{topic}",
        "description": "deploy hooks",
        "topics": [topic, "billing", topic],
        "rate_limit": 0.5,
    }
    doc = await create(api, body)
    assert doc["secret"].startswith("whsec_") and len(doc["secret"]) == 6 + 32
    assert doc["topics"] == [topic, "billing"] and doc["rate_limit"] == 0.5
    assert doc["enabled"] is True and doc["has_secret"] is True
    assert doc["header_names"] == ["X-Token"] and "very-secret-value" not in str(doc)
    assert doc["stats"] == {
        "attempts_24h": 0,
        "successes_24h": 0,
        "failures_24h": 0,
        "last_success_at": None,
        "last_failure_at": None,
    }
    stored = await row(store, doc["id"])
    assert stored["secret"] == doc["secret"] and "secret" not in stored["config"]
    assert stored["config"] == {"url": URL, "headers": {"X-Token": "very-secret-value"}}

    r = await api.get(f"/api/destinations/{doc['id']}", headers=ALPHA)
    got = await r.json()
    assert r.status == 200 and "secret" not in got and got["has_secret"] is True
    assert doc["secret"] not in await r.text()
    assert {k: v for k, v in got.items() if k != "secret"} == {
        k: v for k, v in doc.items() if k != "secret"
    }

    r = await api.patch(
        f"/api/destinations/{doc['id']}",
        json={"url": "https://example.com/other", "description": None, "headers": None},
        headers=ALPHA,
    )
    patched = await r.json()
    assert r.status == 200, patched
    assert patched["url"] == "https://example.com/other" and patched["description"] == ""
    assert "header_names" not in patched and patched["topics"] == [topic, "billing"]
    assert (await row(store, doc["id"]))["secret"] == doc["secret"]  # a PATCH keeps it

    r = await api.get(f"/api/destinations?topic={topic}", headers=ALPHA)
    assert [d["id"] for d in (await r.json())["items"]] == [doc["id"]]

    r = await api.delete(f"/api/destinations/{doc['id']}", headers=ALPHA)
    assert r.status == 204
    assert await row(store, doc["id"]) is None
    r = await api.get(f"/api/destinations/{doc['id']}", headers=ALPHA)
    assert r.status == 404 and r.content_type == "application/problem+json"


async def test_answers_match_the_published_schemas(api: TestClient) -> None:
    check = fastjsonschema.compile(destination_schemas.destination())
    check_page = fastjsonschema.compile(destination_schemas.destination_page())
    doc = await create(api, {**HOOK, "name": f"s-{tag()}", "topics": ["a"], "rate_limit": 3})
    check(doc)
    r = await api.get(f"/api/destinations/{doc['id']}", headers=ALPHA)
    check(await r.json())
    r = await api.get("/api/destinations?limit=3", headers=ALPHA)
    check_page(await r.json())
    r = await api.post(f"/api/destinations/{doc['id']}/rotate-secret", headers=ALPHA)
    fastjsonschema.compile(destination_schemas.rotated())(await r.json())
    r = await api.get("/api/openapi.json")
    described = (await r.json())["paths"]
    assert {p for p in described if p.startswith("/api/destinations")} == {
        "/api/destinations",
        "/api/destinations/{id}",
        "/api/destinations/{id}/rotate-secret",
        "/api/destinations/{id}/recover",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"type": "email", "to": ["a@example.com", "b@example.com"], "subject": "Hi"},
        {"type": "slack", "url": "https://hooks.slack.com/services/x"},
        {"type": "discord", "url": "https://discord.com/api/webhooks/x"},
        {"type": "teams", "url": "https://example.webhook.office.com/x"},
    ],
)
async def test_other_types_have_no_secret(api: TestClient, body: dict[str, Any]) -> None:
    doc = await create(api, {**body, "topics": "*"})
    assert "secret" not in doc and "has_secret" not in doc and doc["topics"] == ["*"]
    assert doc["type"] == body["type"]


BAD_BODIES = [
    ({**HOOK, "colour": "red"}, "/colour"),
    ({**HOOK, "url": 5}, "/url"),
    ({**HOOK, "url": "ftp://example.com/x"}, "/url"),
    ({**HOOK, "url": "not a url"}, "/url"),
    ({**HOOK, "url": "http://127.0.0.1:9/x"}, "/url"),
    ({**HOOK, "url": "http://10.1.2.3/x"}, "/url"),
    ({**HOOK, "url": "http://169.254.169.254/latest"}, "/url"),
    ({**HOOK, "url": "http://[::1]:8080/"}, "/url"),
    ({**HOOK, "url": "http://localhost:8080/x"}, "/url"),
    ({**HOOK, "url": "http://127.1/x"}, "/url"),
    ({**HOOK, "secret": "nope"}, "/secret"),
    ({**HOOK, "topics": ["Deploys"]}, "/topics/0"),
    ({**HOOK, "topics": ["a" * 65]}, "/topics/0"),
    ({**HOOK, "topics": ["deploys", "*"]}, "/topics/1"),
    ({**HOOK, "topics": "deploys"}, "/topics"),
    ({**HOOK, "topics": [f"t{i}" for i in range(51)]}, "/topics"),
    ({**HOOK, "name": ""}, "/name"),
    ({**HOOK, "name": "x" * 101}, "/name"),
    ({**HOOK, "name": "a\nb"}, "/name"),
    ({**HOOK, "description": "x" * 501}, "/description"),
    ({**HOOK, "description": "nul\x00"}, "/description"),
    ({**HOOK, "rate_limit": 0}, "/rate_limit"),
    ({**HOOK, "rate_limit": 10_001}, "/rate_limit"),
    ({**HOOK, "rate_limit": "5"}, "/rate_limit"),
    ({**HOOK, "rate_limit": True}, "/rate_limit"),
    ({**HOOK, "enabled": "yes"}, "/enabled"),
    ({"type": "pigeon", "url": URL}, "/type"),
    ({"url": URL}, "/type"),
    ({"type": "email", "to": "not-an-address"}, "/to"),
    ({"type": "slack", "url": URL, "secret": None}, "/secret"),
    ({**HOOK, "headers": {"Host": "x"}}, "/headers"),
]


@pytest.mark.parametrize(("body", "pointer"), BAD_BODIES)
async def test_bad_input_is_422_and_writes_nothing(
    api: TestClient, store: Store, body: dict[str, Any], pointer: str
) -> None:
    before = await count(store)
    r = await api.post("/api/destinations", json=body, headers=ALPHA)
    doc = await r.json()
    assert r.status == 422, doc
    assert r.content_type == "application/problem+json"
    assert doc["errors"][0]["pointer"].startswith(pointer), doc
    assert await count(store) == before


async def test_bodies_that_are_not_objects(api: TestClient, store: Store) -> None:
    before = await count(store)
    r = await api.post("/api/destinations", data=b"{", headers=ALPHA)
    assert r.status in (400, 415)
    r = await api.post(
        "/api/destinations", data=b"{", headers={**ALPHA, "Content-Type": "application/json"}
    )
    assert r.status == 400 and r.content_type == "application/problem+json"
    r = await api.post("/api/destinations", json=[HOOK], headers=ALPHA)
    assert r.status == 422
    assert await count(store) == before


async def test_duplicate_name_is_409(api: TestClient, store: Store) -> None:
    name = f"ops-{tag()}"
    first = await create(api, {**HOOK, "name": name})
    before = await count(store)
    r = await api.post("/api/destinations", json={**HOOK, "name": name}, headers=ALPHA)
    doc = await r.json()
    assert r.status == 409 and doc["errors"][0]["pointer"] == "/name", doc
    assert await count(store) == before
    await create(api, {**HOOK, "name": name}, BETA)  # per client
    other = await create(api, {**HOOK, "name": f"{name}-2"})
    r = await api.patch(f"/api/destinations/{other['id']}", json={"name": name}, headers=ALPHA)
    assert r.status == 409
    assert (await row(store, other["id"]))["name"] == f"{name}-2"
    assert (await row(store, first["id"]))["name"] == name


async def test_unknown_and_foreign_ids_are_404(api: TestClient, store: Store) -> None:
    theirs = await create(api, {**HOOK, "name": f"b-{tag()}"}, BETA)
    before = await row(store, theirs["id"])
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for ident in (theirs["id"], str(uuid.uuid4()), "not-a-uuid", "1"):
        path = f"/api/destinations/{ident}"
        for method, url, body in [
            ("GET", path, None),
            ("PATCH", path, {"description": "mine now"}),
            ("DELETE", path, None),
            ("POST", f"{path}/rotate-secret", {}),
            ("POST", f"{path}/recover", {"since": since}),
        ]:
            r = await api.request(method, url, json=body, headers=ALPHA)
            assert r.status == 404, (method, url, await r.text())
            assert r.content_type == "application/problem+json"
    assert await row(store, theirs["id"]) == before
    # An admin sees and changes every client's.
    r = await api.get(f"/api/destinations/{theirs['id']}", headers=ROOT)
    assert r.status == 200
    r = await api.patch(
        f"/api/destinations/{theirs['id']}", json={"description": "by root"}, headers=ROOT
    )
    assert r.status == 200 and (await row(store, theirs["id"]))["description"] == "by root"


async def test_patch_rules(api: TestClient, store: Store) -> None:
    doc = await create(api, {**HOOK, "name": f"p-{tag()}"})
    before = await row(store, doc["id"])
    path = f"/api/destinations/{doc['id']}"
    for body, pointer in [
        ({"type": "slack"}, "/type"),
        ({"secret": "whsec_" + "A" * 32}, "/secret"),
        ({"colour": "red"}, "/colour"),
        ({"to": "a@example.com"}, "/to"),
        ({"url": None}, "/url"),
        ({"url": "http://192.168.1.1/"}, "/url"),
        ({"topics": ["UPPER"]}, "/topics/0"),
        ({"rate_limit": -1}, "/rate_limit"),
        ({"enabled": None}, "/enabled"),
        ({"name": "ok", "url": "ftp://x"}, "/url"),  # nothing half-written
    ]:
        r = await api.patch(path, json=body, headers=ALPHA)
        problem = await r.json()
        assert r.status == 422, (body, problem)
        assert problem["errors"][0]["pointer"] == pointer, (body, problem)
    r = await api.patch(path, json=["x"], headers=ALPHA)
    assert r.status == 422
    assert await row(store, doc["id"]) == before


async def test_read_only_client_may_only_read(api: TestClient, store: Store) -> None:
    viewer = creds("viewer")
    r = await api.post("/api/destinations", json=HOOK, headers=viewer)
    assert r.status == 403 and await count(store, "viewer") == 0
    r = await api.get("/api/destinations", headers=viewer)
    assert r.status == 200


async def test_rotation(api: TestClient, store: Store) -> None:
    given = "whsec_" + "QUJD" * 8
    doc = await create(api, {**HOOK, "secret": given})
    assert doc["secret"] == given
    path = f"/api/destinations/{doc['id']}/rotate-secret"
    r = await api.post(path, headers=ALPHA)  # no body: a new secret
    rotated = await r.json()
    assert r.status == 200, rotated
    stored = await row(store, doc["id"])
    assert stored["secret"] == rotated["secret"] != given and stored["previous_secret"] == given
    assert rotated["secret"].startswith("whsec_")
    until = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert stored["previous_secret_until"] == until
    left = until - datetime.now(UTC)
    assert timedelta(hours=23) < left <= timedelta(hours=24)

    chosen = "whsec_" + "WFla" * 10
    r = await api.post(path, json={"secret": chosen}, headers=ALPHA)
    assert r.status == 200 and (await r.json())["secret"] == chosen
    stored = await row(store, doc["id"])
    assert (stored["secret"], stored["previous_secret"]) == (chosen, rotated["secret"])

    for bad in ({"secret": "whsec_short"}, {"secret": 5}, {"other": 1}):
        r = await api.post(path, json=bad, headers=ALPHA)
        assert r.status == 422, bad
    assert await row(store, doc["id"]) == stored
    r = await api.get(f"/api/destinations/{doc['id']}", headers=ALPHA)
    assert chosen not in await r.text() and (await r.json())["has_secret"] is True

    slack = await create(api, {"type": "slack", "url": URL})
    r = await api.post(f"/api/destinations/{slack['id']}/rotate-secret", headers=ALPHA)
    assert r.status == 422 and (await row(store, slack["id"]))["secret"] is None


async def test_delete_cancels_what_is_undelivered(api: TestClient, store: Store) -> None:
    doc = await create(api, HOOK)
    nid = await notification(store, doc["id"], ["pending", "paused", "delivered", "failed"])
    inline = await notification(store, doc["id"], ["pending"])
    await store.pool.execute(
        "UPDATE deliveries SET destination_id = NULL WHERE notification_id = $1", inline
    )
    for n in (nid, inline):
        await store.pool.execute(
            "INSERT INTO outbox (notification_id, position, attempt, due_at, partition_key) "
            "VALUES ($1, 0, 2, now(), 7)",
            n,
        )
    r = await api.delete(f"/api/destinations/{doc['id']}", headers=ALPHA)
    assert r.status == 204
    assert await statuses(store, nid) == ["cancelled", "cancelled", "delivered", "failed"]
    assert await statuses(store, inline) == ["pending"]
    outbox = await store.pool.fetch("SELECT notification_id FROM outbox")
    assert [o["notification_id"] for o in outbox] == [inline]
    status = await store.pool.fetchval("SELECT status FROM notifications WHERE id = $1", nid)
    assert status == "partially_failed"  # the cancelled ones leave the rest to say (0008)


async def test_disable_then_enable_resumes_paused_oldest_first(
    api: TestClient, store: Store
) -> None:
    doc = await create(api, HOOK)
    other = await create(api, HOOK)
    path = f"/api/destinations/{doc['id']}"
    r = await api.patch(path, json={"enabled": False}, headers=ALPHA)
    off = await r.json()
    assert off["enabled"] is False and off["disabled_reason"] == "disabled by the client"
    assert off["disabled_at"] is not None
    await store.pool.execute(
        "UPDATE destinations SET failing_since = now() WHERE id = $1", UUID(doc["id"])
    )
    ids = [await notification(store, doc["id"], ["paused"], attempts=i) for i in range(3)]
    deleted = await notification(store, doc["id"], ["paused"])
    await store.pool.execute("UPDATE notifications SET deleted_at = now() WHERE id = $1", deleted)
    theirs = await notification(store, other["id"], ["paused"])

    r = await api.patch(path, json={"enabled": True}, headers=ALPHA)
    on = await r.json()
    assert r.status == 200 and on["enabled"] is True
    assert on["disabled_reason"] is None and on["disabled_at"] is None
    assert (await row(store, doc["id"]))["failing_since"] is None
    # Never attempted: pending again; attempted before the pause: delivering (a retry).
    assert [await statuses(store, nid) for nid in ids] == [
        ["pending"],
        ["delivering"],
        ["delivering"],
    ]
    assert await statuses(store, deleted) == ["cancelled"]
    assert await statuses(store, theirs) == ["paused"]
    queued = await store.pool.fetch(
        "SELECT notification_id, attempt, partition_key FROM outbox"
        " WHERE notification_id = ANY($1::uuid[]) ORDER BY due_at",
        [*ids, deleted, theirs],
    )
    assert [q["notification_id"] for q in queued] == ids  # oldest first
    assert [q["attempt"] for q in queued] == [1, 2, 3] and {q["partition_key"] for q in queued} == {
        7
    }
    derived = await store.pool.fetch(
        "SELECT status FROM notifications WHERE id = ANY($1::uuid[]) ORDER BY id", ids
    )
    assert [d["status"] for d in derived] == ["pending", "delivering", "delivering"]


async def test_recover_dry_run_then_once(api: TestClient, store: Store) -> None:
    doc = await create(api, HOOK)
    other = await create(api, HOOK)
    now = datetime.now(UTC)
    inside = [await notification(store, doc["id"], ["failed"]) for _ in range(2)]
    outside = await notification(store, doc["id"], ["failed"])
    delivered = await notification(store, doc["id"], ["delivered"])
    deleted = await notification(store, doc["id"], ["failed"])
    theirs = await notification(store, other["id"], ["failed"])
    await store.pool.execute(
        "UPDATE deliveries SET updated_at = $2 WHERE notification_id = ANY($1::uuid[])",
        [*inside, delivered, deleted, theirs],
        now - timedelta(hours=2),
    )
    await store.pool.execute(
        "UPDATE deliveries SET updated_at = $2 WHERE notification_id = $1",
        outside,
        now - timedelta(days=3),
    )
    await store.pool.execute("UPDATE notifications SET deleted_at = now() WHERE id = $1", deleted)
    path = f"/api/destinations/{doc['id']}/recover"
    window = {"since": (now - timedelta(days=1)).isoformat()}

    r = await api.post(f"{path}?dry_run=true", json=window, headers=ALPHA)
    assert r.status == 202 and await r.json() == {"count": 2}
    assert await statuses(store, inside[0]) == ["failed"]
    assert await store.pool.fetchval("SELECT count(*) FROM outbox") == 0

    r = await api.post(path, json=window, headers=ALPHA)
    assert r.status == 202 and await r.json() == {"count": 2}
    for nid in inside:
        assert await statuses(store, nid) == ["pending"]
    for nid in (outside, deleted, theirs):
        assert await statuses(store, nid) == ["failed"]
    queued = await store.pool.fetch("SELECT notification_id, attempt FROM outbox ORDER BY due_at")
    assert [(q["notification_id"], q["attempt"]) for q in queued] == [(n, 2) for n in inside]
    r = await api.post(path, json=window, headers=ALPHA)
    assert r.status == 202 and await r.json() == {"count": 0}
    assert await store.pool.fetchval("SELECT count(*) FROM outbox") == 2


async def test_recover_bad_windows(api: TestClient, store: Store) -> None:
    doc = await create(api, HOOK)
    nid = await notification(store, doc["id"], ["failed"])
    path = f"/api/destinations/{doc['id']}/recover"
    now = datetime.now(UTC)
    for body, pointer in [
        ({}, "/since"),
        ({"since": "yesterday"}, "/since"),
        ({"since": "2026-11-24T18:00:00"}, "/since"),  # no offset
        ({"since": (now - timedelta(days=15)).isoformat()}, "/since"),
        ({"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()}, "/since"),
        ({"since": (now - timedelta(hours=1)).isoformat(), "other": 1}, "/other"),
    ]:
        r = await api.post(path, json=body, headers=ALPHA)
        problem = await r.json()
        assert r.status == 422, (body, problem)
        assert problem["errors"][0]["pointer"] == pointer, (body, problem)
    r = await api.post(f"{path}?dry_run=maybe", json={"since": now.isoformat()}, headers=ALPHA)
    assert r.status == 400
    r = await api.post(f"{path}?force=1", json={"since": now.isoformat()}, headers=ALPHA)
    assert r.status == 400
    assert await statuses(store, nid) == ["failed"]


async def test_stats_from_the_attempt_log(api: TestClient, store: Store) -> None:
    doc = await create(api, HOOK)
    nid = await notification(store, doc["id"], ["delivering"])
    now = datetime.now(UTC)
    log = [
        ("delivered", now - timedelta(hours=1)),
        ("retry", now - timedelta(hours=2)),
        ("permanent", now - timedelta(hours=3)),
        ("permanent", now - timedelta(hours=30)),
        ("delivered", now - timedelta(days=3)),
    ]
    for i, (outcome, started_at) in enumerate(log):
        await store.pool.execute(
            "INSERT INTO delivery_attempts (notification_id, position, attempt, started_at, "
            "duration_ms, outcome, destination_id) VALUES ($1, 0, $2, $3, 5, $4, $5)",
            nid,
            i + 1,
            started_at,
            outcome,
            UUID(doc["id"]),
        )
    r = await api.get(f"/api/destinations/{doc['id']}", headers=ALPHA)
    stats = (await r.json())["stats"]
    assert stats["attempts_24h"] == 3
    assert stats["successes_24h"] == 1 and stats["failures_24h"] == 2
    assert datetime.fromisoformat(stats["last_success_at"]) == log[0][1]
    assert datetime.fromisoformat(stats["last_failure_at"]) == log[1][1]
    r = await api.get("/api/destinations?topic=*&limit=200", headers=ALPHA)
    assert r.status == 200


async def test_paging_and_filters(api: TestClient) -> None:
    topic = tag()
    made = []
    for i in range(5):
        doc = await create(api, {**HOOK, "topics": [topic], "enabled": i % 2 == 0})
        made.append(doc["id"])
    wildcard = (await create(api, {**HOOK, "topics": "*"}))["id"]
    elsewhere = (await create(api, {**HOOK, "topics": [tag()]}))["id"]
    newest_first = [*reversed(made)]

    async def walk(url: str) -> list[str]:
        seen: list[str] = []
        while url:
            r = await api.get(url, headers=ALPHA)
            page = await r.json()
            assert r.status == 200, page
            assert len(page["items"]) <= 2
            seen += [d["id"] for d in page["items"]]
            url = page["next"]
        return seen

    for start in (
        f"/api/destinations?topic={topic}&limit=2",
        f"/api/destinations?topic={topic}&limit=2&cursor=",
    ):
        seen = await walk(start)
        assert [i for i in seen if i in made] == newest_first
        assert wildcard in seen and elsewhere not in seen  # "*" hears every topic
    disabled = await walk(f"/api/destinations?topic={topic}&enabled=false&limit=2")
    assert [i for i in disabled if i in made] == [made[3], made[1]]
    for bad in ("limit=0", "offset=-1", "enabled=maybe", "topic=UPPER", "colour=red", "cursor=!!"):
        r = await api.get(f"/api/destinations?{bad}", headers=ALPHA)
        assert r.status == 400, bad
        assert r.content_type == "application/problem+json"


async def test_admin_sees_every_clients(api: TestClient) -> None:
    topic = tag()
    mine = (await create(api, {**HOOK, "topics": [topic]}))["id"]
    theirs = (await create(api, {**HOOK, "topics": [topic]}, BETA))["id"]
    r = await api.get(f"/api/destinations?topic={topic}&enabled=true&limit=200", headers=ROOT)
    assert {mine, theirs} <= {d["id"] for d in (await r.json())["items"]}
    r = await api.get(f"/api/destinations?topic={topic}&limit=200", headers=ALPHA)
    ids = {d["id"] for d in (await r.json())["items"]}
    assert mine in ids and theirs not in ids


@pytest.fixture
async def loopback_api(store: Store) -> AsyncIterator[TestClient]:
    """The API with delivery.allowed_networks = 127.0.0.0/8, as the loopback tests configure."""
    async with api_client(store) as plain:
        ctx = dataclasses.replace(plain.app[CONTEXT], address_policy=AddressPolicy(["127.0.0.0/8"]))
        async with TestClient(TestServer(build_app(ctx))) as client:
            yield client


async def test_allowed_networks_exempt_loopback(loopback_api: TestClient) -> None:
    await create(loopback_api, {**HOOK, "url": "http://127.0.0.1:9/hook"})
    await create(loopback_api, {**HOOK, "url": "http://localhost:9/hook"})
    r = await loopback_api.post(
        "/api/destinations", json={**HOOK, "url": "http://10.0.0.1/"}, headers=ALPHA
    )
    assert r.status == 422


FILL_ATTEMPTS = """
WITH n AS (
    INSERT INTO notifications (id, client_id, body, partition_key, status)
    SELECT gen_random_uuid(), 'plans', 'b', g % 1024, 'delivered' FROM generate_series(1, 2000) g
    RETURNING id
), d AS (
    INSERT INTO deliveries (notification_id, position, kind, destination, status,
                            next_attempt_at, destination_id, updated_at)
    SELECT n.id, p, 'webhook', '{}', 'failed', now(), ($1::uuid[])[1 + p % 100],
           now() - (p || ' minutes')::interval
      FROM n, generate_series(0, 49) p
    RETURNING notification_id, position, destination_id
)
INSERT INTO delivery_attempts (notification_id, position, attempt, started_at, duration_ms,
                               outcome, destination_id)
SELECT notification_id, position, 1, now() - (position || ' hours')::interval, 5,
       CASE WHEN position % 3 = 0 THEN 'delivered' ELSE 'retry' END, destination_id
  FROM d
"""


def scans(plan: dict) -> list[tuple[str, str | None, str | None]]:
    found = [(plan["Node Type"], plan.get("Relation Name"), plan.get("Index Name"))]
    for child in plan.get("Plans", []):
        found += scans(child)
    return found


async def plan_of(
    store: Store, sql: str, *args: object
) -> list[tuple[str, str | None, str | None]]:
    raw = await store.pool.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return scans(json.loads(raw)[0]["Plan"])


async def test_stats_recover_and_resume_read_their_indexes(store: Store) -> None:
    ids = [uuid.uuid4() for _ in range(100)]
    await store.pool.execute(FILL_ATTEMPTS, ids)
    await store.pool.execute("ANALYZE deliveries; ANALYZE delivery_attempts; ANALYZE notifications")
    now = datetime.now(UTC)
    cases = {
        "stats": (query("destination_stats"), ids[:50]),
        "count": (query("count_recoverable"), ids[7], now - timedelta(hours=1), now),
        "recover": (query("recover_destination"), ids[7], now - timedelta(hours=1), now),
        "resume": (query("resume_destination"), ids[7]),
    }
    # The big tables are read through the destination's indexes (a table of 2,000
    # notifications may well be hashed whole: at scale its primary key is probed instead).
    for name, (sql, *args) in cases.items():
        found = await plan_of(store, sql, *args)
        big = ("deliveries", "delivery_attempts")
        assert not any(n == "Seq Scan" and r in big for n, r, _ in found), (name, found)
    indexes = {i for _, _, i in await plan_of(store, *cases["stats"])}
    assert {"delivery_attempts_destination_ok", "delivery_attempts_destination_failed"} <= indexes
    indexes = {i for _, _, i in await plan_of(store, *cases["count"])}
    assert "deliveries_destination" in indexes
    indexes = {i for _, _, i in await plan_of(store, *cases["resume"])}
    assert "deliveries_paused" in indexes


async def test_a_client_stores_at_most_max_stored_destinations(store: Store) -> None:
    """The bound keeps a topic's fan-out within what one notification can number: past it, a
    create is a 409 problem and writes nothing; other clients are not affected."""
    async with api_client(store) as plain:
        ctx = dataclasses.replace(plain.app[CONTEXT], max_stored_destinations=2)
        async with TestClient(TestServer(build_app(ctx))) as capped:
            await create(capped, HOOK)
            await create(capped, HOOK)
            before = await count(store)
            r = await capped.post("/api/destinations", json=HOOK, headers=ALPHA)
            doc = await r.json()
            assert r.status == 409, doc
            assert doc["title"] == "Too many destinations" and "at most 2" in doc["detail"]
            assert await count(store) == before
            await create(capped, HOOK, BETA)
