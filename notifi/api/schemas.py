"""The API's JSON Schemas: published in the OpenAPI description and used to validate requests,
so what is documented is what is checked. Kept to the JSON Schema subset that draft-07 and
OpenAPI 3.1 (2020-12) read alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from notifi.api import headers

if TYPE_CHECKING:
    from notifi.api.limits import Limits

MAX_SCHEDULE_AHEAD_DAYS = 366  # scheduled_at at most this far ahead (at submit and at PATCH)
MAX_TTL_S = 366 * 86_400  # a ttl of at most 366 days
MAX_EXPIRY_AHEAD_DAYS = 2 * 366  # expires_at at most this far ahead: the latest schedule + ttl
TOPIC_PATTERN = "^[a-z0-9._-]{1,64}$"
TOPIC_RULE = "1 to 64 characters of a-z, 0-9, '.', '_' and '-'"


def scheduled_at() -> dict[str, Any]:
    return {
        "type": ["string", "null"],
        "format": "date-time",
        "maxLength": 64,
        "description": "RFC 3339 with an offset; absent, null or past means now; at most "
        f"{MAX_SCHEDULE_AHEAD_DAYS} days ahead, and before expires_at when there is one.",
    }


def url() -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": 2048,
        "format": "uri",
        "description": "http or https, without credentials, spaces or control characters. "
        "An IP literal must be canonical (192.0.2.1, [2001:db8::1]): forms such as 127.1, "
        "2130706433, 0177.0.0.1 or 0x7f.0.0.1 are refused. Private, loopback and link-local "
        "addresses are refused at send time unless delivery.allowed_networks allows them.",
    }


def webhook_destination() -> dict[str, Any]:
    return {
        "type": "object",
        "title": "Webhook destination",
        "description": "JSON POST with Standard Webhooks headers, signed when a secret is given.",
        "required": ["type", "url"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "webhook"},
            "url": url(),
            "secret": {
                "type": ["string", "null"],
                "maxLength": 200,
                "description": "whsec_ + base64 of 24 to 64 random bytes. Never returned.",
            },
            "headers": headers.schema(),
        },
    }


def topic() -> dict[str, Any]:
    """A topic name, as a notification carries it (and a stored destination subscribes)."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "pattern": TOPIC_PATTERN,
        "description": f"A topic name: {TOPIC_RULE}.",
    }


def named_destination() -> dict[str, Any]:
    return {
        "type": "object",
        "title": "Named destination",
        "description": "This client's stored destination of this name (POST /api/destinations) "
        "if it has one, else the destination configured on the server as "
        "[destinations.<name>].",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 100}},
    }


def stored_destination_reference() -> dict[str, Any]:
    return {
        "type": "object",
        "title": "Stored destination",
        "description": "One of this client's stored destinations (POST /api/destinations), by "
        "id; an admin client refers to its own only. A disabled one gets a paused delivery "
        "that goes out when it is enabled again.",
        "required": ["destination_id"],
        "additionalProperties": False,
        "properties": {"destination_id": {"type": "string", "format": "uuid", "maxLength": 36}},
    }


def email_destination() -> dict[str, Any]:
    address = {
        "type": "string",
        "minLength": 3,
        "maxLength": 320,
        "pattern": headers.LINE_PATTERN,
        "description": "An email address; no CR, LF or other control characters.",
    }
    return {
        "type": "object",
        "title": "Email destination",
        "description": "Sent through the configured SMTP server; subject and body may use "
        "$name placeholders filled from data.",
        "required": ["type", "to"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "email"},
            "to": {
                "oneOf": [
                    address,
                    {"type": "array", "items": address, "minItems": 1, "maxItems": 20},
                ]
            },
            "subject": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "pattern": headers.LINE_PATTERN,
                "description": "The Subject (default: the title, on one line); no CR, LF or "
                "other control characters.",
            },
        },
    }


