"""Which server a delivery counts against for the per-host bound and the breaker."""

from __future__ import annotations

import pytest

from actors.delivery import destination_host


@pytest.mark.parametrize(
    ("destination", "kind", "host"),
    [
        ({"url": "https://Example.com/hook"}, "webhook", "example.com:443"),
        ({"url": "http://example.com/hook"}, "webhook", "example.com:80"),
        ({"url": "http://127.0.0.1:8081/a"}, "webhook", "127.0.0.1:8081"),
        ({"url": "http://[::1]:9000/a"}, "slack", "::1:9000"),
        ({"url": "http://example.com:99999/"}, "webhook", ""),  # malformed: the sender ends it
        ({"to": "a@example.com"}, "email", "email"),
    ],
)
def test_host_and_port_name_the_server(destination: dict, kind: str, host: str) -> None:
    assert destination_host({"destination": destination, "kind": kind}) == host


def test_two_services_on_one_host_are_two_servers() -> None:
    a = destination_host({"destination": {"url": "http://127.0.0.1:8001/"}, "kind": "webhook"})
    b = destination_host({"destination": {"url": "http://127.0.0.1:8002/"}, "kind": "webhook"})
    assert a != b
