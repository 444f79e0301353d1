"""Email through the configured SMTP server (aiosmtplib): the title as subject, the body as
text, both able to use `$name` placeholders from the notification's data."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from string import Template
from typing import Any

import aiosmtplib
import orjson

from notifi.destinations.base import Message, Outcome, SendResult, bounded
from notifi.settings import Smtp

MAX_RECIPIENTS = 20


def recipients(destination: Mapping[str, Any]) -> list[str]:
    to = destination["to"]
    return [to] if isinstance(to, str) else list(to)


def address_error(address: str) -> str | None:
    """What is wrong with one recipient address, or None."""
    _, addr = parseaddr(address)
    local, _, domain = addr.rpartition("@")
    if not addr or addr.count("@") != 1 or not local or not domain:
        return f"{address!r} is not an email address"
    if "." not in domain and domain != "localhost":
        return f"{address!r} has no domain"
    if any(c.isspace() for c in addr):
        return f"{address!r} contains spaces"
    return None


def _render(text: str, data: Mapping[str, Any]) -> str:
    return Template(text).safe_substitute({k: str(v) for k, v in data.items()})


def compose(destination: Mapping[str, Any], message: Message, sender: str) -> EmailMessage:
    n = orjson.loads(message.payload)
    data = n.get("data") or {}
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(recipients(destination))
    mail["Subject"] = _render(destination.get("subject") or n.get("title") or "Notification", data)
    mail["Message-ID"] = f"<{message.id}@notifi>"  # stable across retries: dedupe for MUAs
    mail["Date"] = formatdate(localtime=False)
    mail.set_content(_render(n["body"], data))
    return mail


class EmailSender:
    def __init__(self, smtp: Smtp, timeout_s: float) -> None:
        self._smtp, self._timeout_s = smtp, timeout_s

    async def send(self, destination: Mapping[str, Any], message: Message) -> SendResult:
        started = time.perf_counter()
        result = await self._send(destination, message)
        duration_ms = (time.perf_counter() - started) * 1000
        return SendResult(result.outcome, result.status_code, result.error, None, duration_ms)

    async def _send(self, destination: Mapping[str, Any], message: Message) -> SendResult:
        s = self._smtp
        try:
            refused, _ = await aiosmtplib.send(
                compose(destination, message, s.sender),
                hostname=s.host,
                port=s.port,
                username=s.username or None,
                password=s.password or None,
                start_tls=s.starttls,
                timeout=self._timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            worst = max(codes) if codes else None
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            outcome = Outcome.RETRY if worst is not None and worst < 500 else Outcome.PERMANENT
            return SendResult(outcome, worst, bounded(f"recipients refused: {text}"))
        except aiosmtplib.SMTPAuthenticationError as exc:
            return SendResult(Outcome.RETRY, exc.code, bounded(f"SMTP login failed: {exc.code}"))
        except aiosmtplib.SMTPResponseException as exc:
            outcome = Outcome.PERMANENT if exc.code >= 500 else Outcome.RETRY
            return SendResult(outcome, exc.code, bounded(f"SMTP {exc.code}: {exc.message}"))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return SendResult(Outcome.RETRY, None, bounded(f"SMTP server unreachable: {exc}"))
        error = None
        if refused:
            error = bounded("; ".join(f"{a}: {r.code} {r.message}" for a, r in refused.items()))
        return SendResult(Outcome.DELIVERED, 250, error)  # the server took the message
