"""Email through the configured SMTP server (aiosmtplib): the title as subject, the body as
text, both able to use `$name` placeholders from the notification's data.

Headers are single lines: CR, LF and other control characters in the title, or in a data
value filled into the subject, are collapsed to a space, so no content can add a header. A
recipient or an explicit subject that holds one is refused (at submit time, and here again
as a permanent failure for rows written before that check)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from string import Template
from typing import Any

import aiosmtplib

from notifi.destinations.base import Outcome, SendResult, bounded, has_control, single_line
from notifi.model import Notification
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


class Unsendable(ValueError):
    """The destination or the notification cannot be made into an email (permanent)."""


def _render(text: str, data: Mapping[str, Any], *, header: bool = False) -> str:
    values = {str(k): str(v) for k, v in data.items()}
    if header:  # a value filled into a header cannot break its line
        values = {k: single_line(v) for k, v in values.items()}
    return Template(text).safe_substitute(values)


def subject(destination: Mapping[str, Any], n: Notification) -> str:
    """The Subject line: the destination's subject, else the title, with `$name` filled from
    data; always one line."""
    explicit = destination.get("subject")
    if explicit is not None and (not isinstance(explicit, str) or has_control(explicit)):
        raise Unsendable("the subject must be one line of text")
    rendered = _render(explicit or n.title or "Notification", n.data, header=True)
    return single_line(rendered).strip() or "Notification"


def _recipients_header(destination: Mapping[str, Any]) -> str:
    to = recipients(destination)
    if not to or len(to) > MAX_RECIPIENTS:
        raise Unsendable(f"an email needs 1 to {MAX_RECIPIENTS} recipients")
    for address in to:
        if not isinstance(address, str) or has_control(address):
            raise Unsendable("a recipient address holds a line break or control character")
        if error := address_error(address):
            raise Unsendable(error)
    return ", ".join(to)


def compose(destination: Mapping[str, Any], n: Notification, sender: str) -> EmailMessage:
    """The message for one notification; raises `Unsendable` when it cannot be made."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = _recipients_header(destination)
    mail["Subject"] = subject(destination, n)
    mail["Message-ID"] = f"<{n.id}@notifi>"  # stable across retries: dedupe for MUAs
    mail["Date"] = formatdate(localtime=False)
    try:
        mail.set_content(_render(n.body, n.data))
    except (ValueError, UnicodeError) as exc:  # e.g. text no charset can encode
        raise Unsendable(f"the body cannot be encoded: {type(exc).__name__}") from None
    return mail


class EmailSender:
    def __init__(self, smtp: Smtp, timeout_s: float) -> None:
        self._smtp, self._timeout_s = smtp, timeout_s

    async def send(self, destination: Mapping[str, Any], notification: Notification) -> SendResult:
        started = time.perf_counter()
        result = await self._send(destination, notification)
        duration_ms = (time.perf_counter() - started) * 1000
        return SendResult(result.outcome, result.status_code, result.error, None, duration_ms)

    async def _send(self, destination: Mapping[str, Any], n: Notification) -> SendResult:
        s = self._smtp
        try:
            mail = compose(destination, n, s.sender)
        except Unsendable as exc:
            return SendResult(Outcome.PERMANENT, None, bounded(f"cannot send: {exc}"))
        try:
            refused, _ = await aiosmtplib.send(
                mail,
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
