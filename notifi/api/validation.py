"""Request validation: the published JSON Schemas check the shape, then a few rules no schema
can state (dates, URLs, secrets, named destinations). Every failure names the field."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import fastjsonschema
import orjson
from uuid_utils.compat import uuid7

from notifi.api import schemas
from notifi.api.limits import Limits
from notifi.destinations.email import address_error, recipients
from notifi.destinations.network import check_url
from notifi.destinations.webhook import validate_secret
from notifi.errors import InvalidRequest
from notifi.model import NewNotification

MAX_SCHEDULE_AHEAD = timedelta(days=366)


def _pointer(path: list[str], *more: str) -> str:
    parts = [*path[1:], *more]  # path[0] is fastjsonschema's "data"
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _schema_problem(exc: fastjsonschema.JsonSchemaValueException, prefix: str) -> InvalidRequest:
    path = list(exc.path)
    field = _pointer(path)
    if exc.rule == "required" and isinstance(exc.value, dict):
        missing = [k for k in exc.rule_definition if k not in exc.value]
        field = _pointer(path, missing[0])
        detail = f"{field.lstrip('/') or 'body'} is required"
    elif exc.rule == "additionalProperties" and isinstance(exc.value, dict):
        known = exc.definition.get("properties", {})
        extra = sorted(k for k in exc.value if k not in known)
        field = _pointer(path, extra[0]) if extra else field
        detail = f"unknown field {field.lstrip('/')!r}"
    else:
        where = field.lstrip("/") or "the request body"
        detail = exc.message.replace(exc.name, where, 1)
    return InvalidRequest(detail, pointer=prefix + (field if field != "/" else ""))


def _nul_at(value: Any, path: str = "") -> str | None:
    """The pointer of the first string (or key) holding a NUL character: Postgres text and
    jsonb cannot store one, so it is refused here rather than failing a whole batch later."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if "\x00" in str(key):
                return here
            if (found := _nul_at(item, here)) is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _nul_at(item, f"{path}/{i}")) is not None:
                return found
    return None


class Validator:
    """Turns a decoded request body into a `NewNotification`, or raises `InvalidRequest`."""

    def __init__(
        self,
        limits: Limits,
        named_destinations: Mapping[str, Mapping[str, Any]],
        partitions: int,
    ) -> None:
        self.limits = limits
        self._named = named_destinations
        self._partitions = partitions
        self._check_request = fastjsonschema.compile(schemas.create_request(limits))
        self._check_named = fastjsonschema.compile(schemas.named_destination())
        self._check_bulk = fastjsonschema.compile(schemas.bulk_request(limits.max_bulk))
        self._check_destination: dict[str, Callable[[Any], Any]] = {
            kind: fastjsonschema.compile(schema)
            for kind, schema in schemas.destination_schemas().items()
        }
        for name, spec in named_destinations.items():
            self.destination(dict(spec), f"destinations.{name}")

    def notification(
        self,
        body: Any,
        client_id: str,
        idempotency_key: str | None,
        now: datetime | None = None,
        prefix: str = "",
    ) -> NewNotification:
        try:
            self._check_request(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _schema_problem(exc, prefix) from None
        if (where := _nul_at(body)) is not None:
            raise InvalidRequest("text may not contain NUL characters", pointer=prefix + where)
        now = now or datetime.now(UTC)
        data = body.get("data") or {}
        if len(orjson.dumps(data)) > self.limits.max_data_bytes:
            raise InvalidRequest(
                f"data is larger than {self.limits.max_data_bytes} bytes as JSON",
                pointer=f"{prefix}/data",
            )
        destinations = [
            self._resolve(d, f"{prefix}/destinations/{i}")
            for i, d in enumerate(body["destinations"])
        ]
        return NewNotification(
            id=uuid7(),
            client_id=client_id,
            idempotency_key=idempotency_key,
            request_hash=hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest(),
            title=body.get("title") or "",
            body=body["body"],
            data=data,
            scheduled_at=self._scheduled_at(body.get("scheduled_at"), now, prefix),
            partition_key=random.randrange(self._partitions),
            destinations=destinations,
            created_at=now,
        )

    def bulk(self, body: Any) -> list[Any]:
        """The items of a bulk request (each still to be checked on its own)."""
        try:
            self._check_bulk(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _schema_problem(exc, "") from None
        return body["notifications"]

    def _scheduled_at(self, value: str | None, now: datetime, prefix: str) -> datetime | None:
        if value is None:
            return None
        pointer = f"{prefix}/scheduled_at"
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequest(
                f"scheduled_at {value!r} is not an RFC 3339 date-time", pointer=pointer
            ) from None
        if "T" not in value.upper() or when.tzinfo is None:
            raise InvalidRequest(
                "scheduled_at must be an RFC 3339 date-time with an offset, "
                "such as 2026-11-24T18:00:00Z",
                pointer=pointer,
            )
        if when - now > MAX_SCHEDULE_AHEAD:
            raise InvalidRequest(
                f"scheduled_at may be at most {MAX_SCHEDULE_AHEAD.days} days ahead",
                pointer=pointer,
            )
        return when.astimezone(UTC)

    def _resolve(self, given: dict[str, Any], pointer: str) -> dict[str, Any]:
        if "name" in given:
            try:
                self._check_named(given)
            except fastjsonschema.JsonSchemaValueException as exc:
                raise _schema_problem(exc, pointer) from None
            spec = self._named.get(given["name"])
            if spec is None:
                raise InvalidRequest(
                    f"no destination named {given['name']!r} is configured",
                    pointer=f"{pointer}/name",
                )
            return {**spec, "name": given["name"]}
        return self.destination(given, pointer)

    def destination(self, given: dict[str, Any], pointer: str) -> dict[str, Any]:
        """Checks one inline destination (also used for the configured named ones)."""
        kind = given.get("type")
        check = self._check_destination.get(kind) if isinstance(kind, str) else None
        if check is None:
            kinds = ", ".join(sorted(self._check_destination))
            raise InvalidRequest(
                f"type must be one of: {kinds}", pointer=f"{pointer}/type".lstrip(".")
            )
        try:
            check(given)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _schema_problem(exc, pointer) from None
        if "url" in given and (error := check_url(given["url"])) is not None:
            raise InvalidRequest(f"url: {error}", pointer=f"{pointer}/url")
        if given.get("secret") is not None and (error := validate_secret(given["secret"])):
            raise InvalidRequest(f"secret: {error}", pointer=f"{pointer}/secret")
        if given["type"] == "email":
            for address in recipients(given):
                if (error := address_error(address)) is not None:
                    raise InvalidRequest(f"to: {error}", pointer=f"{pointer}/to")
        return given
