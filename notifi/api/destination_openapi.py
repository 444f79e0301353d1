"""The OpenAPI description of /api/destinations (issue 12): its paths and schemas, spliced into
notifi.api.openapi's document, which passes its own response builders in (so this module
needs nothing of it, and the answers are described as everywhere else)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from notifi.api import destination_schemas as schemas

Builder = Callable[..., dict[str, Any]]

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The destination's id. A malformed id is answered 404 like an unknown one.",
    "schema": {"type": "string"},
}
_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "The destination's URL."}}


def _body(ref: str, *, required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def paths(problem: Builder, json: Builder, body_errors: dict[str, Any]) -> dict[str, Any]:
    """The paths, with `problem(description)` and `json(ref, description, headers)` answers;
    `body_errors` are the answers any request with a body may get."""
    bad = problem("A query parameter or the body cannot be read, or a parameter is unknown.")
    missing = problem("No such destination (for this client: another's is answered the same).")
    invalid = problem(
        "The body does not satisfy the schema or a rule a description states (the type's "
        "fields as for inline destinations, topic names, a private, loopback or link-local "
        "IP literal or localhost outside delivery.allowed_networks); `errors` points at the "
        "field. Nothing was written."
    )
    taken = problem("This client has a destination with this name already.")
    writes = {k: v for k, v in body_errors.items() if k != "503"}
    return {
        "/api/destinations": {
            "post": {
                "operationId": "createDestination",
                "description": "Stores a destination of the caller's. A webhook without a secret "
                "gets one (whsec_ + base64 of 24 random bytes): the secret is in this answer "
                "and a rotation's only, never again (has_secret). Host names that need DNS "
                "are checked against the address policy at send time.",
                "requestBody": _body("DestinationRequest"),
                "responses": {
                    "201": json("Destination", "Stored.", _LOCATION),
                    "400": bad,
                    "409": problem(
                        "This client has a destination with this name already, or stores as "
                        "many destinations as it may (api.max_stored_destinations)."
                    ),
                    **writes,
                    "422": invalid,
                },
            },
            "get": {
                "operationId": "listDestinations",
                "description": "The caller's stored destinations (an admin's: every client's), "
                "newest first, paged as notifications are.",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "next_cursor of the previous page (empty to start). Not "
                        "with offset.",
                    },
                    {
                        "name": "topic",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "Those a notification to this topic reaches: subscribed to "
                        'it or to "*".',
                    },
                    {"name": "enabled", "in": "query", "schema": {"type": "boolean"}},
                ],
                "responses": {"200": json("DestinationPage", "Newest first."), "400": bad},
            },
        },
        "/api/destinations/{id}": {
            "parameters": [_ID],
            "get": {
                "operationId": "getDestination",
                "responses": {"200": json("Destination", "The destination."), "404": missing},
            },
            "patch": {
                "operationId": "updateDestination",
                "description": "Given fields replace (a type field given as null is removed); "
                "the result is checked as a whole. enabled false pauses it: its deliveries wait "
                "as paused. enabled true resumes it: what waited goes out through the outbox, "
                "oldest first.",
                "requestBody": _body("DestinationPatch"),
                "responses": {
                    "200": json("Destination", "Changed."),
                    "400": bad,
                    "404": missing,
                    "409": taken,
                    **writes,
                    "422": invalid,
                },
            },
            "delete": {
                "operationId": "deleteDestination",
                "description": "Removes it; what is still undelivered to it (pending, "
                "scheduled, delivering, paused) is cancelled.",
                "responses": {"204": {"description": "Deleted."}, "404": missing},
            },
        },
        "/api/destinations/{id}/rotate-secret": {
            "parameters": [_ID],
            "post": {
                "operationId": "rotateDestinationSecret",
                "description": "A webhook's new signing secret (given, or generated). For "
                "delivery.rotation_overlap seconds its deliveries carry two signatures, new "
                "first, so receivers verifying with either secret pass.",
                "requestBody": _body("RotateSecretRequest", required=False),
                "responses": {
                    "200": json("RotatedSecret", "The new secret (shown this once)."),
                    "400": bad,
                    "404": missing,
                    **writes,
                    "422": problem("Not a webhook, or the secret is not whsec_ + base64."),
                },
            },
        },
        "/api/destinations/{id}/recover": {
            "parameters": [_ID],
            "post": {
                "operationId": "recoverDestination",
                "description": "One more attempt for each delivery to it that ended failed in "
                "[since, until) (of notifications neither deleted nor expired), in creation "
                "order, through the outbox (the rate limit and the breaker apply).",
                "parameters": [
                    {
                        "name": "dry_run",
                        "in": "query",
                        "schema": {"type": "boolean"},
                        "description": "Count only; nothing changes.",
                    }
                ],
                "requestBody": _body("RecoverRequest"),
                "responses": {
                    "202": json("Recovered", "How many were (or would be) re-driven."),
                    "400": bad,
                    "404": missing,
                    **writes,
                    "422": problem(
                        "since is missing, not RFC 3339 with an offset, more than 14 days back, "
                        "or not before until."
                    ),
                },
            },
        },
    }


def components() -> dict[str, Any]:
    return {
        "DestinationRequest": schemas.create_request(),
        "DestinationPatch": schemas.patch_request(),
        "Destination": schemas.destination(),
        "DestinationPage": {
            **schemas.destination_page(),
            "properties": {
                **schemas.destination_page()["properties"],
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Destination"}},
            },
        },
        "RotateSecretRequest": schemas.rotate_request(),
        "RotatedSecret": schemas.rotated(),
        "RecoverRequest": schemas.recover_request(),
        "Recovered": schemas.recovered(),
    }
