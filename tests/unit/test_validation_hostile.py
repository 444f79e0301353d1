"""Hostile input refused at the door: each input that could not be sent (CR/LF in an email
header, framing headers, non-canonical IP literals, data nested too deep) is an InvalidRequest
pointing at its field, in a single submission and as an item of a bulk one, and in a named
destination at start-up; ordinary input next to it is still accepted."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifi.api import headers
from notifi.api.limits import Limits
from notifi.api.validation import Validator, check_named_destinations, nested_deeper_than
from notifi.destinations.network import check_url
from notifi.errors import InvalidRequest
from notifi.settings import SettingsError

LIMITS = Limits(
    max_destinations=5, max_title_chars=200, max_body_chars=1000, max_data_bytes=1 << 20
)
HOOK = "https://example.com/hook"


def validator(named: dict[str, Any] | None = None) -> Validator:
    return Validator(LIMITS, named or {}, 1024)


def nested(depth: int, leaf: Any = 1, key: str = "a") -> Any:
    """`depth` levels of objects (the outermost is level 1), built without recursion."""
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


def webhook(**extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": HOOK, **extra}


def email(**extra: Any) -> dict[str, Any]:
    return {"type": "email", "to": "oncall@example.com", **extra}


def request(*destinations: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"body": "b", "destinations": list(destinations), **extra}


def refused_single(body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        validator().notification(body, "c", None)
    return caught.value


def refused_bulk(body: dict[str, Any]) -> InvalidRequest:
    """As the bulk endpoint does it: the envelope, then each item with its own prefix; the
    ordinary item before the bad one is accepted."""
    v = validator()
    items = v.bulk({"notifications": [request(webhook()), body]})
    v.notification(items[0], "c", None, prefix="/notifications/0")
    with pytest.raises(InvalidRequest) as caught:
        v.notification(items[1], "c", None, prefix="/notifications/1")
    return caught.value


CRLF = "\r\n"
BAD: list[tuple[str, dict[str, Any], str]] = [
    # Row 1 at the door: what becomes an email header line.
    ("to CRLF", request(email(to="a@example.com\r\nBcc: v@example.com")), "/destinations/0/to"),
    ("to LF", request(email(to="a@example.com\nx")), "/destinations/0/to"),
    (
        "to list",
        request(email(to=["a@example.com", f"b@example.com{CRLF}"])),
        "/destinations/0/to/1",
    ),
    ("to tab", request(email(to="a@exa\tmple.com")), "/destinations/0/to"),
    ("to NUL", request(email(to="a@example.com\x00")), "/destinations/0/to"),
    ("subject CRLF", request(email(subject="hi\r\nBcc: v@example.com")), "/destinations/0/subject"),
    ("subject LF", request(email(subject="line\nline")), "/destinations/0/subject"),
    ("subject CR", request(email(subject="line\rline")), "/destinations/0/subject"),
    ("subject LS", request(email(subject="a\u2028b")), "/destinations/0/subject"),
    ("subject NEL", request(email(subject="a\x85b")), "/destinations/0/subject"),
    ("second dest", request(webhook(), email(subject="a\nb")), "/destinations/1/subject"),
    # Row 4: framing and protocol headers, non-token names, controls in values.
    *(
        (f"header {name}", request(webhook(headers={name: "x"})), f"/destinations/0/headers/{name}")
        for name in [
            "Transfer-Encoding",
            "Host",
            "Content-Length",
            "Connection",
            "Expect",
            "TE",
            "Upgrade",
            "Keep-Alive",
            "Proxy-Authorization",
            "proxy-connection",
            "Content-Type",
            "content-type",
            "CONTENT-LENGTH",
            "webhook-signature",
            "Webhook-Id",
            "webhook-timestamp",
            "Trailer",
            "X Test",
            ": x",
            "X-A:",
            "",
            "X-Ä",
            "X-A\r\nHost",
            "(x)",
        ]
    ),
    ("header name ~/", request(webhook(headers={"a/b~": "x"})), "/destinations/0/headers/a~1b~0"),
    (
        "value CRLF",
        request(webhook(headers={"X-A": "a\r\nHost: x"})),
        "/destinations/0/headers/X-A",
    ),
    ("value LF", request(webhook(headers={"X-A": "a\nb"})), "/destinations/0/headers/X-A"),
    ("value CR", request(webhook(headers={"X-A": "a\rb"})), "/destinations/0/headers/X-A"),
    ("value NUL", request(webhook(headers={"X-A": "a\x00b"})), "/destinations/0/headers/X-A"),
    ("value DEL", request(webhook(headers={"X-A": "a\x7fb"})), "/destinations/0/headers/X-A"),
    ("value VT", request(webhook(headers={"X-A": "a\x0bb"})), "/destinations/0/headers/X-A"),
    (
        "long name",
        request(webhook(headers={"X" * (headers.MAX_NAME_CHARS + 1): "x"})),
        f"/destinations/0/headers/{'X' * (headers.MAX_NAME_CHARS + 1)}",
    ),
    (
        "long value",
        request(webhook(headers={"X-A": "v" * (headers.MAX_VALUE_CHARS + 1)})),
        "/destinations/0/headers/X-A",
    ),
    (
        "total size",
        request(webhook(headers={f"X-{i}": "v" * 2000 for i in range(5)})),
        "/destinations/0/headers",
    ),
    (
        "too many",
        request(webhook(headers={f"X-{i}": "v" for i in range(headers.MAX_HEADERS + 1)})),
        "/destinations/0/headers",
    ),
    # Row 5: IP literals in anything but the canonical dotted quad.
    *(
        (f"url {host}", request(webhook(url=f"http://{host}:9/")), "/destinations/0/url")
        for host in [
            "127.1",
            "2130706433",
            "0177.0.0.1",
            "0x7f.0.0.1",
            "0x7f000001",
            "0",
            "1.2.3",
            "1.2.3.4.5",
            "010.0.0.1",
            "127.0.0.1.",
            "256.1.1.1",
            "example.123",
            "%31%32%37.0.0.1",
            "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits
        ]
    ),
    ("slack url", request({"type": "slack", "url": "https://127.1/x"}), "/destinations/0/url"),
    ("url control", request(webhook(url="https://example.com/\x01")), "/destinations/0/url"),
    # Row 2: data nested past api.max_data_depth, however deep.
    ("depth 33", request(webhook(), data=nested(33)), "/data"),
    ("depth 1000", request(webhook(), data=nested(1000)), "/data"),
    ("depth 100k", request(webhook(), data=nested(100_000)), "/data"),
    (
        "depth in list",
        request(
            webhook(),
            data={"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        ),
        "/data",
    ),
    # Dates that parse but leave the range of a datetime once in UTC (was a 500, and sank bulk).
    (
        "scheduled_at overflows",
        request(webhook(), scheduled_at="0001-01-01T00:00:00+14:00"),
        "/scheduled_at",
    ),
    (
        "expires_at overflows",
        request(webhook(), expires_at="9999-12-31T23:59:59-14:00"),
        "/expires_at",
    ),
]


@pytest.mark.parametrize(("case", "body", "pointer"), BAD, ids=[c for c, _, _ in BAD])
def test_refused_in_single_submission(case: str, body: dict[str, Any], pointer: str) -> None:
    problem = refused_single(body)
    assert problem.status == 422
    assert problem.pointer == pointer, problem.detail
    assert problem.document()["errors"][0]["pointer"] == pointer


@pytest.mark.parametrize(("case", "body", "pointer"), BAD, ids=[c for c, _, _ in BAD])
def test_refused_in_bulk_item(case: str, body: dict[str, Any], pointer: str) -> None:
    problem = refused_bulk(body)
    assert problem.status == 422
    assert problem.pointer == "/notifications/1" + pointer, problem.detail


@pytest.mark.parametrize(
    ("case", "spec", "pointer"),
    [
        ("header", webhook(headers={"Host": "evil"}), "destinations.ops/headers/Host"),
        ("url", webhook(url="http://0x7f.1/"), "destinations.ops/url"),
        ("subject", email(subject="a\r\nb"), "destinations.ops/subject"),
        ("to", email(to=["a@example.com", "b@example.com\n"]), "destinations.ops/to/1"),
    ],
)
def test_bad_named_destination_fails_start_up(
    case: str, spec: dict[str, Any], pointer: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validator({"ops": spec})
    assert caught.value.pointer == pointer


GOOD: list[tuple[str, dict[str, Any]]] = [
    ("authorization", request(webhook(headers={"Authorization": "Bearer abc.def-ghi"}))),
    (
        "custom headers",
        request(
            webhook(
                headers={
                    "X-Custom": "value with spaces",
                    "X-Tab": "a\tb",
                    "X-Unicode": "café",
                    "User-Agent": "mine/1.0",
                    "Accept": "*/*",
                    "x-$weird!#%&'*+.^_`|~": "ok",
                    "Hostname": "not Host",
                    "Tea": "not TE",
                    "X-Webhook-Id": "not webhook-*",
                }
            )
        ),
    ),
    ("long jwt", request(webhook(headers={"Authorization": "Bearer " + "j" * 4000}))),
    ("public ip", request(webhook(url="http://8.8.8.8:8080/h"))),
    ("loopback ip", request(webhook(url="http://127.0.0.1:9/"))),  # send time decides
    ("zero ip", request(webhook(url="http://10.0.0.1/"))),
    ("ipv6", request(webhook(url="http://[2001:db8::1]:8080/h"))),
    ("ipv6 loopback", request(webhook(url="http://[::1]:9/"))),
    ("ipv6 mapped", request(webhook(url="http://[::ffff:8.8.8.8]/"))),
    (
        "digit labels",
        request(webhook(url="https://1password.com/"), webhook(url="https://123.example.com/")),
    ),
    ("hex-looking name", request(webhook(url="https://cafe.beef.example/"))),
    ("idn", request(webhook(url="https://bücher.example/"))),
    (
        "multi-line title",
        request(email(), webhook(), title="Deploy finished\nall green"),
    ),
    ("multi-line body", request(email(), body="line 1\r\nline 2\n\nBcc: not a header")),
    ("placeholder", request(email(subject="Hello $who"), data={"who": "x\r\nBcc: y@example.com"})),
    ("display name", request(email(to=["oncall@example.com", "Ops <ops@example.com>"]))),
    ("subject unicode", request(email(subject="Déploiement ✓"))),
    ("depth 32", request(webhook(), data=nested(32))),
    ("wide data", request(webhook(), data={str(i): [i, {"x": [i]}] for i in range(500)})),
    ("newlines in data", request(webhook(), data={"text": "a\r\nb", "k\ney": 1})),
]


@pytest.mark.parametrize(("case", "body"), GOOD, ids=[c for c, _ in GOOD])
def test_ordinary_input_is_accepted(case: str, body: dict[str, Any]) -> None:
    v = validator()
    new = v.notification(body, "c", None)
    assert new.body == body["body"]
    items = v.bulk({"notifications": [body, body]})
    assert [
        v.notification(b, "c", None, prefix=f"/notifications/{i}").body for i, b in enumerate(items)
    ]


def test_ordinary_named_destinations_start() -> None:
    v = validator(
        {"ops": webhook(headers={"Authorization": "Bearer x"}), "mail": email(subject="Ops")}
    )
    assert v.notification(request({"name": "ops"}, {"name": "mail"}), "c", None).destinations


def test_depth_limit_is_a_setting() -> None:
    v = Validator(Limits(5, 200, 1000, 1 << 20, max_data_depth=3), {}, 1024)
    v.notification(request(webhook(), data=nested(3)), "c", None)
    with pytest.raises(InvalidRequest) as caught:
        v.notification(request(webhook(), data=nested(4)), "c", None)
    assert caught.value.pointer == "/data" and "3 levels" in caught.value.detail


def test_deep_data_is_refused_fast() -> None:
    """The depth check needs no recursion and no encoding: a million levels is cheap."""
    body = request(webhook(), data=nested(1_000_000))
    started = time.perf_counter()
    refused_single(body)
    assert time.perf_counter() - started < 5.0  # in practice milliseconds; generous for CI


def test_nested_deeper_than_counts_levels() -> None:
    assert not nested_deeper_than({}, 1)
    assert nested_deeper_than({"a": {}}, 1)
    assert not nested_deeper_than({"a": [1, 2, {"b": "c"}]}, 3)
    assert nested_deeper_than({"a": [1, 2, {"b": []}]}, 3)
    assert nested_deeper_than({"x": 1, "y": nested(40)}, 32)


@pytest.mark.parametrize(
    "where",
    [
        lambda deep: webhook(headers={"X-A": deep}),
        lambda deep: webhook(url=deep),
        lambda deep: email(to=deep),
        lambda deep: email(to=["a@example.com", deep]),
        lambda deep: email(subject=deep),
        lambda deep: {**webhook(), "extra": deep},
        lambda deep: {"name": deep},
        lambda deep: {"type": deep},
    ],
)
def test_deep_values_outside_data_are_refused_not_crashed(where: Any) -> None:
    problem = refused_single(request(where(nested(100_000))))
    assert problem.pointer is not None and problem.pointer.startswith("/destinations/0")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
DESTINATION = st.fixed_dictionaries(
    {"type": st.sampled_from(["webhook", "email", "slack"])},
    optional={
        "url": st.one_of(
            st.text(),
            st.text().map(lambda host: f"http://{host}/"),
            st.from_regex(r"\Ahttps?://[0-9a-fx.:\[\]]{1,20}/\Z"),
        ),
        "to": st.one_of(st.text(), st.lists(st.text(), max_size=3), JSON),
        "subject": st.text(),
        "headers": st.dictionaries(st.text(), st.one_of(st.text(), JSON), max_size=4),
        "secret": st.one_of(st.none(), st.text()),
    },
)


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    title=st.one_of(st.none(), st.text()),
    body=st.text(),
    data=st.one_of(st.none(), st.dictionaries(st.text(), JSON, max_size=4)),
    destinations=st.lists(DESTINATION, min_size=0, max_size=3),
)
def test_any_input_is_accepted_or_refused_with_a_pointer(
    title: str | None, body: str, data: Any, destinations: list[dict[str, Any]]
) -> None:
    """Whatever the content, validation ends in a notification or an InvalidRequest with a
    pointer, and what it accepts holds no header line a sender would have to refuse."""
    req = {"title": title, "body": body, "data": data, "destinations": destinations}
    try:
        new = validator().notification(req, "c", None)
    except InvalidRequest as problem:
        assert problem.pointer is not None
        return
    for d in new.destinations:
        for name, value in (d.get("headers") or {}).items():
            assert headers.header_problem({name: value}) is None
        if d["type"] == "email":
            to = [d["to"]] if isinstance(d["to"], str) else d["to"]
            assert all(headers.is_single_line(a) for a in [*to, d.get("subject", "")])
        if "url" in d:
            assert check_url(d["url"]) is None


def test_named_destinations_check_names_the_setting() -> None:
    check_named_destinations({"ops": webhook(headers={"Authorization": "Bearer x"})})
    with pytest.raises(SettingsError, match=r"setting destinations\.ops/headers/Host: "):
        check_named_destinations({"ops": webhook(headers={"Host": "evil"})})