def chat_destination(kind: str, title: str) -> dict[str, Any]:
    return {
        "type": "object",
        "title": f"{title} destination",
        "description": f"A {title} incoming webhook URL; the message is shaped for {title}.",
        "required": ["type", "url"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": kind},
            "url": url(),
        },
    }


def destination_schemas() -> dict[str, dict[str, Any]]:
    """One schema per inline destination type."""
    return {
        "webhook": webhook_destination(),
        "email": email_destination(),
        "slack": chat_destination("slack", "Slack"),
        "discord": chat_destination("discord", "Discord"),
        "teams": chat_destination("teams", "Microsoft Teams"),
    }


def create_request(limits: Limits) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["body"],
        "additionalProperties": False,
        # Without a topic, at least one destination (notifi.api.validation words the error).
        # Destinations first: most requests list them, and a branch that fails costs the
        # compiled validator an exception.
        "anyOf": [
            {"required": ["destinations"], "properties": {"destinations": {"minItems": 1}}},
            {"required": ["topic"], "properties": {"topic": {"type": "string"}}},
        ],
        "properties": {
            "title": {"type": ["string", "null"], "maxLength": limits.max_title_chars},
            "body": {"type": "string", "minLength": 1, "maxLength": limits.max_body_chars},
            "data": {
                "type": ["object", "null"],
                "description": "Free-form JSON for receivers: at most "
                f"{limits.max_data_bytes} bytes as JSON, and objects and arrays nested at most "
                f"{limits.max_data_depth} levels deep (data itself is level 1).",
            },
            "scheduled_at": scheduled_at(),
            "expires_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "maxLength": 64,
                "description": "RFC 3339 with an offset, in the future, at most "
                f"{MAX_EXPIRY_AHEAD_DAYS} days ahead: no attempt starts at or after it, and "
                "deliveries still open then end expired (retries stop). Not with ttl.",
            },
            "ttl": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": MAX_TTL_S,
                "description": "Seconds from acceptance after which the notification expires "
                "(as expires_at). Not with expires_at.",
            },
            "topic": {
                **topic(),
                "type": ["string", "null"],
                "description": f"A topic ({TOPIC_RULE}): at acceptance it adds a delivery to "
                "every stored destination of this client subscribed to it (or to "
                '"*"), each once, after the listed destinations (paused for a disabled one, '
                "until it is enabled). With a topic, destinations "
                "may be absent or empty; when nothing matches, the notification is accepted "
                "with status unmatched and no deliveries.",
            },
            "destinations": {
                "type": "array",
                "minItems": 0,
                "maxItems": limits.max_destinations,
                "description": "Inline destinations, named ones, and stored ones by id; at "
                "least one unless a topic is given. A stored destination listed twice (or "
                "also reached by the topic) gets one delivery.",
                # Each item is checked again by its own type's schema (for precise errors).
                "items": {"type": "object", "minProperties": 1},
            },
        },
    }


def bulk_request(max_bulk: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["notifications"],
        "additionalProperties": False,
        "properties": {
            "notifications": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_bulk,
                # Each item is checked as a single request, and answered on its own.
                "items": {"type": "object"},
            }
        },
    }


DELIVERY_STATUSES = [
    "pending",
    "scheduled",
    "delivering",
    "delivered",
    "failed",
    "cancelled",
    "expired",
    "paused",
]


def reschedule_request() -> dict[str, Any]:
    """PATCH /api/notifications/{id}: the one field that may change."""
    return {
        "type": "object",
        "required": ["scheduled_at"],
        "additionalProperties": False,
        "properties": {"scheduled_at": scheduled_at()},
    }


