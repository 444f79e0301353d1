"""The OpenAPI 3.1 description of the REST API, built from the same schemas that validate
requests (notifi.api.schemas)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from notifi.api import destination_openapi, schemas

if TYPE_CHECKING:
    from notifi.api.validation import Validator


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _json(ref: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }
    if headers:
        out["headers"] = headers
    return out


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The notification's id. A malformed id is answered 404 like an unknown one.",
    "schema": {"type": "string"},
}
_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "The notification's URL."}}


_AUTH_ERRORS = {
    "401": _problem("Missing or bad credentials."),
    "403": _problem(
        "This client may not do this (a read-only client writing), or a Cloudflare Access "
        "service token's common_name starts with `user:` (ids of that form are people: a "
        "person's Access login acts as `user:<email>`, else `user:<sub>`, and never as a "
        "service token's client)."
    ),
    "429": {
        **_problem("Over this client's request rate; see Retry-After."),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}}}
# What a submission may be answered besides its own outcomes: the body's framing and the
# database being away (nothing was written; try again after Retry-After).
_BODY_ERRORS = {
    "408": _problem(
        "The request's headers (api.header_timeout) or body (api.body_timeout) did not arrive "
        "in time; the connection is closed."
    ),
    "413": _problem(
        "Body too large: refused from Content-Length before it is read (also for "
        "Expect: 100-continue), or when the decoded body passes the limit."
    ),
    "415": _problem(
        "Body is not JSON, or its Content-Encoding is not identity, gzip or deflate "
        "(an encoding that does not decode is a 400)."
    ),
    "503": {
        **_problem("The database is unreachable; nothing was written."),
        "headers": _RETRY_AFTER,
    },
}
_SECURITY_SCHEMES = {
    "clientId": {"type": "apiKey", "in": "header", "name": "CF-Access-Client-Id"},
    "clientSecret": {"type": "apiKey", "in": "header", "name": "CF-Access-Client-Secret"},
    "accessJwt": {"type": "apiKey", "in": "header", "name": "Cf-Access-Jwt-Assertion"},
}


def _with_auth(doc: dict[str, Any]) -> dict[str, Any]:
    """Every /api operation but the description itself needs a client and may be refused."""
    for path, item in doc["paths"].items():
        if not path.startswith(("/api/notifications", "/api/stats", "/api/destinations")):
            continue
        for name, operation in item.items():
            if name == "parameters":
                continue
            operation["responses"].update(_AUTH_ERRORS)
            operation["security"] = [{"clientId": [], "clientSecret": []}, {"accessJwt": []}, {}]
    doc["components"]["securitySchemes"] = _SECURITY_SCHEMES
    return doc


def openapi(validator: Validator) -> dict[str, Any]:
    limits = validator.limits
    request = schemas.create_request(limits)
    request["properties"]["destinations"]["items"] = {
        "oneOf": [
            *(
                {"$ref": f"#/components/schemas/{kind.capitalize()}Destination"}
                for kind in schemas.destination_schemas()
            ),
            {"$ref": "#/components/schemas/NamedDestination"},
            {"$ref": "#/components/schemas/StoredDestinationReference"},
        ]
    }
    page_params = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {
            "name": "deleted",
            "in": "query",
            "schema": {"type": "boolean"},
            "description": "Include deleted notifications.",
        },
        {"name": "status", "in": "query", "schema": {"enum": schemas.NOTIFICATION_STATUSES}},
        {
            "name": "created_after",
            "in": "query",
            "schema": {"type": "string", "format": "date-time"},
            "description": "Created at or after this time.",
        },
        {
            "name": "created_before",
            "in": "query",
            "schema": {"type": "string", "format": "date-time"},
            "description": "Created before this time.",
        },
        {
            "name": "destination_type",
            "in": "query",
            "schema": {"enum": list(schemas.destination_schemas())},
            "description": "Only notifications with a destination of this type (422 for "
            "another value).",
        },
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string"},
            "description": "next_cursor of the previous page (empty to start): keyset paging, "
            "fast at any depth. Not with offset.",
        },
    ]
    bad = _problem("The request is malformed, or a parameter is out of range.")
    invalid = _problem(
        "The body does not satisfy the schema, or a rule a schema's description states (data's "
        "size and depth, the header policy, canonical IP literals, no CR/LF in email fields); "
        "`errors` points at the field."
    )
    missing = _problem("No such notification (for this client).")
    return _with_auth(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "Notifi",
                "version": "0.1.0",
                "description": "Submit notifications and follow their delivery.",
            },
            "paths": {
                "/api/notifications": {
                    "post": {
                        "operationId": "createNotification",
                        "parameters": [
                            {
                                "name": "Idempotency-Key",
                                "in": "header",
                                "required": False,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                            },
                        ],
                        "requestBody": {
                            "required": True,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/NotificationRequest"}
                                }
                            },
                        },
                        "responses": {
                            "202": _json("Notification", "Accepted.", _LOCATION),
                            "200": _json("Notification", "Idempotent replay.", _LOCATION),
                            "400": bad,
                            "409": _problem("Idempotency-Key reused with a different body."),
                            **_BODY_ERRORS,
                            "422": invalid,
                        },
                    },
                    "get": {
                        "operationId": "listNotifications",
                        "parameters": page_params,
                        "responses": {
                            "200": _json("NotificationPage", "Newest first."),
                            "400": bad,
                            "422": _problem("destination_type is not a destination type."),
                        },
                    },
                },
                "/api/notifications/bulk": {
                    "post": {
                        "operationId": "createNotifications",
                        "description": "Up to api.max_bulk notifications; each item is answered on "
                        "its own (202 with id, or a problem document).",
                        "requestBody": {
                            "required": True,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/BulkRequest"}
                                }
                            },
                        },
                        "responses": {
                            "200": _json("BulkResult", "One result per item, in order."),
                            "400": bad,
                            **_BODY_ERRORS,
                            "422": invalid,
                        },
                    },
                },
                "/api/notifications/{id}": {
                    "parameters": [_ID],
                    "get": {
                        "operationId": "getNotification",
                        "responses": {
                            "200": _json("Notification", "The notification."),
                            "404": missing,
                        },
                    },
                    "patch": {
                        "operationId": "rescheduleNotification",
                        "description": "Moves a notification none of whose deliveries has "
                        "started (each still scheduled, or pending and never attempted) to a new "
                        "scheduled_at (null: now): never sent before the new time, nor at the "
                        "old one when the new one is later. Same limits as at submit, and before "
                        "the notification's expiry.",
                        "requestBody": {
                            "required": True,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/RescheduleRequest"}
                                }
                            },
                        },
                        "responses": {
                            "200": _json("Notification", "Moved."),
                            "400": bad,
                            "404": missing,
                            "409": _problem(
                                "A delivery has started (attempted, being attempted, or ended) "
                                "or the notification was deleted; `detail` says which "
                                "destination, `destination` holds its position and status."
                            ),
                            **{k: v for k, v in _BODY_ERRORS.items() if k != "503"},
                            "422": _problem(
                                "scheduled_at is not an RFC 3339 date-time with an offset, is "
                                "too far ahead, or is not before the notification's expiry; or "
                                "the body has another field. `errors` points at the field."
                            ),
                        },
                    },
                    "delete": {
                        "operationId": "deleteNotification",
                        "responses": {
                            "200": _json("Notification", "Deleted; undelivered work cancelled."),
                            "404": missing,
                        },
                    },
                },
                "/api/notifications/{id}/attempts": {
                    "parameters": [_ID],
                    "get": {
                        "operationId": "listAttempts",
                        "responses": {
                            "200": _json("AttemptList", "Every attempt, oldest first."),
                            "404": missing,
                        },
                    },
                },
                "/api/notifications/{id}/retry": {
                    "parameters": [_ID],
                    "post": {
                        "operationId": "retryNotification",
                        "description": "One more attempt for each failed or cancelled delivery "
                        "(a deleted notification is restored); delivered ones are left alone.",
                        "responses": {"202": _json("Notification", "Re-queued."), "404": missing},
                    },
                },
                "/api/stats": {
                    "get": {
                        "operationId": "getStats",
                        "description": "The caller's overview (an admin's: every client's): "
                        "notifications created since `since` by status, how many are due soon, "
                        "and the five slowest destination servers. Reads at most the newest "
                        "attempts_read_limit attempts.",
                        "parameters": [
                            {
                                "name": "since",
                                "in": "query",
                                "schema": {"type": "string", "format": "date-time"},
                                "description": "RFC 3339 with an offset; default 24 hours ago, "
                                "at most 14 days back, not in the future.",
                            },
                            {
                                "name": "due_within",
                                "in": "query",
                                "schema": {"type": "integer", "minimum": 0, "maximum": 1209600},
                                "description": "Seconds ahead counted as due soon (default 3600).",
                            },
                        ],
                        "responses": {
                            "200": _json("Stats", "The overview."),
                            "400": _problem(
                                "A parameter cannot be read (not a date-time with an offset, "
                                "not an integer) or is unknown."
                            ),
                            "422": _problem(
                                "since is more than 14 days back or in the future, or "
                                "due_within is out of range."
                            ),
                        },
                    }
                },
                **destination_openapi.paths(_problem, _json, _BODY_ERRORS),
                "/healthz": {
                    "get": {
                        "operationId": "healthz",
                        "responses": {"200": {"description": "Alive."}},
                    }
                },
                "/readyz": {
                    "get": {
                        "operationId": "readyz",
                        "responses": {
                            "200": {"description": "Ready."},
                            "503": {"description": "Not ready."},
                        },
                    }
                },
                "/metrics": {
                    "get": {
                        "operationId": "metrics",
                        "responses": {
                            "200": {
                                "description": "Prometheus text format.",
                                "content": {"text/plain": {"schema": {"type": "string"}}},
                            }
                        },
                    }
                },
            },
            "components": {
                "schemas": {
                    "NotificationRequest": request,
                    **{
                        f"{kind.capitalize()}Destination": schema
                        for kind, schema in schemas.destination_schemas().items()
                    },
                    "NamedDestination": schemas.named_destination(),
                    "StoredDestinationReference": schemas.stored_destination_reference(),
                    "RescheduleRequest": schemas.reschedule_request(),
                    "Notification": schemas.notification(),
                    "NotificationPage": {
                        "type": "object",
                        "required": ["items", "limit", "offset", "next", "next_cursor"],
                        "properties": {
                            "items": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/Notification"},
                            },
                            "limit": {"type": "integer"},
                            "offset": {"type": "integer"},
                            "next": {"type": ["string", "null"]},
                            "next_cursor": {"type": ["string", "null"]},
                        },
                    },
                    "Problem": schemas.problem(),
                    "Stats": schemas.stats(),
                    **destination_openapi.components(),
                    "BulkRequest": {
                        **schemas.bulk_request(limits.max_bulk),
                        "properties": {
                            "notifications": {
                                **schemas.bulk_request(limits.max_bulk)["properties"][
                                    "notifications"
                                ],
                                "items": {"$ref": "#/components/schemas/NotificationRequest"},
                            }
                        },
                    },
                    "BulkResult": {
                        "type": "object",
                        "required": ["items", "accepted", "rejected"],
                        "properties": {
                            "accepted": {"type": "integer"},
                            "rejected": {"type": "integer"},
                            "items": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["status"],
                                    "properties": {
                                        "status": {"type": "integer"},
                                        "id": {"type": "string", "format": "uuid"},
                                        "location": {"type": "string"},
                                        "problem": {"$ref": "#/components/schemas/Problem"},
                                    },
                                },
                            },
                        },
                    },
                    "AttemptList": {
                        "type": "object",
                        "required": ["items"],
                        "properties": {"items": {"type": "array", "items": schemas.attempt()}},
                    },
                }
            },
        }
    )
