"""The api role: the accept writer that commits concurrent requests together (one transaction
and one publish for many POSTs)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import asyncpg
import structlog

from notifi import events
from notifi.bus import Bus
from notifi.errors import InvalidRequest, Unavailable
from notifi.model import NewNotification
from notifi.outage import BUS_AWAY, POSTGRES_AWAY, Outage
from notifi.runtime import Actor, Mailbox
from notifi.store import Accepted, AcceptOutcome

log = structlog.get_logger(__name__)

Submission = tuple[NewNotification, "asyncio.Future[Accepted]"]
RETRY_AFTER_S = 1  # what a 503 tells the client: Postgres is usually back within seconds


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
    publishes `notification.accepted` (a publish lost here is caught by the back-stop)."""

    def __init__(
        self,
        inbox: Mailbox[Submission],
        store: AcceptStore,
        bus: Bus,
        topic: str,
        batch: int,
        linger_s: float,
    ) -> None:
        super().__init__("accept-writer", inbox)
        self._store, self._bus, self._topic = store, bus, topic
        self._batch, self._linger_s = batch, linger_s
        # No waiting here: a request is answered 503 at once; these only keep the log quiet.
        self._postgres = Outage("postgres", self.name, POSTGRES_AWAY)
        self._bus_outage = Outage("bus", self.name, BUS_AWAY)

    async def run(self) -> None:
        while True:  # until stopped with an empty mailbox: a drain answers every request
            async with self.receive_batch(self._batch, self._linger_s) as batch:
                await self._write(batch)

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
        if created:
            try:
                await self._bus.publish(self._topic, created)
            except BUS_AWAY as exc:
                # Committed already: the back-stop routes these after its grace period.
                self._bus_outage.failed(exc)
                log.debug("accepted_publish_failed", error=str(exc), count=len(created))
            else:
                self._bus_outage.recovered()
