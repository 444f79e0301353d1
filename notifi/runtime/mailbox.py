"""Bounded mailboxes whose messages go back to the front when the actor holding them crashes,
so a restarted actor finds the work its predecessor held. Each message counts how often that
happened (its redeliveries), so an actor can set aside one that keeps crashing its holders.

Waiting is on plain futures, one per waiting taker or putter, woken in order (as
`asyncio.Queue` does) rather than on `asyncio.Condition`s: no lock to take on every put and
take, and a taker that lingers for a batch is woken once its batch is there, not by every put
before it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
S = TypeVar("S")


@dataclass(slots=True)
class Letter(Generic[T]):
    """A message and the number of times a holder crashed with it (0: first delivery)."""

    item: T
    redeliveries: int = 0


class MailboxFull(Exception):
    """The mailbox is at its bound."""


class Stopped(Exception):
    """The taker was asked to stop and the mailbox is empty: nothing more to do."""


@dataclass(slots=True, eq=False)
class _Taker:
    """A waiting taker: woken once `need` items are there (or by `wake_all`, or its timer)."""

    woken: asyncio.Future[None]
    need: int


class Mailbox(Generic[T]):
    def __init__(self, name: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"mailbox {name}: maxsize must be at least 1")
        self.name = name
        self.maxsize = maxsize
        self._items: deque[Letter[T]] = deque()
        self._takers: deque[_Taker] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    async def put(self, item: T) -> None:
        """Adds an item, waiting while the mailbox is full (back-pressure)."""
        while len(self._items) >= self.maxsize:
            putter = asyncio.get_running_loop().create_future()
            self._putters.append(putter)
            await _in_line(self._putters, putter, putter, self._wake_putters)
        self._items.append(Letter(item))
        self._wake_takers(1)

    def put_nowait(self, item: T) -> None:
        if len(self._items) >= self.maxsize:
            raise MailboxFull(self.name)
        self._items.append(Letter(item))
        self._wake_takers(1)

    def admit(self, items: list[T]) -> None:
        """Adds items past the bound, in order: they were admitted earlier (taken in under the
        bound's back-pressure, then held until due)."""
        if items:
            self._items.extend(Letter(item) for item in items)
            self._wake_takers(len(items))

    def _requeue(self, letters: list[Letter[T]], *, crashed: bool) -> None:
        # Admitted already, so the bound does not apply; order is kept.
        if crashed:
            for letter in letters:
                letter.redeliveries += 1
        self._items.extendleft(reversed(letters))
        self._wake_takers(len(letters))

    def wake_all(self) -> None:
        """Wakes every waiting taker, e.g. so it notices a stop."""
        while self._takers:
            if not (taker := self._takers.popleft()).woken.done():
                taker.woken.set_result(None)

    def _wake_takers(self, count: int) -> None:
        """Wakes up to `count` takers, first come first woken, whose need the items now meet."""
        takers, have = self._takers, len(self._items)
        while count > 0 and takers:
            first = takers[0]
            if first.woken.done():  # cancelled, its task not run yet: it leaves the line
                takers.popleft()
            elif first.need <= have:
                takers.popleft().woken.set_result(None)
                count -= 1
            else:
                break
        if count > 0 and len(takers) > 1:  # a taker lingering for more stands first: look past it
            ready = [t for t in takers if t.need <= have and not t.woken.done()]
            for taker in ready[:count]:
                takers.remove(taker)
                taker.woken.set_result(None)

    def _wake_putters(self, count: int) -> None:
        while count > 0 and self._putters:
            if not (putter := self._putters.popleft()).done():
                putter.set_result(None)
                count -= 1

    async def _wait(self, need: int, timeout_s: float | None = None) -> None:
        """Until `need` items are there, `wake_all` is called, or `timeout_s` passes."""
        loop = asyncio.get_running_loop()
        taker = _Taker(loop.create_future(), need)
        self._takers.append(taker)
        timer = None if timeout_s is None else loop.call_later(timeout_s, self._expire, taker)
        try:
            await _in_line(self._takers, taker, taker.woken, self._wake_takers)
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, taker: _Taker) -> None:
        if not taker.woken.done():
            self._takers.remove(taker)
            taker.woken.set_result(None)

    def take(self, until: asyncio.Event | None = None) -> AbstractAsyncContextManager[T]:
        """One item; it returns to the front of the mailbox if the block raises."""
        return _Taken(self, 1, 0.0, until, None, _first_item)

    def take_letter(
        self, until: asyncio.Event | None = None
    ) -> AbstractAsyncContextManager[Letter[T]]:
        """Like `take`, with the item's redelivery count."""
        return _Taken(self, 1, 0.0, until, None, _first_letter)

    def take_batch(
        self,
        max_items: int,
        linger_s: float = 0.0,
        until: asyncio.Event | None = None,
        enough: int | None = None,
    ) -> AbstractAsyncContextManager[list[T]]:
        """At least one and at most `max_items` items, waiting up to `linger_s` once the first
        is there for `enough` (default `max_items`); they return to the front, in order, if the
        block raises. Raises `Stopped` when `until` is set while the mailbox is empty."""
        return _Taken(self, max_items, linger_s, until, enough, _items)

    def take_letters(
        self,
        max_items: int,
        linger_s: float = 0.0,
        until: asyncio.Event | None = None,
        enough: int | None = None,
    ) -> AbstractAsyncContextManager[list[Letter[T]]]:
        """`take_batch`, as letters; a letter given back because the block raised an exception
        (a crash, not a cancellation) counts one more redelivery."""
        return _Taken(self, max_items, linger_s, until, enough, _letters)

    async def _take(
        self, max_items: int, linger_s: float, until: asyncio.Event | None, enough: int | None
    ) -> list[Letter[T]]:
        wanted = max_items if enough is None else min(enough, max_items)
        while True:
            while not self._items:
                if until is not None and until.is_set():
                    raise Stopped(self.name)
                await self._wait(1)
            if linger_s > 0 and len(self._items) < wanted:
                await self._wait(wanted, linger_s)
                linger_s = 0.0  # once: another taker may have emptied it meanwhile
                continue
            break
        count = min(max_items, len(self._items))
        letters = [self._items.popleft() for _ in range(count)]
        self._wake_putters(count)
        if self._items:
            self._wake_takers(1)  # more left: pass the turn on
        return letters


