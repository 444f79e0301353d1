"""The REST API in process against the real Postgres: contract, paging, and bad input that must
get a 4xx problem document and write nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer

from notifi.api.app import ApiContext, build_app
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.store import Store
from tests.support.api import accepting

LIMITS = Limits(
    max_destinations=3, max_title_chars=20, max_body_chars=100, max_data_bytes=200, max_bulk=4
)
HOOK = {"type": "webhook", "url": "https://example.com/hook"}


@pytest.fixture
async def client(store: Store) -> AsyncIterator[TestClient]:
    async def ready() -> dict[str, bool]:
        return {"postgres": await store.ping()}

    named = {"ops": {"type": "webhook", "url": "https://example.com/ops", "secret": None}}
    async with accepting(store) as submit_:
        ctx = ApiContext(
            store=store,
            validator=Validator(LIMITS, named, 1024),
            submit=submit_,
            ready=ready,
            default_page_size=2,
            max_page_size=5,
            max_body_bytes=4096,
        )
        async with TestClient(TestServer(build_app(ctx, max_bulk_body_bytes=8192))) as c:
            yield c


async def count(store: Store) -> int:
    return await store.pool.fetchval("SELECT count(*) FROM notifications")


async def test_create_get_list_delete(client: TestClient, store: Store) -> None:
    r = await client.post("/api/notifications", json={"body": "b", "destinations": [HOOK]})
    assert r.status == 202
    doc = await r.json()
    assert r.headers["Location"] == f"/api/notifications/{doc['id']}"
    assert doc["status"] == "pending" and doc["destinations"][0]["url"] == HOOK["url"]
    r = await client.get(f"/api/notifications/{doc['id']}")
    assert r.status == 200 and (await r.json())["id"] == doc["id"]
    r = await client.delete(f"/api/notifications/{doc['id']}")
    assert r.status == 200 and (await r.json())["status"] == "cancelled"


async def test_named_destination_and_secret_never_returned(client: TestClient) -> None:
    secret = "whsec_" + "A" * 32
    r = await client.post(
        "/api/notifications",
        json={"body": "b", "destinations": [{"name": "ops"}, {**HOOK, "secret": secret}]},
    )
    assert r.status == 202
    text = await r.text()
    assert secret not in text
    doc = await r.json()
    assert doc["destinations"][0] == {**doc["destinations"][0], "type": "webhook", "name": "ops"}
    assert doc["destinations"][1]["has_secret"] is True
    r = await client.get(f"/api/notifications/{doc['id']}")
    assert secret not in await r.text()


async def test_paging_newest_first_with_next(client: TestClient) -> None:
    ids = []
    for i in range(5):
        r = await client.post("/api/notifications", json={"body": f"n{i}", "destinations": [HOOK]})
        ids.append((await r.json())["id"])
    r = await client.get("/api/notifications")
    page = await r.json()
    assert [n["id"] for n in page["items"]] == ids[::-1][:2]
    assert page["limit"] == 2 and page["offset"] == 0
    seen = [n["id"] for n in page["items"]]
    while page["next"]:
        page = await (await client.get(page["next"])).json()
        seen += [n["id"] for n in page["items"]]
    assert seen == ids[::-1]
    r = await client.get("/api/notifications?status=pending&limit=5")
    assert len((await r.json())["items"]) == 5


async def test_idempotency_key(client: TestClient, store: Store) -> None:
    body = {"body": "b", "destinations": [HOOK]}
    h = {"Idempotency-Key": "abc"}
    r1 = await client.post("/api/notifications", json=body, headers=h)
    r2 = await client.post("/api/notifications", json=body, headers=h)
    assert (r1.status, r2.status) == (202, 200)
    assert (await r1.json())["id"] == (await r2.json())["id"]
    r3 = await client.post("/api/notifications", json={**body, "body": "c"}, headers=h)
    assert r3.status == 409
    assert r3.content_type == "application/problem+json"
    assert await count(store) == 1


BAD_BODIES = [
    ({"destinations": [HOOK]}, 422, "/body"),
    ({"body": "b"}, 422, "/destinations"),
    ({"body": "b", "destinations": []}, 422, "/destinations"),
    ({"body": 5, "destinations": [HOOK]}, 422, "/body"),
    ({"body": "", "destinations": [HOOK]}, 422, "/body"),
    ({"body": "x" * 101, "destinations": [HOOK]}, 422, "/body"),
    ({"body": "b", "title": "t" * 21, "destinations": [HOOK]}, 422, "/title"),
    ({"body": "b", "destinations": [HOOK], "colour": "red"}, 422, "/colour"),
    ({"body": "b", "destinations": [HOOK] * 4}, 422, "/destinations"),
    ({"body": "b", "destinations": "nope"}, 422, "/destinations"),
    ({"body": "b", "destinations": [{"type": "pigeon"}]}, 422, "/destinations/0/type"),
    ({"body": "b", "destinations": [{"type": "webhook"}]}, 422, "/destinations/0/url"),
    (
        {"body": "b", "destinations": [{"type": "webhook", "url": "ftp://x.com/"}]},
        422,
        "/destinations/0/url",
    ),
    (
        {"body": "b", "destinations": [{"type": "webhook", "url": "not a url"}]},
        422,
        "/destinations/0/url",
    ),
    ({"body": "b", "destinations": [{**HOOK, "secret": "plain"}]}, 422, "/destinations/0/secret"),
    ({"body": "b", "destinations": [{**HOOK, "extra": 1}]}, 422, "/destinations/0/extra"),
    ({"body": "b", "destinations": [{"name": "nobody"}]}, 422, "/destinations/0/name"),
    ({"body": "b", "destinations": [{"name": {}}]}, 422, "/destinations/0/name"),
    (
        {"body": "b", "destinations": [{"type": {}, "url": "https://a.com"}]},
        422,
        "/destinations/0/type",
    ),
    ({"body": "b", "destinations": [{"name": "ops", "url": "x"}]}, 422, "/destinations/0/url"),
    ({"body": "b", "destinations": [HOOK], "scheduled_at": "tomorrow"}, 422, "/scheduled_at"),
    (
        {"body": "b", "destinations": [HOOK], "scheduled_at": "2026-11-24T18:00:00"},
        422,
        "/scheduled_at",
    ),
    ({"body": "b", "destinations": [HOOK], "scheduled_at": "2026-11-24"}, 422, "/scheduled_at"),
    (
        {"body": "b", "destinations": [HOOK], "scheduled_at": "2999-01-01T00:00:00Z"},
        422,
        "/scheduled_at",
    ),
    ({"body": "b", "destinations": [HOOK], "scheduled_at": 12}, 422, "/scheduled_at"),
    ({"body": "b", "destinations": [HOOK], "data": [1]}, 422, "/data"),
    ({"body": "b", "destinations": [HOOK], "data": {"k": "v" * 300}}, 422, "/data"),
    (
        {"body": "b", "destinations": [{"type": "email", "to": "not-an-address"}]},
        422,
        "/destinations/0/to",
    ),
    (
        {"body": "b", "destinations": [{"type": "email", "to": ["a@b.co"] * 21}]},
        422,
        "/destinations/0/to",
    ),
    (
        {"body": "b", "destinations": [{"type": "email", "to": "a@b.co", "subject": ""}]},
        422,
        "/destinations/0/subject",
    ),
    ({"body": "b", "destinations": [{"type": "email"}]}, 422, "/destinations/0/to"),
    (
        {"body": "b", "destinations": [{"type": "slack", "url": "hooks.slack.com"}]},
        422,
        "/destinations/0/url",
    ),
    (
        {
            "body": "b",
            "destinations": [{"type": "discord", "url": "https://d.com/x", "secret": "whsec_x"}],
        },
        422,
        "/destinations/0/secret",
    ),
    ({"body": "a\u0000b", "destinations": [HOOK]}, 422, "/body"),
    ({"body": "b", "data": {"k": ["x", "\u0000"]}, "destinations": [HOOK]}, 422, "/data/k/1"),
    ({"body": "b", "data": {"a\u0000": 1}, "destinations": [HOOK]}, 422, "/data/a\u0000"),
    ([1, 2], 422, ""),
    ("text", 422, ""),
]


@pytest.mark.parametrize(("body", "status", "pointer"), BAD_BODIES)
async def test_bad_bodies_are_rejected_and_write_nothing(
    client: TestClient, store: Store, body: object, status: int, pointer: str
) -> None:
    r = await client.post("/api/notifications", json=body)
    assert r.status == status, await r.text()
    assert r.content_type == "application/problem+json"
    doc = await r.json()
    assert doc["status"] == status and doc["detail"]
    if pointer:
        assert doc["errors"][0]["pointer"] == pointer, doc
    assert await count(store) == 0


@pytest.mark.parametrize(
    ("data", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b"", {"Content-Type": "application/json"}, 400),
        (b'{"body": "b"}', {"Content-Type": "text/plain"}, 415),
        (b'{"body": "' + b"x" * 5000 + b'"}', {"Content-Type": "application/json"}, 413),
        (
            b'{"body": "b", "destinations": []}',
            {"Content-Type": "application/json", "Idempotency-Key": "k" * 300},
            400,
        ),
    ],
)
async def test_malformed_requests(
    client: TestClient, store: Store, data: bytes, headers: dict, status: int
) -> None:
    r = await client.post("/api/notifications", data=data, headers=headers)
    assert r.status == status, await r.text()
    assert r.content_type == "application/problem+json"
    assert await count(store) == 0


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=6",
        "limit=abc",
        "offset=-1",
        "offset=x",
        "deleted=maybe",
        "status=lost",
        "page=2",
    ],
)
async def test_bad_paging_parameters(client: TestClient, query: str) -> None:
    r = await client.get(f"/api/notifications?{query}")
    assert r.status == 400, await r.text()
    doc = await r.json()
    assert doc["errors"][0]["pointer"] == query.split("=")[0]


@pytest.mark.parametrize("nid", ["nope", "123", "0190e8c8-aaaa-7bbb-8ccc-ddddeeeeffff"])
async def test_unknown_or_malformed_ids_are_404(client: TestClient, nid: str) -> None:
    for method in ("GET", "DELETE"):
        r = await client.request(method, f"/api/notifications/{nid}")
        assert r.status == 404
        assert r.content_type == "application/problem+json"


async def test_unknown_route_and_method(client: TestClient) -> None:
    r = await client.get("/api/nothing")
    assert r.status == 404 and r.content_type == "application/problem+json"
    r = await client.put("/api/notifications")
    assert r.status == 405 and r.content_type == "application/problem+json"


async def test_health_and_openapi(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    r = await client.get("/metrics")
    assert "notifi_api_requests_total" in await r.text()
    doc = await (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {"/api/notifications", "/api/notifications/{id}"}


async def test_every_channel_is_accepted(client: TestClient) -> None:
    destinations = [
        {
            "type": "email",
            "to": ["oncall@example.com", "Ops <ops@example.com>"],
            "subject": "Deploy of $service",
        },
        {"type": "slack", "url": "https://hooks.slack.com/services/T/B/X"},
        {"type": "discord", "url": "https://discord.com/api/webhooks/1/x"},
        {"type": "teams", "url": "https://example.webhook.office.com/x"},
    ]
    for pair in (destinations[:2], destinations[2:]):
        r = await client.post("/api/notifications", json={"body": "b", "destinations": pair})
        assert r.status == 202, await r.text()
        assert [d["type"] for d in (await r.json())["destinations"]] == [d["type"] for d in pair]


async def test_bulk_answers_each_item(client: TestClient, store: Store) -> None:
    soon = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    items = [
        {"body": "one", "destinations": [HOOK]},
        {"body": 5, "destinations": [HOOK]},
        {"body": "three", "destinations": [{"type": "pigeon"}]},
        {"body": "four", "destinations": [HOOK], "scheduled_at": soon},
    ]
    r = await client.post("/api/notifications/bulk", json={"notifications": items})
    assert r.status == 200, await r.text()
    doc = await r.json()
    assert [i["status"] for i in doc["items"]] == [202, 422, 422, 202]
    assert (doc["accepted"], doc["rejected"]) == (2, 2)
    assert doc["items"][1]["problem"]["errors"][0]["pointer"] == "/notifications/1/body"
    assert (
        doc["items"][2]["problem"]["errors"][0]["pointer"] == "/notifications/2/destinations/0/type"
    )
    assert await count(store) == 2
    r = await client.get(doc["items"][3]["location"])
    assert (await r.json())["status"] == "scheduled"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"notifications": []}, 422),
        ({"notifications": [{}] * 5}, 422),
        ({"notifications": "x"}, 422),
        ({"notifications": [], "extra": 1}, 422),
        ([1], 422),
    ],
)
async def test_bad_bulk_requests(client: TestClient, store: Store, body, status: int) -> None:
    r = await client.post("/api/notifications/bulk", json=body)
    assert r.status == status and r.content_type == "application/problem+json"
    assert await count(store) == 0


async def test_bulk_body_limit(client: TestClient) -> None:
    r = await client.post(
        "/api/notifications/bulk",
        data=b"[" + b" " * 9000 + b"]",
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 413


async def test_cursor_paging_and_time_filters(client: TestClient) -> None:
    ids = []
    for i in range(5):
        r = await client.post("/api/notifications", json={"body": f"n{i}", "destinations": [HOOK]})
        ids.append((await r.json())["id"])
        await asyncio.sleep(0.003)  # distinct milliseconds, so time filters can split them
    page = await (await client.get("/api/notifications?limit=2&cursor=")).json()
    seen = [n["id"] for n in page["items"]]
    while page["next"]:
        assert "cursor=" in page["next"] and "offset" not in page["next"]
        page = await (await client.get(page["next"])).json()
        seen += [n["id"] for n in page["items"]]
    assert seen == ids[::-1]
    third = await (await client.get(f"/api/notifications/{ids[2]}")).json()
    created = third["created_at"].replace("+00:00", "Z")
    after = await (await client.get(f"/api/notifications?limit=5&created_after={created}")).json()
    assert [n["id"] for n in after["items"]] == ids[:1:-1]
    before = await (await client.get(f"/api/notifications?limit=5&created_before={created}")).json()
    assert [n["id"] for n in before["items"]] == ids[1::-1]


@pytest.mark.parametrize(
    "query",
    [
        "cursor=%%%",
        "cursor=abc",
        "cursor=AAAA&offset=2",
        "created_after=yesterday",
        "created_before=2026-01-01T00:00:00",
        "created_after=0001-01-01T00:00:00%2B14:00",  # before year 1 once in UTC
    ],
)
async def test_bad_cursor_and_time_parameters(client: TestClient, query: str) -> None:
    r = await client.get(f"/api/notifications?{query}")
    assert r.status == 400, await r.text()
    assert r.content_type == "application/problem+json"


@pytest.mark.parametrize("when", ["0045-01-01T02:01:00-07:32", "9999-12-31T23:59:59Z"])
async def test_extreme_time_filters_are_harmless(client: TestClient, when: str) -> None:
    for name in ("created_after", "created_before"):
        r = await client.get("/api/notifications", params={name: when, "cursor": ""})
        assert r.status == 200, await r.text()


async def test_idempotency_under_concurrent_duplicates(client: TestClient, store: Store) -> None:
    body = {"body": "once", "destinations": [HOOK]}

    async def send() -> tuple[int, str]:
        r = await client.post("/api/notifications", json=body, headers={"Idempotency-Key": "k"})
        return r.status, (await r.json())["id"]

    results = await asyncio.gather(*(send() for _ in range(20)))
    assert sorted(s for s, _ in results) == [200] * 19 + [202]
    assert len({nid for _, nid in results}) == 1
    assert await count(store) == 1
    assert await store.pool.fetchval("SELECT count(*) FROM deliveries") == 1


import json  # noqa: E402  (the tests below were added later, with what they use)
import re  # noqa: E402


def _deep_list(levels: int) -> dict:
    """data nested `levels` deep (data itself, then `levels - 1` arrays under "x"), as a
    placeholder that `_encode` expands: client-side JSON encoders stop long before 1000."""
    return {"x": f"@deep:{levels - 1}@"}


def _encode(body: dict) -> bytes:
    text = json.dumps(body)
    for levels in {int(n) for n in re.findall(r'"@deep:(\d+)@"', text)}:
        text = text.replace(f'"@deep:{levels}@"', "[" * levels + "]" * levels)
    return text.encode()


HOSTILE = [
    ({"body": "b", "destinations": [HOOK], "data": _deep_list(1000)}, "/data"),
    ({"body": "b", "destinations": [HOOK], "data": _deep_list(200)}, "/data"),
    ({"body": "b", "destinations": [HOOK], "data": _deep_list(33)}, "/data"),
    *(
        (
            {"body": "b", "destinations": [{**HOOK, "headers": {name: "x"}}]},
            f"/destinations/0/headers/{name}",
        )
        for name in ["Transfer-Encoding", "Host", "Content-Length", "X Test", "webhook-id"]
    ),
    (
        {"body": "b", "destinations": [{**HOOK, "headers": {"X-A": "a\r\nHost: evil"}}]},
        "/destinations/0/headers/X-A",
    ),
    (
        {"body": "b", "destinations": [{"type": "webhook", "url": "http://127.1:9/"}]},
        "/destinations/0/url",
    ),
    (
        {"body": "b", "destinations": [{"type": "webhook", "url": "http://2130706433/"}]},
        "/destinations/0/url",
    ),
    (
        {
            "body": "b",
            "destinations": [{"type": "email", "to": "a@b.co", "subject": "x\r\nBcc: v@b.co"}],
        },
        "/destinations/0/subject",
    ),
    (
        {
            "body": "b",
            "destinations": [{"type": "email", "to": ["a@b.co", "c@d.co\r\nBcc: v@b.co"]}],
        },
        "/destinations/0/to/1",
    ),
]


@pytest.mark.parametrize(("body", "pointer"), HOSTILE)
async def test_hostile_input_is_422_with_a_pointer_and_writes_nothing(
    client: TestClient, store: Store, body: dict, pointer: str
) -> None:
    json_type = {"Content-Type": "application/json"}
    r = await client.post("/api/notifications", data=_encode(body), headers=json_type)
    assert r.status == 422, await r.text()
    assert r.content_type == "application/problem+json"
    doc = await r.json()
    # Data deeper than the decoder's own bound is refused while decoding, pointing deeper in.
    assert doc["errors"][0]["pointer"].startswith(pointer), doc
    assert await count(store) == 0
    bulk = {"notifications": [{"body": "ok", "destinations": [HOOK]}, body]}
    r = await client.post("/api/notifications/bulk", data=_encode(bulk), headers=json_type)
    doc = await r.json()
    if r.status == 422:  # refused as a whole by the decoder: nothing written
        assert doc["errors"][0]["pointer"].startswith("/notifications/1" + pointer), doc
        assert await count(store) == 0
        return
    assert r.status == 200, doc
    assert [i["status"] for i in doc["items"]] == [202, 422]
    assert doc["items"][1]["problem"]["errors"][0]["pointer"] == "/notifications/1" + pointer
    assert await count(store) == 1  # only the ordinary item of the bulk request


async def test_ordinary_headers_ips_titles_and_depth_still_accepted(client: TestClient) -> None:
    hook = {
        **HOOK,
        "url": "http://[2001:db8::1]:8080/h",
        "headers": {"Authorization": "Bearer abc", "X-Custom": "a\tb"},
    }
    mail = {"type": "email", "to": "a@b.co"}
    for body in (
        {"title": "Deploy\nall green", "body": "b", "destinations": [mail, hook]},
        {"body": "b", "destinations": [{**HOOK, "url": "http://93.184.215.14/"}]},
        {"body": "b", "destinations": [HOOK], "data": _deep_list(32)},
    ):
        r = await client.post(
            "/api/notifications", data=_encode(body), headers={"Content-Type": "application/json"}
        )
        assert r.status == 202, await r.text()


async def test_openapi_publishes_the_header_policy_and_data_limits(client: TestClient) -> None:
    schemas = (await (await client.get("/api/openapi.json")).json())["components"]["schemas"]
    headers = schemas["WebhookDestination"]["properties"]["headers"]
    assert headers["propertyNames"]["pattern"].startswith("^[!#")
    assert "Transfer-Encoding" in headers["description"]
    assert "\\x0a" in headers["additionalProperties"]["pattern"]  # no LF in a value
    data = schemas["NotificationRequest"]["properties"]["data"]["description"]
    assert "32 levels" in data and "200 bytes" in data


async def test_openapi_describes_expiry_reschedule_and_the_expired_status(
    client: TestClient,
) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    request = schemas["NotificationRequest"]["properties"]
    assert request["ttl"]["minimum"] == 1 and request["ttl"]["maximum"] == 366 * 86400
    assert request["expires_at"]["format"] == "date-time"
    notification = schemas["Notification"]["properties"]
    assert "expired" in notification["status"]["enum"] and "expires_at" in notification
    delivery = notification["destinations"]["items"]["properties"]["status"]["enum"]
    assert "expired" in delivery
    patch = doc["paths"]["/api/notifications/{id}"]["patch"]
    assert {"200", "404", "409", "422", "403"} <= set(patch["responses"])
    assert schemas["RescheduleRequest"]["required"] == ["scheduled_at"]
    assert schemas["RescheduleRequest"]["additionalProperties"] is False
    r = await client.get("/api/notifications?status=expired")
    assert r.status == 200


async def test_stats_answer_matches_its_openapi_schema(client: TestClient) -> None:
    import fastjsonschema

    r = await client.post("/api/notifications", json={"body": "b", "destinations": [HOOK]})
    assert r.status == 202
    doc = await (await client.get("/api/openapi.json")).json()
    check = fastjsonschema.compile(doc["components"]["schemas"]["Stats"])
    r = await client.get("/api/stats")
    assert r.status == 200
    stats = await r.json()
    check(stats)
    assert stats["accepted"] == 1 and stats["by_status"]["pending"] == 1
    operation = doc["paths"]["/api/stats"]["get"]
    assert {"400", "401", "403", "422", "429"} <= set(operation["responses"])
    listed = doc["paths"]["/api/notifications"]["get"]["parameters"]
    [kind] = [p for p in listed if p["name"] == "destination_type"]
    assert kind["schema"]["enum"] == ["webhook", "email", "slack", "discord", "teams"]
    r = await client.get("/api/notifications?destination_type=webhooks")
    assert r.status == 422 and r.content_type == "application/problem+json"
