"""The client's pure parts: where a URL's request goes and the bytes it sends (the path and
query as yarl encodes them, which is what aiohttp sent)."""

from __future__ import annotations

import pytest

from notifi.destinations.http_client import request_bytes, target


def test_a_url_gives_its_origin_and_request_line() -> None:
    t = target("http://hooks.example.com:8080/in/a%20b?x=1&y=%2F#frag")
    assert (t.tls, t.host, t.ip, t.port) == (False, "hooks.example.com", None, 8080)
    assert t.head == b"POST /in/a%20b?x=1&y=/ HTTP/1.1\r\nHost: hooks.example.com:8080\r\n"


def test_default_ports_are_left_out_of_the_host_header_and_an_empty_path_is_slash() -> None:
    assert target("https://example.com").head == b"POST / HTTP/1.1\r\nHost: example.com\r\n"
    assert target("https://example.com").port == 443
    assert target("http://example.com:80/x").head.endswith(b"Host: example.com\r\n")


def test_ip_literals_are_named_for_the_policy() -> None:
    v6 = target("http://[2001:db8::1]:9000/")
    assert (v6.host, v6.ip) == ("2001:db8::1", "2001:db8::1")
    assert v6.head.endswith(b"Host: [2001:db8::1]:9000\r\n")
    assert target("http://192.0.2.1/").ip == "192.0.2.1"


def test_non_ascii_hosts_and_paths_are_encoded() -> None:
    t = target("https://bücher.example/ü")
    assert t.host == "xn--bcher-kva.example"
    assert t.head == b"POST /%C3%BC HTTP/1.1\r\nHost: xn--bcher-kva.example\r\n"


@pytest.mark.parametrize("url", ["ftp://example.com/", "/relative", "http://", "example.com"])
def test_what_is_not_an_absolute_http_url_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        target(url)


def test_the_request_carries_the_headers_and_its_length() -> None:
    data = request_bytes(target("http://example.com/h"), {"a": "1", "B-Two": "ü"}, b"{}")
    assert data == (
        b"POST /h HTTP/1.1\r\nHost: example.com\r\na: 1\r\nB-Two: \xc3\xbc\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )


@pytest.mark.parametrize(
    "headers", [{"a": "1\r\nInjected: yes"}, {"a": "1\nb: 2"}, {"a\r\nb": "1"}, {"a": "x\r"}]
)
def test_a_line_break_in_a_header_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="line break"):
        request_bytes(target("http://example.com/"), headers, b"")
