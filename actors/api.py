"""The api role: the accept writer that commits concurrent requests together (one transaction
and one publish for many POSTs), and the republisher that publishes again what the bus did not
take."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Protocol

import asyncpg
import structlog

from notifi import events
from notifi.bus import Bus
from notifi.errors import InvalidRequest, Unavailable
from notifi.model import NewNotification
from notifi.outage import BUS_AWAY, POSTGRES_AWAY, Backoff, Outage, StopRequested
from notifi.runtime import Actor, Mailbox
from notifi.store import Accepted, AcceptOutcome

log = structlog.get_logger(__name__)

Submission = tuple[NewNotification, "asyncio.Future[Accepted]"]
Event = tuple[bytes | None, bytes]  # a bus message: key and value
RETRY_AFTER_S = 1  # what a 503 tells the client: Postgres is usually back within seconds
# `notification.accepted` events held for another publish: about 1 MB. Past it, the back-stop
# routes what is committed and unpublished, after its grace period.
REPUBLISH_HELD = 10_000
# How long the accept writer waits on a publish before it hands the events to the republisher
# and goes on accepting (a publish that is slow, not failed, may still land: a repeat is
# harmless). A broker that hangs rather than refuses would otherwise hold every accept for up to
# `kafka.publish_timeout`.
PUBLISH_WAIT_S = 1.0


class AcceptStore(Protocol):
    """What the accept writer needs from the store."""

    async def accept(self, batch: Sequence[NewNotification]) -> list[Accepted]:
        """Writes a batch of notifications with their deliveries in one transaction."""
        ...


async def submit(mailbox: Mailbox[Submission], notification: NewNotification) -> Accepted:
    """What a request handler calls: waits until the notification is committed."""
    future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
    await mailbox.put((notification, future))
    return await future


class AcceptWriter(Actor):
    """Writes what the handlers submit in batches, answers them after the commit, then
    publishes `notification.accepted` while the next batch forms and is written (one publish at
    a time, in order). What the bus does not take is held in `unpublished` for the
    republisher."""

    def __init__(
        self,
        inbox: Mailbox[Submission],
        store: AcceptStore,
        bus: Bus,
        topic: str,
        batch: int,
        linger_s: float,
        unpublished: Unpublished,
        *,
        linger_batch: int | None = None,
    ) -> None:
        super().__init__("accept-writer", inbox)
        self._store, self._bus, self._topic = store, bus, topic
        self._unpublished = unpublished
        # Up to `batch` a write; once one waits, up to `linger_s` for `linger_batch`. The batch
        # stays one batch down the pipeline (one publish, then one route, one load, one claim
        # call), so at moderate rates the linger is what saves the round trips; a busy writer's
        # batch forms while it writes, so a batch already worth writing does not wait.
        self._batch, self._linger_s, self._linger_batch = batch, linger_s, linger_batch
        # No waiting here: a request is answered 503 at once; these only keep the log quiet.
        self._postgres = Outage("postgres", self.name, POSTGRES_AWAY)
        self._bus_outage = Outage("bus", self.name, BUS_AWAY)
        # The last batch's publish, on its way while the next batch lingers and is written: at
        # most one at a time, so the events keep their order and a slow bus slows the writer.
        self._publishing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while True:  # until stopped with an empty mailbox: a drain answers every request
                async with self.receive_batch(
                    self._batch, self._linger_s, self._linger_batch
                ) as batch:
                    await self._write(batch)
        finally:
            await self._await_publish()  # the last publish lands (or is held) before the end

    async def _write(self, batch: list[Submission]) -> None:
        try:
            results = await self._store.accept([n for n, _ in batch])
        except POSTGRES_AWAY as exc:
            # Checked before PostgresError: a shutting-down server is away, not refusing data.
            self._postgres.failed(exc)
            log.debug("accept_write_failed", error=str(exc), batch=len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(
                        Unavailable(
                            "The database is unreachable; try again.",
                            headers={"Retry-After": str(RETRY_AFTER_S)},
                        )
                    )
            return
        except asyncpg.PostgresError as exc:
            # Data the database refused: one item should not sink the others in its batch.
            if len(batch) > 1:
                for item in batch:
                    await self._write([item])
                return
            log.warning("accept_refused", error=str(exc))
            future = batch[0][1]
            if not future.done():
                future.set_exception(InvalidRequest(f"The notification cannot be stored: {exc}"))
            return
        self._postgres.recovered()
        for (n, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
            log.debug(
                "notification_accepted",
                actor=self.name,
                notification_id=str(result.id),
                client_id=n.client_id,
                outcome=str(result.outcome),
            )
        created = [
            events.accepted(n.id, n.partition_key)
            for (n, _), r in zip(batch, results, strict=True)
            if r.outcome is AcceptOutcome.CREATED
        ]
        if not created:
            return
        # The previous batch's publish first, with nothing awaited between it and the check
        # below: one publish at a time, and none overtakes what a failed one left held.
        await self._await_publish()
        if self._unpublished:  # the bus was away just now: keep the order, not wait
            self._unpublished.hold(created)
            return
        self._publishing = asyncio.create_task(self._publish(created), name=f"{self.name}-publish")

    async def _await_publish(self) -> None:
        """Returns once the last batch's publish has landed or its events are held."""
        publishing, self._publishing = self._publishing, None
        if publishing is not None:
            await publishing

    async def _publish(self, created: list[Event]) -> None:
        try:
            async with asyncio.timeout(PUBLISH_WAIT_S):
                await self._bus.publish(self._topic, created)
        except BUS_AWAY as exc:  # TimeoutError among them
            # Committed already: published again by the republisher, or by the back-stop.
            self._bus_outage.failed(exc)
            log.debug("accepted_publish_failed", error=str(exc), count=len(created))
            self._unpublished.hold(created)
        except Exception:
            # Not an outage we know: said now, and held like one. Raised later, it would crash
            # the writer on a batch already answered.
            log.exception("accepted_publish_crashed", actor=self.name, count=len(created))
            self._unpublished.hold(created)
        else:
            self._bus_outage.recovered()


