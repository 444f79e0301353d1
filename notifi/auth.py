"""Who is calling: Cloudflare Access service tokens checked here (`tokens`), Access JWTs
verified against the team's keys (`cloudflare`), or nobody on loopback (`none`)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import aiohttp
import jwt
import structlog

from notifi.errors import Problem
from notifi.settings import Auth, SettingsError

log = structlog.get_logger(__name__)

CLIENT_ID_HEADER = "CF-Access-Client-Id"
CLIENT_SECRET_HEADER = "CF-Access-Client-Secret"
JWT_HEADER = "Cf-Access-Jwt-Assertion"
JWKS_REFRESH_MIN_S = 10.0  # an unknown kid refetches the keys at most this often
# A person (a Cloudflare Access user token) acts as client `user:<email>` (or `user:<sub>`);
# a service token's common_name never starts with it, so the two id spaces never meet.
USER_PREFIX = "user:"
MAX_CLIENT_ID_CHARS = 255


class Unauthorized(Problem):
    """Missing or bad credentials."""

    status = 401
    title = "Unauthorized"
    slug = "unauthorized"


class Forbidden(Problem):
    """This client may not do this."""

    status = 403
    title = "Forbidden"
    slug = "forbidden"


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    admin: bool = False  # sees every client's notifications
    read_only: bool = False  # may read, not submit, delete or retry

    @property
    def sees(self) -> str | None:
        """The client filter for reads: None (everyone's) for an admin."""
        return None if self.admin else self.id


class Authenticator(Protocol):
    async def authenticate(self, headers: Mapping[str, str]) -> Client: ...


class NoAuth:
    async def authenticate(self, headers: Mapping[str, str]) -> Client:
        return Client("anonymous")


def is_sane_client_id(cid: object) -> TypeGuard[str]:
    """1 to 255 printable characters, no white space; a `user:` id names someone after it."""
    return (
        isinstance(cid, str)
        and 0 < len(cid) <= MAX_CLIENT_ID_CHARS
        and cid.isprintable()
        and not any(c.isspace() for c in cid)
        and cid != USER_PREFIX
    )


def _clients(entries: Sequence[Mapping[str, Any]], need_secret: bool) -> dict[str, Any]:
    out = {}
    for i, entry in enumerate(entries):
        cid, digest = entry.get("id"), str(entry.get("secret_sha256", "")).lower()
        if not is_sane_client_id(cid):
            raise SettingsError(
                f"setting auth.clients[{i}].id must be 1 to {MAX_CLIENT_ID_CHARS} printable "
                "characters without spaces (a person behind Cloudflare Access: "
                f"{USER_PREFIX}<email>)"
            )
        if cid in out:
            raise SettingsError(f"setting auth.clients[{i}].id {cid!r} is given twice")
        if need_secret and cid.startswith(USER_PREFIX):
            raise SettingsError(
                f"setting auth.clients[{i}].id: {USER_PREFIX} ids are people behind "
                "Cloudflare Access (auth.mode = cloudflare); a service token's id cannot "
                "start with it"
            )
        if cid.startswith(USER_PREFIX) and "@" in cid and cid != cid.lower():
            raise SettingsError(
                f"setting auth.clients[{i}].id: write a person's email in lower case "
                f"({cid.lower()!r}): emails from Access are compared without case"
            )
        if need_secret and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise SettingsError(f"setting auth.clients[{i}].secret_sha256 must be 64 hex digits")
        client = Client(cid, bool(entry.get("admin", False)), bool(entry.get("read_only", False)))
        out[cid] = (bytes.fromhex(digest) if need_secret else b"", client)
    return out


def check_settings(auth: Auth) -> None:
    """Raises SettingsError for what `authenticator()` would refuse, building nothing (no
    session, no key fetch), so start-up can check the settings before anything runs."""
    if auth.mode == "tokens":
        if not _clients(auth.clients, need_secret=True):
            raise SettingsError("auth.mode = tokens needs at least one entry in auth.clients")
    elif auth.mode == "cloudflare":
        if not auth.team_domain or not auth.audience:
            raise SettingsError("auth.mode = cloudflare needs auth.team_domain and auth.audience")
        _clients(auth.clients, need_secret=False)
    elif auth.mode != "none":
        raise SettingsError(
            f"setting auth.mode must be none, tokens or cloudflare, got {auth.mode!r}"
        )


class TokenAuth:
    """The service-token pair checked against configured clients; secrets kept as SHA-256."""

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        self._clients = _clients(entries, need_secret=True)
        if not self._clients:
            raise SettingsError("auth.mode = tokens needs at least one entry in auth.clients")

    async def authenticate(self, headers: Mapping[str, str]) -> Client:
        cid, secret = headers.get(CLIENT_ID_HEADER), headers.get(CLIENT_SECRET_HEADER)
        if not cid or not secret:
            raise Unauthorized(f"Send {CLIENT_ID_HEADER} and {CLIENT_SECRET_HEADER}.")
        digest, client = self._clients.get(cid, (b"\0" * 32, None))
        given = hashlib.sha256(secret.encode()).digest()
        # Compared even for an unknown id, so timing does not tell which ids exist.
        if not hmac.compare_digest(given, digest) or client is None:
            raise Unauthorized("Unknown client id or wrong secret.")
        return client


class CloudflareAuth:
    """Verifies the Access JWT: RS256 against the team's JWKS (cached, refetched on an unknown
    kid), `aud`, `iss` and expiry, and names the client.

    A service token (its JWT has a `common_name`) is the client `common_name`. A person's
    token (an identity-provider login: no `common_name`; an `email` and a `sub`) is the client
    `user:<email>`, or `user:<sub>` without an email, so the console works with the browser's
    own Access session. The prefix keeps the two id spaces apart: a person whose `sub` or
    email is `root` acts as `user:root`, never as a configured service-token client `root`;
    and a service token whose common_name starts with `user:` is refused (403), so a machine
    cannot take a person's id. A person gets more than their own notifications only when an
    operator lists exactly their id in auth.clients (`{id = "user:alice@example.com", admin =
    true}`, or `read_only = true`).
    """

    def __init__(
        self,
        settings: Auth,
        session: aiohttp.ClientSession,
        refresh_min_s: float = JWKS_REFRESH_MIN_S,
    ) -> None:
        if not settings.team_domain or not settings.audience:
            raise SettingsError("auth.mode = cloudflare needs auth.team_domain and auth.audience")
        self._issuer = settings.team_domain.rstrip("/")
        if not self._issuer.startswith("https://"):
            self._issuer = f"https://{self._issuer}"
        self._audience = settings.audience
        self._jwks_url = settings.jwks_url or f"{self._issuer}/cdn-cgi/access/certs"
        self._known = {cid: c for cid, (_, c) in _clients(settings.clients, False).items()}
        self._session = session
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._refresh_min_s = refresh_min_s

    async def _refresh(self) -> None:
        if time.monotonic() - self._fetched_at < self._refresh_min_s and self._keys:
            return
        self._fetched_at = time.monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with self._session.get(self._jwks_url, timeout=timeout) as response:
                response.raise_for_status()
                jwks = jwt.PyJWKSet.from_dict(await response.json(content_type=None))
        except (aiohttp.ClientError, TimeoutError, jwt.PyJWKSetError, ValueError) as exc:
            log.warning("jwks_fetch_failed", url=self._jwks_url, error=str(exc))
            return
        self._keys = {k.key_id: k for k in jwks.keys if k.key_id}

    async def authenticate(self, headers: Mapping[str, str]) -> Client:
        token = headers.get(JWT_HEADER)
        if not token:
            raise Unauthorized(f"Send the {JWT_HEADER} header (set by Cloudflare Access).")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Unauthorized("The Access token is not a JWT.") from None
        if kid not in self._keys:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("The Access token is signed by an unknown key.")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The Access token is not valid: {exc}.") from None
        cid = client_id_of(claims)
        return self._known.get(cid, Client(cid))


def client_id_of(claims: Mapping[str, Any]) -> str:
    """The client a verified Access token acts as: a service token's common_name, or a
    person's `user:<email>` (else `user:<sub>`); see CloudflareAuth."""
    common_name = claims.get("common_name")
    if isinstance(common_name, str) and common_name:
        if common_name.startswith(USER_PREFIX):
            raise Forbidden(f"A service token's common_name may not start with {USER_PREFIX}.")
        if not is_sane_client_id(common_name):
            raise Unauthorized("The Access token's common_name is not a usable client id.")
        return common_name
    for claim in ("email", "sub"):
        value = claims.get(claim)
        if isinstance(value, str) and value:
            # Emails compare without case (identity providers differ in what they send), so
            # one person stays one client; `sub` is an opaque id, kept as it is.
            cid = USER_PREFIX + (value.lower() if claim == "email" else value)
            if not is_sane_client_id(cid):
                raise Unauthorized(f"The Access token's {claim} is not a usable client id.")
            return cid
    raise Unauthorized("The Access token names no client.")


def authenticator(settings: Auth, session: aiohttp.ClientSession) -> Authenticator:
    check_settings(settings)
    if settings.mode == "tokens":
        return TokenAuth(settings.clients)
    if settings.mode == "cloudflare":
        return CloudflareAuth(settings, session)
    return NoAuth()