def published_destination() -> dict[str, Any]:
    """What the API shows of a destination: secrets and header values never leave."""
    return {
        "type": "object",
        "required": ["position", "type", "status", "attempts"],
        "properties": {
            "position": {"type": "integer"},
            "type": {"type": "string"},
            "name": {"type": "string"},
            "destination_id": {
                "type": "string",
                "format": "uuid",
                "description": "The stored destination this delivery goes to (its fields are "
                "read when it is sent).",
            },
            "url": {"type": "string"},
            "has_secret": {"type": "boolean"},
            "status": {"enum": DELIVERY_STATUSES},
            "attempts": {"type": "integer"},
            "last_error": {"type": ["string", "null"]},
            "last_status_code": {"type": ["integer", "null"]},
            "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            "delivered_at": {"type": ["string", "null"], "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    }


NOTIFICATION_STATUSES = [
    "scheduled",
    "pending",
    "delivering",
    "delivered",
    "partially_failed",
    "failed",
    "cancelled",
    "expired",
    "paused",
    "unmatched",
]


def notification() -> dict[str, Any]:
    stamp = {"type": ["string", "null"], "format": "date-time"}
    return {
        "type": "object",
        "required": ["id", "status", "body", "destinations", "created_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"enum": NOTIFICATION_STATUSES},
            "title": {"type": "string"},
            "body": {"type": "string"},
            "data": {"type": "object"},
            "topic": {"type": ["string", "null"]},
            "scheduled_at": stamp,
            "expires_at": stamp,
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "deleted_at": stamp,
            "delivered_at": stamp,
            "destinations": {"type": "array", "items": published_destination()},
        },
    }


def attempt() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["position", "destination", "attempt", "started_at", "outcome"],
        "properties": {
            "position": {"type": "integer"},
            "destination": {"type": "object"},
            "attempt": {"type": "integer"},
            "started_at": {"type": "string", "format": "date-time"},
            "duration_ms": {"type": "number"},
            "outcome": {"enum": ["delivered", "retry", "permanent"]},
            "status_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
        },
    }


def problem() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
                },
            },
        },
    }


def stats() -> dict[str, Any]:
    """GET /api/stats: the console's overview (notifi.api.stats)."""
    stamp = {"type": "string", "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "required": [
            "since",
            "until",
            "accepted",
            "by_status",
            "due_within",
            "due_soon",
            "due_soon_truncated",
            "slowest_hosts",
            "attempts_read_limit",
            "attempts_truncated",
        ],
        "properties": {
            "since": stamp,
            "until": stamp,
            "accepted": {**count, "description": "Notifications created since `since`."},
            "by_status": {
                "type": "object",
                "description": "Those notifications by status (every status, zero included).",
                "required": NOTIFICATION_STATUSES,
                "properties": {s: count for s in NOTIFICATION_STATUSES},
                "additionalProperties": False,
            },
            "due_within": {**count, "description": "The horizon of due_soon, in seconds."},
            "due_soon": {
                **count,
                "description": "Notifications not deleted with a delivery still scheduled and "
                "due within due_within seconds (overdue ones included).",
            },
            "due_soon_truncated": {
                "type": "boolean",
                "description": "Only the service's 100,000 soonest scheduled deliveries were "
                "looked at: due_soon is a lower bound.",
            },
            "slowest_hosts": {
                "type": "array",
                "maxItems": 5,
                "description": "Destination servers by p95 attempt duration, slowest first, "
                "over attempts started since `since`.",
                "items": {
                    "type": "object",
                    "required": [
                        "host",
                        "attempts",
                        "failures",
                        "p50_ms",
                        "p95_ms",
                        "last_failure_at",
                    ],
                    "properties": {
                        "host": {
                            "type": "string",
                            "description": "host:port of the destination's url (the scheme's "
                            "port when none is given); a destination without a url (email) "
                            "counts under its channel's name.",
                        },
                        "attempts": count,
                        "failures": {**count, "description": "Attempts that did not deliver."},
                        "p50_ms": {"type": "number"},
                        "p95_ms": {"type": "number"},
                        "last_failure_at": {**stamp, "type": ["string", "null"]},
                    },
                },
            },
            "attempts_read_limit": {
                **count,
                "description": "At most this many of the newest attempts are read.",
            },
            "attempts_truncated": {
                "type": "boolean",
                "description": "The limit cut the window short: slowest_hosts covers less "
                "than since…until.",
            },
        },
    }
