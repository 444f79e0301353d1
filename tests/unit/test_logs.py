"""Logs never carry secrets, local variables or unbounded output, in either format."""

from __future__ import annotations

import contextvars
import io
import logging

import orjson
import pytest
import structlog

from notifi import logs

SECRET = "whsec_TOPSECRET_9f8e7d6c"
BEARER = "eyJhbGciOiJIUzI1NiJ9.BEARERTOKEN.c2lnbmF0dXJl"
HEADER_VALUE = "custom-header-value-4242"


@pytest.fixture(params=["json", "console"])
def output(request: pytest.FixtureRequest):
    stream = io.StringIO()
    logs.configure(request.param, "debug", stream=stream)
    yield stream
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "notifi"]:
        root.removeHandler(handler)


def _body() -> bytes:
    return orjson.dumps(
        {
            "body": "b",
            "destinations": [
                {
                    "type": "webhook",
                    "url": "http://127.0.0.1:9/",
                    "secret": SECRET,
                    "headers": {"Authorization": f"Bearer {BEARER}", "X-Custom": HEADER_VALUE},
                }
            ],
        }
    )


def _handle(raw: bytes) -> None:
    body = orjson.loads(raw)  # a local holding the secret, as a handler's would
    password = "hunter2-password-local"  # noqa: F841  # must not be rendered either
    raise ValueError(f"cannot send to {body['destinations'][0]['url']}")


def _assert_clean(text: str) -> None:
    for needle in (SECRET, BEARER, HEADER_VALUE, "hunter2-password-local"):
        assert needle not in text, f"{needle!r} leaked into: {text[:2000]}"


def test_a_traceback_shows_no_locals_and_no_body(output: io.StringIO) -> None:
    log = structlog.get_logger("test")
    try:
        _handle(_body())
    except ValueError:
        log.exception("api_request_failed", route="/api/notifications")
    text = output.getvalue()
    assert "ValueError: cannot send to http://127.0.0.1:9/" in text
    assert "_handle" in text  # the frames are there, their locals are not
    _assert_clean(text)


def test_secrets_in_the_event_and_in_exception_text_are_redacted(output: io.StringIO) -> None:
    log = structlog.get_logger("test")
    body = orjson.loads(_body())
    try:
        raise RuntimeError(f"bad request body: {_body().decode()}")
    except RuntimeError:
        log.exception("failed", body=body, destination=body["destinations"][0], token=BEARER)
    log.warning("auth", authorization=f"Bearer {BEARER}", cookie="session=abcdef123456")
    log.info("text", detail=f"sent Authorization: Bearer {BEARER} and secret={SECRET}")
    _assert_clean(output.getvalue())
    assert "session=abcdef123456" not in output.getvalue()


def test_values_declared_secret_are_redacted_wherever_they_appear(output: io.StringIO) -> None:
    log = structlog.get_logger("test")

    def request() -> None:
        logs.hide([SECRET, HEADER_VALUE, "ab"])  # too short to search for: ignored
        log.error("odd", note=f"value {HEADER_VALUE} in {SECRET[::-1]} and {SECRET}")

    contextvars.copy_context().run(request)
    text = output.getvalue()
    _assert_clean(text)
    assert SECRET[::-1] in text  # only the declared values go


def test_standard_library_records_get_the_same_guards(output: io.StringIO) -> None:
    try:
        _handle(_body())
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request %s", _body())
    text = output.getvalue()
    assert "Error handling request" in text and "ValueError" in text
    _assert_clean(text)


def test_a_deep_recursion_renders_small_and_fast(output: io.StringIO) -> None:
    log = structlog.get_logger("test")

    def dive(n: int) -> None:
        if n == 0:
            raise RecursionError("too deep")
        dive(n - 1)

    deep: dict = {}
    node = deep
    for _ in range(900):
        node["a"] = {}
        node = node["a"]
    try:
        dive(800)
    except RecursionError:
        log.exception("failed", data=deep, text="x" * 1_000_000)
    text = output.getvalue()
    assert len(text) < logs.MAX_EXCEPTION_CHARS + 4 * logs.MAX_VALUE_CHARS
    assert "RecursionError: too deep" in text


def test_json_lines_stay_json(output: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.info("hello", n=1, secret=SECRET)
    line = output.getvalue().strip()
    if line.startswith("{"):
        event = orjson.loads(line)
        assert event["event"] == "hello" and event["secret"] == logs.REDACTED