async def _in_line(
    line: deque[Any], entry: Any, woken: asyncio.Future[None], wake_next: Callable[[int], None]
) -> None:
    """Waits in `line` until `woken` is set. Cancelled after it was woken, the wake goes to the
    next in line (`wake_next`); cancelled before, `entry` leaves the line."""
    try:
        await woken
    except BaseException:
        if woken.done() and not woken.cancelled():
            wake_next(1)
        else:
            woken.cancel()
            with contextlib.suppress(ValueError):
                line.remove(entry)
        raise


def _first_item(letters: list[Letter[T]]) -> T:
    return letters[0].item


def _first_letter(letters: list[Letter[T]]) -> Letter[T]:
    return letters[0]


def _items(letters: list[Letter[T]]) -> list[T]:
    return [letter.item for letter in letters]


def _letters(letters: list[Letter[T]]) -> list[Letter[T]]:
    return letters


class _Taken(Generic[T, S]):
    """A take as an async context: the letters are taken on entry and go back to the front of
    the mailbox, in order, if the block raises (a crash counts one more redelivery, a
    cancellation does not: not the message's fault). A class, not a generator: it is entered
    once per message on the hot path."""

    __slots__ = ("_args", "_box", "_letters", "_shape")

    def __init__(
        self,
        box: Mailbox[T],
        max_items: int,
        linger_s: float,
        until: asyncio.Event | None,
        enough: int | None,
        shape: Callable[[list[Letter[T]]], S],
    ) -> None:
        self._box, self._shape = box, shape
        self._args = (max_items, linger_s, until, enough)
        self._letters: list[Letter[T]] = []

    async def __aenter__(self) -> S:
        self._letters = await self._box._take(*self._args)
        return self._shape(self._letters)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if kind is not None:
            self._box._requeue(self._letters, crashed=issubclass(kind, Exception))
