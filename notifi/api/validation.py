"""Request validation: the published JSON Schemas check the shape, then a few rules no schema
can state (dates, URLs, secrets, named and stored destinations, data's depth and size, the
header policy). Every failure names the field. What could not be sent is refused here, at
submit time, so a stored notification never holds a header its sender would have to refuse
later.

The walks over `data` are iterative: a deeply nested document must cost a 422, never a
RecursionError or an orjson recursion limit (both were 500s that stalled the loop)."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import fastjsonschema
import orjson
from uuid_utils.compat import uuid7

from notifi import lifecycle
from notifi.api import headers, schemas
from notifi.api.dates import instant
from notifi.api.limits import Limits
from notifi.destinations.email import address_error, recipients
from notifi.destinations.network import check_url
from notifi.destinations.webhook import validate_secret
from notifi.errors import InvalidRequest
from notifi.model import NewNotification
from notifi.settings import SettingsError
from notifi.store.references import NONE, StoredDestinations

MAX_SCHEDULE_AHEAD = timedelta(days=schemas.MAX_SCHEDULE_AHEAD_DAYS)
MAX_EXPIRY_AHEAD = timedelta(days=schemas.MAX_EXPIRY_AHEAD_DAYS)
TOPIC = re.compile(schemas.TOPIC_PATTERN.removeprefix("^").removesuffix("$"))


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


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _nul_at(value: Any) -> str | None:
    """The pointer of the first string (or key), in document order, holding a NUL character:
    Postgres text and jsonb cannot store one, so it is refused here rather than failing a whole
    batch later. Iterative, so any depth is safe."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            for key in item:
                if "\x00" in str(key):
                    return f"{path}/{_escape(str(key))}"
            stack.extend((v, f"{path}/{_escape(str(k))}") for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{path}/{i}") for i, v in reversed(list(enumerate(item))))
    return None


def nested_deeper_than(value: Any, max_depth: int) -> bool:
    """Whether objects and arrays nest more than `max_depth` levels (`value` itself is level 1)
    — found level by level, without recursion and without encoding `value`."""
    level, depth = [value], 1
    while level:
        if depth > max_depth:
            return True
        deeper = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, dict | list):
                    deeper.append(child)
        level, depth = deeper, depth + 1
    return False


def _nul_pointer(body: Any) -> str | None:
    """`_nul_at`, with a C-speed screen first: orjson writes a NUL as the escape \\u0000 (a
    literal backslash-u0000 in the text also matches; the walk then finds nothing)."""
    try:
        if b"\\u0000" not in orjson.dumps(body):
            return None
    except orjson.JSONEncodeError:
        pass  # nested past orjson's limit outside data (the schemas refuse it later): walk
    return _nul_at(body)


