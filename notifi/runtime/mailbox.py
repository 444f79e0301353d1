"""Bounded mailboxes whose messages go back to the front when the actor holding them crashes,
so a restarted actor finds the work its predecessor held. Each message counts how often that
happened (its redeliveries), so an actor can set aside one that keeps crashing its holders."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_background: set[asyncio.Future[None]] = set()  # keeps wake-up tasks referenced until done


@dataclass(slots=True)
class Letter(Generic[T]):
    """A message and the number of times a holder crashed with it (0: first delivery)."""

    item: T
    redeliveries: int = 0


class MailboxFull(Exception):
    """The mailbox is at its bound."""


class Stopped(Exception):
    """The taker was asked to stop and the mailbox is empty: nothing more to do."""


class Mailbox(Generic[T]):
    def __init__(self, name: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"mailbox {name}: maxsize must be at least 1")
        self.name = name
        self.maxsize = maxsize
        self._items: deque[Letter[T]] = deque()
        lock = asyncio.Lock()
        self._not_empty = asyncio.Condition(lock)
        self._not_full = asyncio.Condition(lock)

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    async def put(self, item: T) -> None:
        """Adds an item, waiting while the mailbox is full (back-pressure)."""
        async with self._not_full:
            await self._not_full.wait_for(lambda: len(self._items) < self.maxsize)
            self._items.append(Letter(item))
            self._not_empty.notify()

    def put_nowait(self, item: T) -> None:
        if len(self._items) >= self.maxsize:
            raise MailboxFull(self.name)
        self._items.append(Letter(item))
        self._wake()

    def admit(self, items: list[T]) -> None:
        """Adds items past the bound, in order: they were admitted earlier (taken in under the
        bound's back-pressure, then held until due)."""
        if items:
            self._items.extend(Letter(item) for item in items)
            self._wake()

    def _wake(self) -> None:
        """Wakes takers from synchronous code (the condition needs its lock to notify)."""

        async def notify() -> None:
            async with self._not_empty:
                self._not_empty.notify(len(self._items))

        _background.add(task := asyncio.ensure_future(notify()))
        task.add_done_callback(_background.discard)

    def _requeue(self, letters: list[Letter[T]], *, crashed: bool) -> None:
        # Admitted already, so the bound does not apply; order is kept.
        if crashed:
            for letter in letters:
                letter.redeliveries += 1
        self._items.extendleft(reversed(letters))
        self._wake()

    def wake_all(self) -> None:
        """Wakes every waiting taker, e.g. so it notices a stop."""

        async def notify() -> None:
            async with self._not_empty:
                self._not_empty.notify_all()

        _background.add(task := asyncio.ensure_future(notify()))
        task.add_done_callback(_background.discard)

    @asynccontextmanager
    async def take(self, until: asyncio.Event | None = None) -> AsyncIterator[T]:
        """One item; it returns to the front of the mailbox if the block raises."""
        async with self.take_letters(1, until=until) as letters:
            yield letters[0].item

    @asynccontextmanager
    async def take_letter(self, until: asyncio.Event | None = None) -> AsyncIterator[Letter[T]]:
        """Like `take`, with the item's redelivery count."""
        async with self.take_letters(1, until=until) as letters:
            yield letters[0]

    @asynccontextmanager
    async def take_batch(
        self,
        max_items: int,
        linger_s: float = 0.0,
        until: asyncio.Event | None = None,
        enough: int | None = None,
    ) -> AsyncIterator[list[T]]:
        """At least one and at most `max_items` items, waiting up to `linger_s` once the first
        is there for `enough` (default `max_items`); they return to the front, in order, if the
        block raises. Raises `Stopped` when `until` is set while the mailbox is empty."""
        async with self.take_letters(max_items, linger_s, until, enough) as letters:
            yield [letter.item for letter in letters]

    @asynccontextmanager
    async def take_letters(
        self,
        max_items: int,
        linger_s: float = 0.0,
        until: asyncio.Event | None = None,
        enough: int | None = None,
    ) -> AsyncIterator[list[Letter[T]]]:
        """`take_batch`, as letters; a letter given back because the block raised an exception
        (a crash, not a cancellation) counts one more redelivery."""
        stopping = until.is_set if until is not None else lambda: False
        async with self._not_empty:
            await self._not_empty.wait_for(lambda: bool(self._items) or stopping())
            if not self._items:
                raise Stopped(self.name)
            wanted = max_items if enough is None else min(enough, max_items)
            if linger_s > 0 and len(self._items) < wanted:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(linger_s):
                        await self._not_empty.wait_for(lambda: len(self._items) >= wanted)
            count = min(max_items, len(self._items))
            items = [self._items.popleft() for _ in range(count)]
            self._not_full.notify(count)
            if self._items:
                self._not_empty.notify()  # more left: pass the turn on
        try:
            yield items
        except Exception:
            self._requeue(items, crashed=True)
            raise
        except BaseException:  # cancelled (a shutdown timeout): not the message's fault
            self._requeue(items, crashed=False)
            raise