class Unpublished:
    """`notification.accepted` events the bus did not take, oldest first, until the republisher
    has published them; at most `limit`, past which the back-stop routes what is committed."""

    def __init__(self, limit: int = REPUBLISH_HELD) -> None:
        self._events: deque[Event] = deque()
        self._limit = limit
        self._added = asyncio.Event()
        self._left = 0  # left to the back-stop since the last time all were published

    def __len__(self) -> int:
        return len(self._events)

    def hold(self, events: Sequence[Event]) -> None:
        room = self._limit - len(self._events)
        self._events.extend(events[:room])
        if (over := len(events) - room) > 0:
            if not self._left:  # once per outage, not once per batch
                log.warning(
                    "accepted_left_to_backstop",
                    held=len(self._events),
                    why="the republisher holds as many as it may: the back-stop routes the rest",
                )
            self._left += over
        self.wake()

    def oldest(self, count: int) -> list[Event]:
        return list(itertools.islice(self._events, count))

    def published(self, count: int) -> None:
        for _ in range(count):
            self._events.popleft()
        if not self._events and self._left:
            log.warning("accepted_left_to_backstop_in_all", count=self._left)
            self._left = 0

    def wake(self) -> None:
        self._added.set()

    async def wait(self) -> None:
        """Returns after the next `hold` or `wake` (at once if one came since the last wait)."""
        await self._added.wait()
        self._added.clear()


class Republisher(Actor):
    """Publishes again the `notification.accepted` events whose first publish failed, until
    the bus takes them, so that an accept made while the broker was away or re-creating its
    topics is routed within seconds of its return, not after the back-stop's grace period.
    While it holds any, the accept writer hands it new ones instead of waiting on the bus.

    A repeat is harmless: a notification is routed once. What is still held at a stop is the
    back-stop's."""

    backoff = Backoff()

    def __init__(self, unpublished: Unpublished, bus: Bus, topic: str, batch: int) -> None:
        super().__init__("accept-republisher")
        self._unpublished, self._bus, self._topic, self._batch = unpublished, bus, topic, batch

    def request_stop(self) -> None:
        super().request_stop()
        self._unpublished.wake()

    async def run(self) -> None:
        bus = Outage("bus", self.name, BUS_AWAY, self.backoff)
        while not self.should_stop:
            held = self._unpublished.oldest(self._batch)
            if not held:
                await self._unpublished.wait()
                continue
            try:
                await bus.call(partial(self._bus.publish, self._topic, held), self.sleep)
            except StopRequested:
                break
            self._unpublished.published(len(held))
            log.info("accepted_republished", actor=self.name, count=len(held))
        if self._unpublished:
            log.warning(
                "accepted_left_to_backstop",
                count=len(self._unpublished),
                why="stopping while the bus is away: the back-stop routes these",
            )
