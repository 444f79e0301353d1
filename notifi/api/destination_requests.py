"""The stored destinations' requests and resource, as pure functions: a create or PATCH body to
the fields to store (the type's fields checked by the inline destinations' own rules,
`Validator.destination`, and the address policy the sender applies), the recover window, and a
row to what a client sees. Everything that fails here is a problem with the field that was
wrong, raised before anything is written."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import fastjsonschema

from notifi.api.dates import instant
from notifi.api.destination_schemas import (
    ALL_TOPICS,
    COMMON_FIELDS,
    MAX_TOPICS,
    TOPIC_PATTERN,
    common_request,
    recover_request,
    rotate_request,
)
from notifi.api.validation import Validator, _schema_problem
from notifi.destinations.network import AddressPolicy, BlockedAddress, literal_ip
from notifi.destinations.webhook import SECRET_PREFIX, validate_secret
from notifi.errors import InvalidRequest
from notifi.store.destinations import Fields

SECRET_BYTES = 24
MAX_RECOVER_WINDOW = timedelta(days=14)
# A client computing "14 days ago" is a little further back by the time the request arrives.
RECOVER_GRACE = timedelta(minutes=5)
_LOOPBACK_NAMES = ("localhost",)
_TOPIC = re.compile(TOPIC_PATTERN)

_check_common = fastjsonschema.compile(common_request())
_check_rotate = fastjsonschema.compile(rotate_request())
_check_recover = fastjsonschema.compile(recover_request())


def _checked(check: Callable[[Any], Any], body: Any) -> None:
    try:
        check(body)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _schema_problem(exc, "") from None


def new_secret() -> str:
    """A webhook signing secret: whsec_ + base64 of 24 random bytes (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def address_problem(url: str, policy: AddressPolicy) -> str | None:
    """Why the sender would refuse `url`'s host, when that can be told without DNS: an IP
    literal, or `localhost`, outside `delivery.allowed_networks` and private, loopback or
    link-local. A name that needs DNS is left to send time, where the resolved address meets
    the same policy (a name's address may change between now and then anyway)."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        address = "127.0.0.1"  # what the resolver answers for these (RFC 6761)
    elif (ip := literal_ip(host)) is not None:
        address = str(ip)
    else:
        return None
    try:
        policy.check(host, address)
    except BlockedAddress as exc:
        return str(exc)
    return None


def topics(value: Any) -> list[str]:
    """The topics to store, duplicates dropped in order; "*" (given alone, or as the only item)
    is stored as ["*"]. The same rules as the schema's, checked here for a message that names
    the very item."""
    if value is None:
        return []
    if value == ALL_TOPICS:
        return [ALL_TOPICS]
    if not isinstance(value, list):
        raise InvalidRequest('topics must be a list of topic names, or "*"', pointer="/topics")
    if len(value) > MAX_TOPICS:
        raise InvalidRequest(f"topics may list at most {MAX_TOPICS}", pointer="/topics")
    for i, item in enumerate(value):
        if item != ALL_TOPICS and not (isinstance(item, str) and _TOPIC.fullmatch(item)):
            raise InvalidRequest(
                'a topic is 1-64 characters of a-z0-9._- (or "*" for every topic)',
                pointer=f"/topics/{i}",
            )
    unique = list(dict.fromkeys(value))
    if ALL_TOPICS in unique and len(unique) > 1:
        raise InvalidRequest(
            '"*" subscribes to every topic: give it alone, not with topic names',
            pointer=f"/topics/{value.index(ALL_TOPICS)}",
        )
    return unique


def _common(body: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The common fields after `body` (given ones replace those of `current`)."""
    _checked(_check_common, {k: v for k, v in body.items() if k in COMMON_FIELDS - {"topics"}})
    out = dict(current)
    if "name" in body:
        out["name"] = body["name"]
    if "description" in body:
        out["description"] = body["description"] or ""
    if "topics" in body:
        out["topics"] = topics(body["topics"])
    if "rate_limit" in body:
        out["rate_limit"] = body["rate_limit"]
    if "enabled" in body:
        out["enabled"] = body["enabled"]
    return out


def _config(given: dict[str, Any], validator: Validator, policy: AddressPolicy) -> dict[str, Any]:
    """The type's fields (type included) checked as an inline destination's, then the host
    against the address policy."""
    validator.destination(given, "")
    if "url" in given and (problem := address_problem(given["url"], policy)) is not None:
        raise InvalidRequest(f"url: {problem}", pointer="/url")
    return given


@dataclass(frozen=True, slots=True)
class Created:
    kind: str
    secret: str | None  # the webhook's, given or generated
    fields: Fields


def create(body: Any, validator: Validator, policy: AddressPolicy) -> Created:
    """A POST body to what to store (a webhook without a secret gets a new one)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", pointer="")
    common = _common(
        body,
        {"name": None, "description": "", "topics": [], "rate_limit": None, "enabled": True},
    )
    given = {k: v for k, v in body.items() if k not in COMMON_FIELDS}
    config = _config(given, validator, policy)
    kind = config["type"]
    secret = config.pop("secret", None)
    if kind == "webhook" and secret is None:
        secret = new_secret()
    return Created(kind, secret, Fields(**common, config=_without_type(config)))


def patch(body: Any, row: Mapping[str, Any], validator: Validator, policy: AddressPolicy) -> Fields:
    """A PATCH body merged with the stored row, the result checked as a whole as at create.
    Given fields replace; a type field given as null is removed (JSON merge patch)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", pointer="")
    if "type" in body:
        raise InvalidRequest(
            "type cannot change: create a destination of the other type", pointer="/type"
        )
    if "secret" in body:
        raise InvalidRequest(
            "secret cannot be set here: POST /api/destinations/{id}/rotate-secret",
            pointer="/secret",
        )
    common = _common(body, {f: row[f] for f in COMMON_FIELDS})
    merged = {"type": row["kind"], **row["config"]}
    for key, value in body.items():
        if key in COMMON_FIELDS:
            continue
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    config = _config(merged, validator, policy)
    return Fields(**common, config=_without_type(config))


def _without_type(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "type"}


def rotation_secret(body: Any) -> str:
    """The secret a rotation sets: the body's (checked), or a new one. No body is {}."""
    _checked(_check_rotate, body)
    given = body.get("secret")
    if given is None:
        return new_secret()
    if (error := validate_secret(given)) is not None:
        raise InvalidRequest(f"secret: {error}", pointer="/secret")
    return given


def recover_window(body: Any, now: datetime) -> tuple[datetime, datetime]:
    """[since, until) of a recover: since required and at most 14 days back, until after it
    (default now)."""
    _checked(_check_recover, body)
    since = instant(body["since"], "since", "/since")
    until = instant(body["until"], "until", "/until") if "until" in body else now
    if since < now - MAX_RECOVER_WINDOW - RECOVER_GRACE:
        raise InvalidRequest(
            f"since must be at most {MAX_RECOVER_WINDOW.days} days back", pointer="/since"
        )
    if since >= until:
        raise InvalidRequest("since must be before until", pointer="/since")
    return since, until


def resource(row: Mapping[str, Any], secret: str | None = None) -> dict[str, Any]:
    """A stored destination (with its "stats") as the API shows it: the type's fields without
    the secret and without header values. `secret` is given only by create."""
    config = row["config"]
    shown: dict[str, Any] = {
        "id": str(row["id"]),
        "name": row["name"],
        "description": row["description"],
        "type": row["kind"],
    }
    for key in ("url", "to", "subject"):
        if key in config:
            shown[key] = config[key]
    if "headers" in config:
        shown["header_names"] = sorted(config["headers"])
    if row["kind"] == "webhook":
        shown["has_secret"] = row["secret"] is not None
    if secret is not None:
        shown["secret"] = secret
    stats = row["stats"]
    rate_limit = row["rate_limit"]
    shown.update(
        {
            "topics": list(row["topics"]),
            # real (float4) in the table: 0.1 reads back as 0.10000000149…
            "rate_limit": None if rate_limit is None else float(f"{rate_limit:.7g}"),
            "enabled": row["enabled"],
            "disabled_reason": row["disabled_reason"],
            "disabled_at": row["disabled_at"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "stats": {
                "attempts_24h": stats["attempts_24h"],
                "successes_24h": stats["successes_24h"],
                "failures_24h": stats["attempts_24h"] - stats["successes_24h"],
                "last_success_at": stats["last_success_at"],
                "last_failure_at": stats["last_failure_at"],
            },
        }
    )
    return shown
