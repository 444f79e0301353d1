"""structlog set-up: JSON lines in production, readable lines in a terminal, and in every format
no secrets, no local variables and no unbounded output.

Three guards run on every event, from structlog and from the standard library alike (aiohttp,
asyncio and aiokafka log through `logging`, routed here):

* Tracebacks are formatted plainly (`traceback`, innermost `MAX_FRAMES` frames, no locals):
  rich or better-exceptions, when installed, would print every frame's locals, which is how a
  request body with its webhook secret once reached the log, and how a 1000-level recursion
  took minutes to render.
* Redaction: values under secret-looking keys (`secret`, `password`, `token`, `authorization`,
  `cookie`, `headers`, …) are replaced; in text (messages, exception strings) the same
  patterns (`"secret": "…"`, `Authorization: Bearer …`, `password=…`) and every value that the
  current request declared secret with `hide()` are replaced.
* Bounds: a string keeps at most `MAX_VALUE_CHARS` (an exception `MAX_EXCEPTION_CHARS`),
  containers are cut at `MAX_DEPTH` levels and `MAX_ITEMS` items.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"
MAX_FRAMES = 30  # innermost frames kept in a rendered traceback
MAX_EXCEPTION_CHARS = 8_000
MAX_VALUE_CHARS = 2_000
MAX_DEPTH = 4  # nesting kept of a logged container
MAX_ITEMS = 50  # items kept of a logged container
MIN_HIDDEN_CHARS = 4  # shorter declared secrets are not searched for (they would match anywhere)
_PRE_CUT_CHARS = 64_000  # text is cut to this before the patterns run, so they stay cheap

# Keys whose values are never written, whatever logged them.
SECRET_KEY = re.compile(
    r"secret|passw(or)?d|token|authorization|cookie|api[-_]?key|signature|credential|dsn",
    re.IGNORECASE,
)
# Keys whose values are header maps: names are kept, values are not.
HEADER_KEYS = frozenset({"headers", "header"})

# Bounded repetitions and a token-start look-behind keep these linear on long text (an
# unbounded `[\w-]*` before a keyword backtracks quadratically over a long word).
_KEYWORDS = (
    r"(?<![\w-])[\w-]{0,40}?"
    r"(?:secret|passw(?:or)?d|token|authorization|cookie|api[-_]?key|credential)[\w-]{0,40}"
)
_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization schemes: "Bearer abc.def", "Basic dXNlcjpw".
    (
        re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE),
        r"\1 [redacted]",
    ),
    # "secret": "…", 'password': '…', token=…, Authorization: …, X-Api-Key: …
    (
        re.compile(
            r"""(["']?""" + _KEYWORDS + r"""["']?\s*[:=]\s*)"""
            r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&}\]\)]+)""",
            re.IGNORECASE,
        ),
        r'\1"[redacted]"',
    ),
    # A header map in JSON or a repr: "headers": {"X-Token": "…", …}.
    (
        re.compile(r"""(["']headers["']\s*:\s*)\{[^{}]{0,4000}\}""", re.IGNORECASE),
        r'\1{"[redacted]"}',
    ),
)

_hidden: ContextVar[frozenset[str]] = ContextVar("notifi_hidden_values", default=frozenset())


def hide(values: Iterable[str]) -> None:
    """Declares values secret for the rest of the current task (an aiohttp request runs in a
    task of its own): wherever one appears in a log line, it is replaced."""
    new = {v for v in values if isinstance(v, str) and len(v) >= MIN_HIDDEN_CHARS}
    if new:
        _hidden.set(_hidden.get() | new)


def redact_text(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """`text` with secrets replaced, cut to `limit` characters (head and tail kept)."""
    if len(text) > _PRE_CUT_CHARS:
        text = _cut(text, _PRE_CUT_CHARS)
    for value in _hidden.get():
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} …[{len(text) - 2 * half} characters cut]… {text[-half:]}"


def _clean(value: Any, depth: int) -> Any:
    """A bounded, redacted copy of a logged value that any renderer can print cheaply."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return f"{{… {len(value)} keys}}"
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if i == MAX_ITEMS:
                out["…"] = f"{len(value) - MAX_ITEMS} more"
                break
            out[str(key)] = _clean_item(str(key), item, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        if depth >= MAX_DEPTH:
            return f"[… {len(value)} items]"
        items = [_clean(item, depth + 1) for _, item in zip(range(MAX_ITEMS), value, strict=False)]
        if len(value) > MAX_ITEMS:
            items.append(f"… {len(value) - MAX_ITEMS} more")
        return items
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not cost the log line
        text = f"<unprintable {type(value).__name__}>"
    return redact_text(text)


def _clean_item(key: str, value: Any, depth: int) -> Any:
    if SECRET_KEY.search(key):
        return REDACTED if value not in (None, "") else value
    if key.lower() in HEADER_KEYS and isinstance(value, dict):
        return {str(name): REDACTED for name in list(value)[:MAX_ITEMS]}
    return _clean(value, depth)


def format_exception(exc_info: Any) -> str:
    """Plain traceback text, innermost frames only, never local variables."""
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1]
    else:
        exc = sys.exc_info()[1]
    if exc is None:
        return ""
    lines = traceback.format_exception(exc, limit=-MAX_FRAMES)  # capture_locals stays False
    return "".join(lines).rstrip("\n")


def sanitize(_: object, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """The processor: exception rendered plainly, then everything redacted and bounded."""
    exc_info = event.pop("exc_info", None)
    if exc_info:
        event["exception"] = format_exception(exc_info)
    out: dict[str, Any] = {}
    for key, value in event.items():
        if key == "exception" and isinstance(value, str):
            out[key] = redact_text(value, MAX_EXCEPTION_CHARS)
        elif key.startswith("_"):  # structlog's own bookkeeping (_record, _from_structlog)
            out[key] = value
        else:
            out[key] = _clean_item(key, value, 0)
    return out


def _renderer(fmt: str, stream: TextIO) -> structlog.typing.Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    isatty = getattr(stream, "isatty", None)
    return structlog.dev.ConsoleRenderer(
        colors=bool(isatty and isatty()),
        # Only ever given an already-formatted "exception" string by `sanitize`; this is a
        # second guard should an exc_info reach the renderer anyway.
        exception_formatter=structlog.dev.plain_traceback,
    )


def configure(fmt: str = "console", level: str = "info", stream: TextIO | None = None) -> None:
    """Sets up structlog and routes the standard library's records through the same guards."""
    stream = stream or sys.stderr
    renderer = _renderer(fmt, stream)
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, sanitize, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, sanitize],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.set_name("notifi")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "notifi"]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries are quieter than our own events: their INFO is mostly connection chatter.
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
