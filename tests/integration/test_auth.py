"""Auth modes with real credentials: service tokens against hashed secrets, Cloudflare Access
JWTs signed by a key the test makes and served as a JWKS on loopback; tenancy across two
clients on every route; read-only clients; per-client rate limits and metrics."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from uuid import UUID

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from notifi.api.app import CONTEXT, ApiContext, build_app
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.auth import CloudflareAuth, NoAuth, TokenAuth, check_settings
from notifi.ratelimit import RateLimiter
from notifi.settings import Auth, SettingsError
from notifi.store import Store
from tests.support.api import CLIENTS, accepting, creds

HOOK = {"type": "webhook", "url": "https://example.com/hook"}


@pytest.fixture
async def make_client(store: Store) -> AsyncIterator[Callable]:
    async with AsyncExitStack() as opened:

        async def make(auth, limiter: RateLimiter | None = None) -> TestClient:
            async def ready() -> dict[str, bool]:
                return {"ok": True}

            ctx = ApiContext(
                store=store,
                validator=Validator(Limits(5, 50, 500, 500), {}, 1024),
                submit=await opened.enter_async_context(accepting(store)),
                ready=ready,
                default_page_size=50,
                max_page_size=200,
                auth=auth,
                limiter=limiter or RateLimiter(0, 1),
                metric_clients=frozenset(c["id"] for c in CLIENTS),
            )
            return await opened.enter_async_context(TestClient(TestServer(build_app(ctx))))

        yield make


async def test_tokens_mode(make_client) -> None:
    c = await make_client(TokenAuth(CLIENTS))
    body = {"body": "b", "destinations": [HOOK]}
    r = await c.post("/api/notifications", json=body)
    assert r.status == 401 and r.content_type == "application/problem+json"
    r = await c.post(
        "/api/notifications",
        json=body,
        headers={**creds("alpha"), "CF-Access-Client-Secret": "wrong"},
    )
    assert r.status == 401
    r = await c.post("/api/notifications", json=body, headers=creds("nobody"))
    assert r.status == 401
    r = await c.post("/api/notifications", json=body, headers=creds("alpha"))
    assert r.status == 202
    for path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json"):
        assert (await c.get(path)).status == 200  # no credentials needed


async def test_tenancy_on_every_route(make_client) -> None:
    c = await make_client(TokenAuth(CLIENTS))
    r = await c.post(
        "/api/notifications", json={"body": "a", "destinations": [HOOK]}, headers=creds("alpha")
    )
    nid = (await r.json())["id"]
    beta = creds("beta")
    for method, path in [
        ("GET", f"/api/notifications/{nid}"),
        ("GET", f"/api/notifications/{nid}/attempts"),
        ("POST", f"/api/notifications/{nid}/retry"),
        ("DELETE", f"/api/notifications/{nid}"),
        ("PATCH", f"/api/notifications/{nid}"),
    ]:
        body = {"scheduled_at": None} if method == "PATCH" else None
        r = await c.request(method, path, headers=beta, json=body)
        assert r.status == 404, (method, path)
    r = await c.get("/api/notifications?deleted=true", headers=beta)
    assert nid not in [n["id"] for n in (await r.json())["items"]]
    r = await c.get("/api/notifications", headers=creds("alpha"))
    assert nid in [n["id"] for n in (await r.json())["items"]]
    r = await c.get(f"/api/notifications/{nid}", headers=creds("root"))  # admin sees all
    assert r.status == 200
    r = await c.get("/api/notifications", headers=creds("root"))
    assert nid in [n["id"] for n in (await r.json())["items"]]
    r = await c.delete(f"/api/notifications/{nid}", headers=creds("alpha"))
    assert r.status == 200


async def test_read_only_client_is_forbidden_to_write(make_client) -> None:
    c = await make_client(TokenAuth(CLIENTS))
    r = await c.post(
        "/api/notifications", json={"body": "b", "destinations": [HOOK]}, headers=creds("viewer")
    )
    assert r.status == 403 and r.content_type == "application/problem+json"
    assert (await c.get("/api/notifications", headers=creds("viewer"))).status == 200


async def test_rate_limit_per_client(make_client) -> None:
    c = await make_client(TokenAuth(CLIENTS), RateLimiter(rate_per_s=1, burst=2))
    codes = [(await c.get("/api/notifications", headers=creds("alpha"))).status for _ in range(3)]
    assert codes == [200, 200, 429]
    r = await c.get("/api/notifications", headers=creds("alpha"))
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    assert (await c.get("/api/notifications", headers=creds("beta"))).status == 200


async def test_per_client_metrics(make_client) -> None:
    c = await make_client(TokenAuth(CLIENTS))
    await c.post(
        "/api/notifications", json={"body": "b", "destinations": [HOOK]}, headers=creds("beta")
    )
    text = await (await c.get("/metrics")).text()
    assert 'notifi_notifications_accepted_total{client_id="beta"}' in text
    assert 'client_id="beta"' in text.split("notifi_api_requests_total")[-1]


# -- cloudflare ---------------------------------------------------------------------------

TEAM = "https://notifi-test.cloudflareaccess.com"
AUD = "aud-tag-123"


def keypair() -> tuple[rsa.RSAPrivateKey, dict]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return key, jwk


@pytest.fixture
async def jwks() -> AsyncIterator[tuple[str, rsa.RSAPrivateKey, dict]]:
    key, jwk = keypair()
    jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
    served = {"keys": [jwk]}

    async def certs(_: web.Request) -> web.Response:
        return web.json_response(served)

    app = web.Application()
    app.router.add_get("/cdn-cgi/access/certs", certs)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/cdn-cgi/access/certs", key, served
    await runner.cleanup()


def token(key, *, kid="k1", aud=AUD, iss=TEAM, exp_in=300, cn="alpha", alg="RS256", **more) -> str:
    now = int(time.time())
    claims = {
        "aud": [aud],
        "iss": iss,
        "iat": now,
        "exp": now + exp_in,
        "common_name": cn,
        "type": "app",
    }
    if cn is None:
        del claims["common_name"]
    claims.update(more)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


async def test_cloudflare_mode(make_client, jwks) -> None:
    url, key, served = jwks
    session = aiohttp.ClientSession()
    settings = Auth(
        mode="cloudflare",
        clients=[{"id": "root", "admin": True}],
        team_domain=TEAM,
        audience=AUD,
        jwks_url=url,
    )
    c = await make_client(CloudflareAuth(settings, session, refresh_min_s=0))
    other_key, _ = keypair()

    async def status(tok: str | None) -> int:
        headers = {"Cf-Access-Jwt-Assertion": tok} if tok is not None else {}
        return (await c.get("/api/notifications", headers=headers)).status

    try:
        assert await status(token(key)) == 200
        assert await status(None) == 401
        assert await status(token(key, aud="other")) == 401
        assert await status(token(key, iss="https://evil.cloudflareaccess.com")) == 401
        assert await status(token(key, exp_in=-60)) == 401
        assert await status(token(other_key)) == 401  # signed by a key not in the JWKS
        assert await status("garbage.not.jwt") == 401
        assert await status(token(key, kid="unknown")) == 401
        # A key rotation: the new kid is fetched on first sight.
        new_key, new_jwk = keypair()
        served["keys"].append({**new_jwk, "kid": "k2", "alg": "RS256", "use": "sig"})
        assert await status(token(new_key, kid="k2")) == 200
        # Tenancy holds with JWT identities too; the configured admin sees everything.
        r = await c.post(
            "/api/notifications",
            json={"body": "b", "destinations": [HOOK]},
            headers={"Cf-Access-Jwt-Assertion": token(key, cn="alpha")},
        )
        nid = (await r.json())["id"]
        r = await c.get(
            f"/api/notifications/{nid}", headers={"Cf-Access-Jwt-Assertion": token(key, cn="beta")}
        )
        assert r.status == 404
        r = await c.get(
            f"/api/notifications/{nid}", headers={"Cf-Access-Jwt-Assertion": token(key, cn="root")}
        )
        assert r.status == 200
    finally:
        await session.close()


async def test_none_mode_is_anonymous(make_client) -> None:
    c = await make_client(NoAuth())
    assert (await c.get("/api/notifications")).status == 200


async def test_cloudflare_user_tokens_act_as_namespaced_people(make_client, jwks) -> None:
    """A validly signed user token (no common_name) acts as `user:<email>` (else
    `user:<sub>`): a person whose sub is "root" is "user:root", never the configured admin
    service token root; a person is an admin only when listed by that exact `user:` id; and a
    service token cannot name itself `user:…`."""
    url, key, _ = jwks
    session = aiohttp.ClientSession()
    settings = Auth(
        mode="cloudflare",
        clients=[
            {"id": "root", "admin": True},
            {"id": "user:alice@example.com", "admin": True},
            {"id": "user:viewer@example.com", "read_only": True},
        ],
        team_domain=TEAM,
        audience=AUD,
        jwks_url=url,
    )
    c = await make_client(CloudflareAuth(settings, session, refresh_min_s=0))

    def person(**claims: str) -> dict[str, str]:
        return {"Cf-Access-Jwt-Assertion": token(key, cn=None, type="org", **claims)}

    service = {"Cf-Access-Jwt-Assertion": token(key, cn="alpha")}
    try:
        r = await c.post(
            "/api/notifications", json={"body": "b", "destinations": [HOOK]}, headers=service
        )
        assert r.status == 202
        alphas = (await r.json())["id"]
        # "root" as a person: its own (empty) view, not the admin's; its writes are its own.
        for claims in ({"sub": "root"}, {"email": "root"}, {"sub": "root", "common_name": ""}):
            r = await c.get("/api/notifications", headers=person(**claims))
            assert r.status == 200, (claims, await r.text())
            assert (await r.json())["items"] == [], claims
            r = await c.get(f"/api/notifications/{alphas}", headers=person(**claims))
            assert r.status == 404, claims
        r = await c.post(
            "/api/notifications",
            json={"body": "mine", "destinations": [HOOK]},
            headers=person(sub="root", email="root@example.com"),
        )
        assert r.status == 202
        mine = (await r.json())["id"]
        row = await c.app[CONTEXT].store.get(UUID(mine), None)
        assert row["client_id"] == "user:root@example.com"  # the email wins over the sub
        r = await c.get(f"/api/notifications/{mine}", headers=person(sub="root"))
        assert r.status == 404  # user:root is another person than user:root@example.com
        # A person listed by their user: id is what the operator made them.
        r = await c.get("/api/notifications", headers=person(email="alice@example.com"))
        assert {n["id"] for n in (await r.json())["items"]} == {alphas, mine}
        # Emails compare without case: the identity provider's spelling does not split a person.
        r = await c.get("/api/notifications", headers=person(email="Alice@Example.COM"))
        assert {n["id"] for n in (await r.json())["items"]} == {alphas, mine}
        r = await c.get("/api/stats", headers=person(email="alice@example.com"))
        assert r.status == 200 and (await r.json())["accepted"] == 2
        r = await c.post(
            "/api/notifications",
            json={"body": "b", "destinations": [HOOK]},
            headers=person(email="viewer@example.com"),
        )
        assert r.status == 403 and r.content_type == "application/problem+json"
        # A service token may not take a person's id, even a configured one.
        r = await c.get(
            "/api/notifications",
            headers={"Cf-Access-Jwt-Assertion": token(key, cn="user:alice@example.com")},
        )
        assert r.status == 403 and r.content_type == "application/problem+json"
        # A token naming no one at all is 401, as before.
        assert (
            await c.get(
                "/api/notifications", headers={"Cf-Access-Jwt-Assertion": token(key, cn=None)}
            )
        ).status == 401
        # The service token "root" still is the admin.
        r = await c.get(
            "/api/notifications", headers={"Cf-Access-Jwt-Assertion": token(key, cn="root")}
        )
        assert r.status == 200 and len((await r.json())["items"]) == 2
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("mode", "clients", "fragment"),
    [
        ("cloudflare", [{"id": ""}], "printable"),
        ("cloudflare", [{"id": "user:"}], "printable"),
        ("cloudflare", [{"id": "user: alice"}], "printable"),
        ("cloudflare", [{"id": "a\nb"}], "printable"),
        ("cloudflare", [{"id": "x" * 256}], "printable"),
        ("cloudflare", [{"id": 7}], "printable"),
        ("cloudflare", [{"id": "root"}, {"id": "root"}], "twice"),
        ("cloudflare", [{"id": "user:Alice@Example.com"}], "lower case"),
        (
            "tokens",
            [{"id": "user:alice@example.com", "secret_sha256": "0" * 64}],
            "Cloudflare Access",
        ),
    ],
)
def test_configured_client_ids_must_be_sane(mode: str, clients: list, fragment: str) -> None:
    settings = Auth(mode=mode, clients=clients, team_domain=TEAM, audience=AUD, jwks_url="")
    with pytest.raises(SettingsError, match=fragment):
        check_settings(settings)


def test_sane_client_ids_pass() -> None:
    settings = Auth(
        mode="cloudflare",
        clients=[{"id": "root", "admin": True}, {"id": "user:alice@example.com"}],
        team_domain=TEAM,
        audience=AUD,
        jwks_url="",
    )
    check_settings(settings)
