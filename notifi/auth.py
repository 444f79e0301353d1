"""Who is calling: Cloudflare Access service tokens checked here (`tokens`), Access JWTs
verified against the team's keys (`cloudflare`), or nobody on loopback (`none`)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


def _clients(entries: Sequence[Mapping[str, Any]], need_secret: bool) -> dict[str, Any]:
    out = {}
    for i, entry in enumerate(entries):
        cid, digest = entry.get("id"), str(entry.get("secret_sha256", "")).lower()
        if not isinstance(cid, str) or not cid:
            raise SettingsError(f"setting auth.clients[{i}].id must be a non-empty string")
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
    kid), `aud`, `iss` and expiry; the client id is the service token's `common_name`.

    Only service tokens identify a client. A user's token (an identity-provider login: no
    `common_name`, an `email` and a `sub`) is refused with 403, never mapped to a client id:
    otherwise a user whose `sub` or `email` equals a configured client id (`root`, say) would
    act as that client. Refusing rather than namespacing (`user:<email>`) keeps one kind of
    caller, machines, and leaves no id space to keep apart.
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
        cid = claims.get("common_name")
        if not isinstance(cid, str) or not cid:
            if claims.get("email") or claims.get("sub"):
                raise Forbidden(
                    "This Access token identifies a user; this API accepts only service tokens."
                )
            raise Unauthorized("The Access token names no client.")
        return self._known.get(cid, Client(cid))


def authenticator(settings: Auth, session: aiohttp.ClientSession) -> Authenticator:
    check_settings(settings)
    if settings.mode == "tokens":
        return TokenAuth(settings.clients)
    if settings.mode == "cloudflare":
        return CloudflareAuth(settings, session)
    return NoAuth()
