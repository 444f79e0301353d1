"""The pure parts of referring to stored destinations: what a request refers to (for its one
lookup), how validation resolves ids and names (stored first, then configured), each stored
destination once, topic names, and a new notification's status from its deliveries."""

from __future__ import annotations

import uuid

import pytest

from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.errors import InvalidRequest
from notifi.store.references import (
    StoredDestination,
    StoredDestinations,
    referenced,
    refers,
    status_at_accept,
)

CONFIGURED = {"ops": {"type": "webhook", "url": "https://ops.example.com/hook"}}
MINE = StoredDestination(uuid.uuid4(), "slack", "ops")
OTHER = StoredDestination(uuid.uuid4(), "webhook", None)
STORED = StoredDestinations.of([MINE, OTHER])


@pytest.fixture
def validator() -> Validator:
    return Validator(Limits(5, 50, 500, 500), CONFIGURED, 16)


def test_referenced_collects_every_id_and_name_and_skips_what_is_malformed() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    bodies = [
        {"destinations": [{"destination_id": str(a)}, {"name": "ops"}, {"type": "webhook"}]},
        {"destinations": [{"destination_id": str(b)}, {"destination_id": "nope"}, "x", 5]},
        {"destinations": [{"name": ""}, {"name": "n" * 101}, {"name": 3}, {"destination_id": 1}]},
        {"destinations": [{"name": "nul\x00"}]},
        {"destinations": "not a list"},
        {"topic": "deploys"},
        ["not", "an", "object"],
        None,
        {"destinations": [{"name": "too-many"}] * 6},  # over max_destinations: refused anyway
    ]
    assert referenced(bodies, 5) == ({a, b}, {"ops"})


def test_ids_resolve_to_a_reference_without_fields(validator: Validator) -> None:
    body = {"body": "b", "destinations": [{"destination_id": str(OTHER.id)}]}
    n = validator.notification(body, "c", None, stored=STORED)
    assert n.destinations == [{"type": "webhook", "destination_id": str(OTHER.id)}]
    assert refers(n)


def test_names_are_stored_first_then_configured(validator: Validator) -> None:
    body = {"body": "b", "destinations": [{"name": "ops"}]}
    mine = validator.notification(body, "c", None, stored=STORED)
    assert mine.destinations == [{"type": "slack", "destination_id": str(MINE.id)}]
    configured = validator.notification(body, "c", None)
    assert configured.destinations == [{**CONFIGURED["ops"], "name": "ops"}]
    assert not refers(configured)


@pytest.mark.parametrize(
    ("given", "pointer"),
    [
        ({"destination_id": str(uuid.uuid4())}, "/destinations/0/destination_id"),
        ({"destination_id": "0" * 36}, "/destinations/0/destination_id"),
        ({"destination_id": None}, "/destinations/0/destination_id"),
        ({"destination_id": str(MINE.id), "name": "ops"}, "/destinations/0/name"),
        ({"name": "nobody"}, "/destinations/0/name"),
    ],
)
def test_unknown_references_name_the_field(validator: Validator, given: dict, pointer: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validator.notification({"body": "b", "destinations": [given]}, "c", None, stored=STORED)
    assert caught.value.pointer == pointer


def test_a_stored_destination_listed_twice_is_kept_once_where_first_named(
    validator: Validator,
) -> None:
    inline = {"type": "webhook", "url": "https://example.com/h"}
    listed = [{"name": "ops"}, inline, {"destination_id": str(MINE.id)}, inline]
    n = validator.notification({"body": "b", "destinations": listed}, "c", None, stored=STORED)
    assert n.destinations == [MINE.reference(), inline, inline]


@pytest.mark.parametrize("topic", ["a", "a" * 64, "deploys.prod_eu-1", "0-9"])
def test_topic_names(validator: Validator, topic: str) -> None:
    n = validator.notification({"body": "b", "topic": topic}, "c", None)
    assert (n.topic, n.destinations) == (topic, [])
    assert refers(n)


@pytest.mark.parametrize(
    "topic", ["", "A", "a b", "*", "a" * 65, "dé", "a\n", "a/b", 1, True, ["a"], {}]
)
def test_bad_topic_names(validator: Validator, topic: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validator.notification({"body": "b", "topic": topic}, "c", None)
    assert caught.value.pointer == "/topic"


def test_the_request_hash_covers_the_topic(validator: Validator) -> None:
    hashes = {
        validator.notification({"body": "b", "topic": t}, "c", None).request_hash
        for t in ("deploys", "builds")
    }
    assert len(hashes) == 2


@pytest.mark.parametrize(
    ("statuses", "initial", "expected"),
    [
        ([], "pending", "unmatched"),
        ([], "scheduled", "unmatched"),
        (["paused"], "pending", "paused"),
        (["paused", "paused"], "scheduled", "paused"),
        (["paused", "pending"], "pending", "pending"),
        (["paused", "scheduled"], "scheduled", "pending"),  # as notifi_refresh_status says
        (["pending", "pending"], "pending", "pending"),
        (["scheduled"], "scheduled", "scheduled"),
    ],
)
def test_status_at_accept(statuses: list[str], initial: str, expected: str) -> None:
    assert status_at_accept(statuses, initial) == expected
