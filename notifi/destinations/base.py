"""What every channel shares: the sender interface, the outcome of one attempt, and the
single-line rule for text that ends up in a protocol header."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from notifi.model import Notification

MAX_ERROR_CHARS = 1000
# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: none may reach a
# header line, where a line break starts a new header and the others confuse parsers.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # worth another attempt on the retry schedule
    PERMANENT = "permanent"  # another attempt would fail the same way


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    status_code: int | None = None  # HTTP status (or SMTP reply code)
    error: str | None = None  # bounded, never a secret
    retry_after_s: float | None = None  # what the receiver asked for, when it did
    duration_ms: float = 0.0


class Sender(Protocol):
    """One channel. `send` renders the notification in the channel's own format and sends it
    to `destination` (the stored destination object); it returns the attempt's outcome."""

    async def send(
        self, destination: Mapping[str, Any], notification: Notification
    ) -> SendResult: ...


def bounded(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def single_line(text: str) -> str:
    """`text` with every run of control characters (CR, LF, tab, …) collapsed to one space."""
    return _CONTROL.sub(" ", text)


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None
