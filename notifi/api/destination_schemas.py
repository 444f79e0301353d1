"""The JSON Schemas of the stored destinations resource (issue 12): its create and PATCH bodies,
the recover and rotate-secret bodies, and the resource as published. The type's own fields
(url, headers, to, subject, secret) are the inline destinations' schemas from
notifi.api.schemas, so a stored destination accepts exactly what an inline one does."""

from __future__ import annotations

from typing import Any

from notifi.api.schemas import destination_schemas

TOPIC_PATTERN = "^[a-z0-9._-]{1,64}$"
ALL_TOPICS = "*"
MAX_TOPICS = 50
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 500
MAX_RATE_LIMIT = 10_000
MIN_RATE_LIMIT = 0.001  # one per ~17 minutes; far smaller ones would not even fit the real column
# The fields every type has; the rest of a body is the type's own (checked by its schema).
COMMON_FIELDS = frozenset({"name", "description", "topics", "rate_limit", "enabled"})


def _topics() -> dict[str, Any]:
    topic = {"type": "string", "pattern": TOPIC_PATTERN}
    return {
        "description": f'Topic names (1-64 characters of a-z0-9._-), at most {MAX_TOPICS}; "*" '
        "(alone, or as the only item) subscribes to every topic. Duplicates are dropped.",
        "oneOf": [
            {"const": ALL_TOPICS},
            {
                "type": "array",
                "maxItems": MAX_TOPICS,
                "items": {"oneOf": [topic, {"const": ALL_TOPICS}]},
            },
        ],
    }


def common_fields() -> dict[str, dict[str, Any]]:
    """The properties every stored destination has besides its type's fields."""
    return {
        "name": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": MAX_NAME_CHARS,
            "pattern": "^[^\\x00-\\x1f\\x7f]+$",
            "description": "Unique among the client's destinations (409 if taken); a "
            'notification may name it as {"name": …}. No control characters.',
        },
        "description": {
            "type": ["string", "null"],
            "maxLength": MAX_DESCRIPTION_CHARS,
            "pattern": "^[^\\x00]*$",
        },
        "topics": _topics(),
        "rate_limit": {
            "type": ["number", "null"],
            "minimum": MIN_RATE_LIMIT,
            "maximum": MAX_RATE_LIMIT,
            "description": "Deliveries per second to this destination across every delivery "
            f"process, {MIN_RATE_LIMIT} to {MAX_RATE_LIMIT}; null: no limit.",
        },
        "enabled": {
            "type": "boolean",
            "description": "false pauses it (its deliveries wait as paused); true resumes it and "
            "sends what waited, oldest first.",
        },
    }


def common_request() -> dict[str, Any]:
    """The common part of a create or PATCH body (the type's fields are left to its schema)."""
    return {"type": "object", "properties": common_fields()}


def create_request() -> dict[str, Any]:
    """POST /api/destinations, as published: one shape per type."""
    return {
        "oneOf": [
            {
                **schema,
                "title": f"Stored {schema['title'].lower()}",
                "properties": {**schema["properties"], **common_fields()},
            }
            for schema in destination_schemas().values()
        ]
    }


def patch_request() -> dict[str, Any]:
    """PATCH /api/destinations/{id}: any field but type and secret; given fields replace, a type
    field given as null is removed (JSON merge patch)."""
    fields: dict[str, Any] = {}
    for schema in destination_schemas().values():
        for name, field in schema["properties"].items():
            if name not in ("type", "secret"):
                fields.setdefault(name, {**field} if isinstance(field, dict) else field)
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {**fields, **common_fields()},
        "description": "The merged destination is checked as a whole, as at create. type cannot "
        "change (create another destination) and secret is rotated by POST "
        "/api/destinations/{id}/rotate-secret: both are 422 here.",
    }


def rotate_request() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "secret": {
                "type": "string",
                "maxLength": 200,
                "description": "whsec_ + base64 of 24 to 64 bytes; absent: one is generated.",
            }
        },
    }


def recover_request() -> dict[str, Any]:
    stamp = {"type": "string", "format": "date-time", "maxLength": 64}
    return {
        "type": "object",
        "required": ["since"],
        "additionalProperties": False,
        "properties": {
            "since": {**stamp, "description": "RFC 3339 with an offset, at most 14 days back."},
            "until": {**stamp, "description": "RFC 3339 with an offset, after since; default now."},
        },
    }


def destination() -> dict[str, Any]:
    """The resource as published: the type's fields without secrets or header values."""
    stamp = {"type": "string", "format": "date-time"}
    maybe_stamp = {"type": ["string", "null"], "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "required": [
            "id",
            "name",
            "description",
            "type",
            "topics",
            "rate_limit",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "created_at",
            "updated_at",
            "stats",
        ],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": ["string", "null"]},
            "description": {"type": "string"},
            "type": {"enum": list(destination_schemas())},
            "url": {"type": "string"},
            "to": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "subject": {"type": "string"},
            "header_names": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The names of its extra headers; values are never returned.",
            },
            "has_secret": {"type": "boolean", "description": "Webhooks: signed with a secret."},
            "secret": {
                "type": "string",
                "description": "Only in the answer to the create call (and to a rotation).",
            },
            "topics": {"type": "array", "items": {"type": "string"}},
            "rate_limit": {"type": ["number", "null"]},
            "enabled": {"type": "boolean"},
            "disabled_reason": {"type": ["string", "null"]},
            "disabled_at": maybe_stamp,
            "created_at": stamp,
            "updated_at": stamp,
            "stats": {
                "type": "object",
                "required": [
                    "attempts_24h",
                    "successes_24h",
                    "failures_24h",
                    "last_success_at",
                    "last_failure_at",
                ],
                "properties": {
                    "attempts_24h": count,
                    "successes_24h": count,
                    "failures_24h": {**count, "description": "Attempts that did not deliver."},
                    "last_success_at": maybe_stamp,
                    "last_failure_at": maybe_stamp,
                },
            },
        },
    }


def destination_page() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "limit", "offset", "next", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": destination()},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "next": {"type": ["string", "null"]},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def rotated() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["secret", "previous_secret_expires_at"],
        "properties": {
            "secret": {"type": "string"},
            "previous_secret_expires_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "Until then webhooks carry a signature with the previous secret "
                "too (delivery.rotation_overlap).",
            },
        },
    }


def recovered() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["count"],
        "properties": {"count": {"type": "integer", "minimum": 0}},
    }
