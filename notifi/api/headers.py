"""The policy for the extra HTTP headers a webhook destination may carry: which names and values
are refused at submit time, and the same rules as JSON Schema fragments for the published
description. Notifi owns the request's framing and its Standard Webhooks headers; a client's
header may add to a request, never reshape it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_HEADERS = 20
MAX_NAME_CHARS = 100
MAX_VALUE_CHARS = 4096  # room for a long bearer token (a JWT of a few KiB)
# Name + ": " + value + CRLF over all headers, in UTF-8 bytes: well under the 8 KiB per line and
# the 16 to 64 KiB per request that common servers (nginx, Node, aiohttp) accept.
MAX_TOTAL_BYTES = 8192

# RFC 9110 §5.6.2: token = 1*tchar. The $ is escaped because fastjsonschema rewrites every
# bare $ of a pattern, even one inside a set, into \Z.
TCHAR = "[!#\\$%&'*+.^_`|~0-9A-Za-z-]"
# RFC 9110 §5.5: a field value is visible characters, spaces and HTAB; CR, LF and NUL are what
# split or end a header, the other C0 controls, DEL and the C1 controls are refused as well.
# U+2028/U+2029 are line breaks to some parsers (str.splitlines, email), so they go too.
VALUE_CHAR = "[^\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f\\u2028\\u2029]"
# Text that becomes (part of) one email header line, such as an address or a subject: no
# control characters at all, HTAB included.
LINE_CHAR = "[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]"
TOKEN_PATTERN = f"^{TCHAR}+$"
VALUE_PATTERN = f"^{VALUE_CHAR}*$"
LINE_PATTERN = f"^{LINE_CHAR}*$"

# Framing and hop-by-hop headers (RFC 9110 §7.6.1, §6.1, RFC 9112), the body's type (Notifi
# always sends JSON), and the prefixes of proxy credentials and of Notifi's own Standard
# Webhooks headers (webhook-id, -timestamp, -signature: a client copy would sit beside them).
RESERVED_NAMES = (
    "connection",
    "content-length",
    "content-type",
    "expect",
    "host",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
)
RESERVED_PREFIXES = ("proxy-", "webhook-")

# fullmatch, not the patterns: Python's $ also matches before a final newline.
_TOKEN = re.compile(f"{TCHAR}+")
_VALUE = re.compile(f"{VALUE_CHAR}*")
_LINE = re.compile(f"{LINE_CHAR}*")


def is_single_line(text: str) -> bool:
    """Whether `text` can go into a header line as it is: no CR, LF or other controls."""
    return _LINE.fullmatch(text) is not None


def header_problem(headers: Mapping[Any, Any]) -> tuple[str | None, str] | None:
    """The first thing wrong with a destination's headers as (header name or None, message),
    or None. Values that are not strings are left to the schema, which names them."""
    total = 0
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        if len(name) > MAX_NAME_CHARS:
            return name, f"header names may be at most {MAX_NAME_CHARS} characters"
        if not _TOKEN.fullmatch(name):
            return name, (
                f"header name {name!r} is not an HTTP token "
                "(letters, digits and !#$%&'*+-.^_`|~ only: no spaces, colons or controls)"
            )
        if reserved(name):
            return name, (
                f"header {name!r} may not be given: Notifi sets the framing, connection, "
                "proxy, Content-Type and webhook-* headers itself"
            )
        if not _VALUE.fullmatch(value):
            return name, f"header {name!r} may not contain CR, LF, NUL or other control characters"
        if len(value) > MAX_VALUE_CHARS:
            return name, f"header values may be at most {MAX_VALUE_CHARS} characters"
        total += len(name.encode()) + len(value.encode()) + 4
    if total > MAX_TOTAL_BYTES:
        return None, f"headers may add up to at most {MAX_TOTAL_BYTES} bytes"
    return None


def reserved(name: str) -> bool:
    lower = name.lower()
    return lower in RESERVED_NAMES or lower.startswith(RESERVED_PREFIXES)


def _any_case(text: str) -> str:
    """`text` as a case-insensitive regex without inline flags (ECMA-262 has none)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in text)


def _reserved_pattern() -> str:
    names = "|".join(_any_case(n) for n in RESERVED_NAMES)
    prefixes = "|".join(_any_case(p) for p in RESERVED_PREFIXES)
    return f"^(?:(?:{names})$|(?:{prefixes}))"


def schema() -> dict[str, Any]:
    """The JSON Schema of a webhook destination's `headers` (the total size is checked too)."""
    return {
        "type": "object",
        "maxProperties": MAX_HEADERS,
        "propertyNames": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME_CHARS,
            "pattern": TOKEN_PATTERN,
            "not": {"pattern": _reserved_pattern()},
        },
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_VALUE_CHARS,
            "pattern": VALUE_PATTERN,
        },
        "description": "Extra request headers. Names are HTTP tokens; values hold no CR, LF, "
        "NUL or other control characters (HTAB is allowed); at most "
        f"{MAX_TOTAL_BYTES} bytes in all. Refused, in any case: "
        + ", ".join(n.title() for n in RESERVED_NAMES)
        + ", and names starting with Proxy- or webhook- (Notifi sets its own Standard Webhooks "
        "headers). Values are never returned.",
    }