def _text_problem(given: Mapping[str, Any], pointer: str) -> InvalidRequest | None:
    """CR, LF and other controls in what becomes a header line of the email or the request.
    Checked before the schema (which states the same rules) for a message and a pointer that
    name the very header or address."""
    if given.get("type") == "email":
        to = given.get("to")
        addresses = [("", to)] if isinstance(to, str) else []
        if isinstance(to, list):
            addresses = [(f"/{j}", a) for j, a in enumerate(to) if isinstance(a, str)]
        for where, address in addresses:
            if not headers.is_single_line(address):
                return InvalidRequest(
                    "to: an email address may not contain CR, LF or other control characters",
                    pointer=f"{pointer}/to{where}",
                )
        subject = given.get("subject")
        if isinstance(subject, str) and not headers.is_single_line(subject):
            return InvalidRequest(
                "subject may not contain CR, LF or other control characters "
                "(it becomes one header line)",
                pointer=f"{pointer}/subject",
            )
    extra = given.get("headers")
    if isinstance(extra, dict) and (found := headers.header_problem(extra)) is not None:
        name, detail = found
        where = f"{pointer}/headers" + (f"/{_escape(name)}" if name is not None else "")
        return InvalidRequest(f"headers: {detail}", pointer=where)
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
        self._check_stored = fastjsonschema.compile(schemas.stored_destination_reference())
        self._check_bulk = fastjsonschema.compile(schemas.bulk_request(limits.max_bulk))
        self._check_reschedule = fastjsonschema.compile(schemas.reschedule_request())
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
        stored: StoredDestinations = NONE,
    ) -> NewNotification:
        """`stored`: the client's stored destinations the request refers to, looked up
        beforehand (notifi.store.references); a reference not among them is refused."""
        _check_topic_or_destinations(body, prefix)
        try:
            self._check_request(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _schema_problem(exc, prefix) from None
        data = body.get("data") or {}
        # Before anything walks data recursively or encodes it (orjson stops at 255 levels).
        if nested_deeper_than(data, self.limits.max_data_depth):
            raise InvalidRequest(
                f"data may nest objects and arrays at most {self.limits.max_data_depth} levels "
                "deep (data itself is level 1)",
                pointer=f"{prefix}/data",
            )
        if (where := _nul_pointer(body)) is not None:
            raise InvalidRequest("text may not contain NUL characters", pointer=prefix + where)
        now = now or datetime.now(UTC)
        try:
            encoded_bytes = len(orjson.dumps(data))
        except orjson.JSONEncodeError as exc:  # only from callers that skip JSON decoding
            detail = f"data cannot be stored as JSON: {exc}"
            raise InvalidRequest(detail, pointer=f"{prefix}/data") from None
        if encoded_bytes > self.limits.max_data_bytes:
            raise InvalidRequest(
                f"data is larger than {self.limits.max_data_bytes} bytes as JSON",
                pointer=f"{prefix}/data",
            )
        scheduled_at = _date(body.get("scheduled_at"), "scheduled_at", now, prefix)
        expires_at = _expiry(body, scheduled_at, now, prefix)
        destinations = _once_each(
            self._resolve(d, f"{prefix}/destinations/{i}", stored)
            for i, d in enumerate(body.get("destinations") or ())
        )
        return NewNotification(
            id=uuid7(),
            client_id=client_id,
            idempotency_key=idempotency_key,
            request_hash=hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest(),
            title=body.get("title") or "",
            body=body["body"],
            data=data,
            scheduled_at=scheduled_at,
            partition_key=random.randrange(self._partitions),
            destinations=destinations,
            created_at=now,
            expires_at=expires_at,
            topic=body.get("topic"),
        )

    def bulk(self, body: Any) -> list[Any]:
        """The items of a bulk request (each still to be checked on its own)."""
        try:
            self._check_bulk(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _schema_problem(exc, "") from None
        return body["notifications"]

    def reschedule(self, body: Any, now: datetime | None = None) -> datetime | None:
        """The new time of a PATCH (None: now). Whether it is before the notification's expiry
        is the store's to say: it holds the notification."""
        try:
            self._check_reschedule(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _schema_problem(exc, "") from None
        return _date(body["scheduled_at"], "scheduled_at", now or datetime.now(UTC), "")

    def _resolve(
        self, given: dict[str, Any], pointer: str, stored: StoredDestinations
    ) -> dict[str, Any]:
        if "destination_id" in given:
            try:
                self._check_stored(given)
            except fastjsonschema.JsonSchemaValueException as exc:
                raise _schema_problem(exc, pointer) from None
            found = stored.by_id.get(UUID(given["destination_id"]))
            if found is None:
                raise InvalidRequest(
                    "no stored destination of yours has this id",
                    pointer=f"{pointer}/destination_id",
                )
            return found.reference()
        if "name" in given:
            try:
                self._check_named(given)
            except fastjsonschema.JsonSchemaValueException as exc:
                raise _schema_problem(exc, pointer) from None
            name = given["name"]
            if (mine := stored.by_name.get(name)) is not None:
                return mine.reference()  # the client's own first, then the configured ones
            spec = self._named.get(name)
            if spec is None:
                raise InvalidRequest(
                    f"no destination named {name!r}: neither a stored destination of yours "
                    "nor one configured on the server",
                    pointer=f"{pointer}/name",
                )
            return {**spec, "name": name}
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
        if (problem := _text_problem(given, pointer)) is not None:
            raise problem
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


def _check_topic_or_destinations(body: Any, prefix: str) -> None:
    """The topic's name, and without a topic at least one destination. The schema says both
    too, but its messages would not say the rule in words or name the field."""
    if not isinstance(body, dict):
        return
    topic = body.get("topic")
    if topic is not None and (not isinstance(topic, str) or not TOPIC.fullmatch(topic)):
        raise InvalidRequest(
            f"topic must be a string of {schemas.TOPIC_RULE}", pointer=f"{prefix}/topic"
        )
    if topic is not None:
        return
    listed = body.get("destinations")
    if listed is None:
        raise InvalidRequest(
            "destinations is required unless a topic is given", pointer=f"{prefix}/destinations"
        )
    if listed == []:
        raise InvalidRequest(
            "destinations needs at least one item unless a topic is given",
            pointer=f"{prefix}/destinations",
        )


def _once_each(destinations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stored destination once per notification (listed twice, by id and by name, say):
    the first mention keeps its place. Inline destinations stay as given."""
    seen: set[str] = set()
    kept = []
    for d in destinations:
        if (ref := d.get("destination_id")) is not None:
            if ref in seen:
                continue
            seen.add(ref)
        kept.append(d)
    return kept


def _date(
    value: str | None,
    name: str,
    now: datetime,
    prefix: str,
    ahead: timedelta = MAX_SCHEDULE_AHEAD,
) -> datetime | None:
    """An RFC 3339 date-time with an offset, at most `ahead` of `now`, in UTC; None for None."""
    if value is None:
        return None
    pointer = f"{prefix}/{name}"
    when = instant(value, name, pointer)
    if when - now > ahead:
        raise InvalidRequest(f"{name} may be at most {ahead.days} days ahead", pointer=pointer)
    return when


def _expiry(
    body: Mapping[str, Any], scheduled_at: datetime | None, now: datetime, prefix: str
) -> datetime | None:
    """When the notification expires (from expires_at, or ttl seconds from now), checked: in
    the future, and after the time it is due."""
    given, ttl = body.get("expires_at"), body.get("ttl")
    if given is not None and ttl is not None:
        raise InvalidRequest("give expires_at or ttl, not both", pointer=f"{prefix}/ttl")
    if ttl is not None:
        expires_at, source = now + timedelta(seconds=int(ttl)), "ttl"
    else:
        expires_at = _date(given, "expires_at", now, prefix, MAX_EXPIRY_AHEAD)
        if expires_at is None:
            return None
        if expires_at <= now:
            raise InvalidRequest("expires_at is not in the future", pointer=f"{prefix}/expires_at")
        source = "expires_at"
    if lifecycle.due_at(scheduled_at, now) >= expires_at:
        raise InvalidRequest(
            f"scheduled_at must be before the expiry ({source} makes it "
            f"{expires_at.isoformat()}): no attempt starts at or after it",
            pointer=f"{prefix}/scheduled_at",
        )
    return expires_at


def check_named_destinations(named: Mapping[str, Mapping[str, Any]]) -> None:
    """The start-up check of the `[destinations.<name>]` settings, as a `SettingsError` that
    names the setting (so the supervisor exits with its bad-settings code and one line, not a
    traceback). The limits do not matter here: they bound requests, not destinations."""
    try:
        Validator(Limits(1, 1, 1, 1), named, 1)
    except InvalidRequest as exc:
        raise SettingsError(f"setting {exc.pointer}: {exc.detail}") from None
