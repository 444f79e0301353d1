"""The actor: a named asyncio loop with an optional mailbox and plain lifecycle hooks."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractAsyncContextManager
from typing import Any

from notifi.runtime.mailbox import Letter, Mailbox


class Actor:
    """Subclasses write `run()` as `while not self.should_stop: ...`; a crash (an exception out
    of `on_start` or `run`) is the supervisor's business, not theirs."""

    def __init__(self, name: str, inbox: Mailbox[Any] | None = None) -> None:
        self.name = name
        self.inbox = inbox
        self._stop = asyncio.Event()

    @property
    def should_stop(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()
        if self.inbox is not None:
            self.inbox.wake_all()

    def receive(self) -> AbstractAsyncContextManager[Any]:
        """The next message (back in the mailbox if the block raises); raises `Stopped` once a
        stop is requested and the mailbox is empty, which ends `run` normally."""
        assert self.inbox is not None, f"{self.name} has no mailbox"
        return self.inbox.take(until=self._stop)

    def receive_letter(self) -> AbstractAsyncContextManager[Letter[Any]]:
        """Like `receive`, with the message's redelivery count (how often a holder crashed)."""
        assert self.inbox is not None, f"{self.name} has no mailbox"
        return self.inbox.take_letter(until=self._stop)

    def receive_batch(
        self, max_items: int, linger_s: float = 0.0, enough: int | None = None
    ) -> AbstractAsyncContextManager[list[Any]]:
        """Up to `max_items` messages, waiting up to `linger_s` for `enough` once one is there
        (`Mailbox.take_batch`)."""
        assert self.inbox is not None, f"{self.name} has no mailbox"
        return self.inbox.take_batch(max_items, linger_s, until=self._stop, enough=enough)

    async def sleep(self, seconds: float) -> bool:
        """Sleeps, waking early when a stop is requested; True if woken by the stop."""
        if self._stop.is_set():
            return True
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stop.wait()
        return self._stop.is_set()

    async def on_start(self) -> None:
        """Opens what the actor needs before its loop (connections, consumers)."""

    async def run(self) -> None:
        raise NotImplementedError

    async def on_stop(self) -> None:
        """Closes what on_start opened; called after run ends, crashed or not."""
