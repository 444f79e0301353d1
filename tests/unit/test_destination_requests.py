"""The stored destinations' pure parts: topics, the address check at create, generated secrets,
the PATCH merge, the recover window and the published resource."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from notifi.api.destination_requests import (
    address_problem,
    create,
    new_secret,
    patch,
    recover_window,
    resource,
    topics,
)
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.destinations.network import AddressPolicy
from notifi.destinations.webhook import validate_secret
from notifi.errors import InvalidRequest

VALIDATOR = Validator(Limits(5, 50, 500, 500), {}, 16)
OPEN = AddressPolicy()
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_topics_deduped_in_order_and_star_alone() -> None:
    assert topics(["b", "a", "b"]) == ["b", "a"]
    assert topics("*") == ["*"] and topics(["*", "*"]) == ["*"]
    assert topics(None) == [] and topics([]) == []
    for bad, pointer in [
        (["a", "*"], "/topics/1"),
        (["ok", "Not"], "/topics/1"),
        ([""], "/topics/0"),
        ([5], "/topics/0"),
        ("deploys", "/topics"),
        ([f"t{i}" for i in range(51)], "/topics"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            topics(bad)
        assert caught.value.pointer == pointer, bad


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.1:8080/x",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://169.254.169.254/",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://api.localhost/",
        "http://[::ffff:192.168.0.1]/",
    ],
)
def test_internal_addresses_are_refused_unless_allowed(url: str) -> None:
    assert "delivery.allowed_networks" in (address_problem(url, OPEN) or "")
    allowed = AddressPolicy(
        ["127.0.0.0/8", "10.0.0.0/8", "::/0", "169.254.0.0/16", "192.168.0.0/16"]
    )
    assert address_problem(url, allowed) is None


def test_names_that_need_dns_wait_for_send_time() -> None:
    assert address_problem("https://example.com/hook", OPEN) is None
    assert address_problem("https://93.184.215.14/hook", OPEN) is None


def test_generated_secrets_are_standard_webhooks_secrets() -> None:
    made = {new_secret() for _ in range(20)}
    assert len(made) == 20
    for secret in made:
        assert validate_secret(secret) is None
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24


def test_create_keeps_the_secret_out_of_config() -> None:
    given = "whsec_" + "QUJD" * 8
    created = create(
        {"type": "webhook", "url": "https://example.com/", "secret": given}, VALIDATOR, OPEN
    )
    assert created.secret == given and created.fields.config == {"url": "https://example.com/"}
    assert created.fields.enabled is True and created.fields.topics == []
    assert create({"type": "slack", "url": "https://example.com/"}, VALIDATOR, OPEN).secret is None


def _row(**over: Any) -> dict[str, Any]:
    return {
        "id": uuid4(),
        "name": "ops",
        "description": "d",
        "kind": "webhook",
        "config": {"url": "https://example.com/", "headers": {"X-A": "1"}},
        "secret": "whsec_x",
        "topics": ["a"],
        "rate_limit": 0.10000000149011612,  # 0.1 as float4 reads back
        "enabled": True,
        "disabled_reason": None,
        "disabled_at": None,
        "created_at": NOW,
        "updated_at": NOW,
        "stats": {
            "attempts_24h": 3,
            "successes_24h": 1,
            "last_success_at": None,
            "last_failure_at": NOW,
        },
        **over,
    }


def test_patch_merges_and_null_removes_a_type_field() -> None:
    fields = patch({"headers": None, "topics": ["b"], "name": None}, _row(), VALIDATOR, OPEN)
    assert fields.config == {"url": "https://example.com/"}
    assert fields.topics == ["b"] and fields.name is None and fields.description == "d"
    fields = patch({"url": "https://example.org/"}, _row(), VALIDATOR, OPEN)
    assert fields.config == {"url": "https://example.org/", "headers": {"X-A": "1"}}
    for body, pointer in [
        ({"type": "email"}, "/type"),
        ({"secret": None}, "/secret"),
        ({"url": None}, "/url"),
        ({"url": "http://127.0.0.1/"}, "/url"),
        ({"to": "a@example.com"}, "/to"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            patch(body, _row(), VALIDATOR, OPEN)
        assert caught.value.pointer == pointer, body


def test_recover_window() -> None:
    since = NOW - timedelta(days=1)
    assert recover_window({"since": since.isoformat()}, NOW) == (since, NOW)
    until = NOW - timedelta(hours=1)
    assert recover_window({"since": since.isoformat(), "until": until.isoformat()}, NOW) == (
        since,
        until,
    )
    assert recover_window({"since": (NOW - timedelta(days=14)).isoformat()}, NOW)[0]
    for body in [
        {},
        {"since": (NOW - timedelta(days=14, minutes=6)).isoformat()},
        {"since": NOW.isoformat()},
        {"since": "2026-11-25T10:00:00"},
        {"since": since.isoformat(), "until": since.isoformat()},
        {"since": since.isoformat(), "dry_run": True},
    ]:
        with pytest.raises(InvalidRequest):
            recover_window(body, NOW)


def test_resource_shows_no_secret_and_no_header_values() -> None:
    shown = resource(_row())
    assert "secret" not in shown and shown["has_secret"] is True
    assert shown["header_names"] == ["X-A"] and "1" not in str(shown.get("headers"))
    assert shown["rate_limit"] == 0.1  # float4 in the table
    assert shown["stats"]["failures_24h"] == 2
    assert resource(_row(), secret="whsec_new")["secret"] == "whsec_new"
    email = resource(_row(kind="email", config={"to": ["a@example.com"]}, secret=None))
    assert email["to"] == ["a@example.com"] and "has_secret" not in email
