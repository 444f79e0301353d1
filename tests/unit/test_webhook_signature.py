"""Signing checked independently with the standardwebhooks package; secrets, the address
policy and URL shapes."""

from __future__ import annotations

import base64
import ipaddress
import os

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifi.destinations.network import AddressPolicy, check_url
from notifi.destinations.webhook import retry_after_s, sign, signatures, validate_secret

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def headers(msg_id: str, ts: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def test_signature_verifies_with_the_reference_library() -> None:
    import time

    ts, body = int(time.time()), b'{"id":"n1","body":"hi"}'
    assert Webhook(SECRET).verify(body, headers("n1", ts, sign(SECRET, "n1", ts, body)))
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers("n1", ts, sign(SECRET, "n1", ts, body)))


@pytest.mark.parametrize(
    ("secret", "ok"),
    [
        (SECRET, True),
        ("whsec_" + base64.b64encode(b"x" * 24).decode(), True),
        ("plain", False),
        ("whsec_!!!", False),
        ("whsec_" + base64.b64encode(b"x" * 8).decode(), False),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), False),
    ],
)
def test_secret_shape(secret: str, ok: bool) -> None:
    assert (validate_secret(secret) is None) is ok


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd12::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "::",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().is_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().is_allowed(ipaddress.ip_address(address))


def test_allowed_networks_exempt_addresses() -> None:
    policy = AddressPolicy(["127.0.0.0/8", "fd00::/8"])
    assert policy.is_allowed(ipaddress.ip_address("127.0.0.1"))
    assert policy.is_allowed(ipaddress.ip_address("fd12::1"))
    assert not policy.is_allowed(ipaddress.ip_address("10.0.0.1"))


def test_bad_cidr_is_named() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/40"):
        AddressPolicy(["10.0.0.0/40"])


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.com/h", True),
        ("http://example.com:8080/h?x=1", True),
        ("ftp://example.com/", False),
        ("https:///path", False),
        ("https://u:p@example.com/", False),
        ("https://example.com:99999/", False),
        ("https://example.com/" + "a" * 2100, False),
        ("not a url", False),
        ("https://exa mple.com/", False),
    ],
)
def test_url_shape(url: str, ok: bool) -> None:
    assert (check_url(url) is None) is ok


def test_retry_after_forms() -> None:
    assert retry_after_s("120") == 120
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


def test_during_a_rotation_either_secret_verifies_the_two_signatures() -> None:
    import time

    old = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    ts, body = int(time.time()), b'{"id":"n2"}'
    both = signatures(SECRET, old, "n2", ts, body)
    new_sig, old_sig = both.split(" ")
    assert new_sig == sign(SECRET, "n2", ts, body) and old_sig == sign(old, "n2", ts, body)
    assert Webhook(SECRET).verify(body, headers("n2", ts, both))
    assert Webhook(old).verify(body, headers("n2", ts, both))
    # No previous secret (or the same one again): one signature, as before.
    assert signatures(SECRET, None, "n2", ts, body) == new_sig
    assert signatures(SECRET, SECRET, "n2", ts, body) == new_sig
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers("n2", ts, new_sig))
