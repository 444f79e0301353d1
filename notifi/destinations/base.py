"""What every channel shares: the message to send and the outcome of one attempt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

MAX_ERROR_CHARS = 1000


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


@dataclass(frozen=True, slots=True)
class Message:
    id: str  # the notification id: stable across attempts, the receiver's dedupe key
    payload: bytes  # the JSON body, encoded once


class Sender(Protocol):
    async def send(self, destination: Mapping[str, Any], message: Message) -> SendResult: ...


def bounded(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
