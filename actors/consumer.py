"""The one consuming actor that the router and the delivery consumer are made of: fetch, decode,
handle, commit what is durable.

Subclasses give two hooks: `decode(record)` (bytes to a value; raising sets the message aside)
and `handle(messages)`, which makes a batch's work durable and acks each message, at once or
later (`Message.hand_over()` gives the ack to whoever finishes the work, e.g. a worker).

The offsets committed are, per partition, those below the oldest message not yet acked
(`notifi.offsets`), so a crash re-reads only what was not finished. When a rebalance takes
partitions away, the rebalance listener commits the finished work of those partitions before
the next owner starts, and forgets them. On stop the actor stops fetching, waits up to
`drain_timeout_s` for the messages in hand to be acked, and commits.

A message that cannot be decoded, or whose handling raises an error that is not a dependency
being away, is set aside: logged with the error, counted in `notifi_consumer_set_aside_total`,
acked, and the partition moves on (Postgres is the record: the back-stop re-queues what such a
message stood for). A batch that fails is tried again one message at a time first, so one bad
message does not take its neighbours with it. A handler that waits out an outage and is asked
to stop raises `StopRequested`: nothing of that batch is acked or committed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

from notifi import metrics
from notifi.bus import Bus, Consumer, Record
from notifi.bus.base import TopicPartition
from notifi.offsets import OffsetTracker
from notifi.outage import StopRequested
from notifi.runtime import Actor

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class Message(Generic[T]):
    """One decoded record and its ack. `settled` once acked or handed over: the actor will not
    handle it again, whatever happens to the rest of its batch."""

    record: Record
    value: T
    _done: Callable[[], None] = field(repr=False)
    settled: bool = False

    def ack(self) -> None:
        """The message's work is durable: its offset may be committed."""
        self.settled = True
        self._done()

    def hand_over(self) -> Callable[[], None]:
        """Gives the ack to someone else, who calls it once the work is durable."""
        self.settled = True
        return self._done


class ConsumingActor(Actor, Generic[T]):
    """Fetch, decode, handle, commit. See the module docstring for the contract of the hooks."""

    fetch_timeout_s = 0.1  # how long a fetch waits for records (also how soon a stop is seen)
    commit_interval_s = 0.2  # at most this long between a message's ack and its commit
    recommit_interval_s = 5.0  # every position is committed again this often
    lag_interval_s = 1.0  # between updates of the lag gauge

    def __init__(
        self,
        name: str,
        bus: Bus,
        *,
        topic: str,
        group: str,
        fetch_max: int,
        drain_timeout_s: float = 0.0,
    ) -> None:
        super().__init__(name)
        self._bus = bus
        self._topic, self._group, self._fetch_max = topic, group, fetch_max
        self._drain_timeout_s = drain_timeout_s
        self._consumer: Consumer | None = None
        self._tracker = OffsetTracker()
        self._committed_at = 0.0
        self._recommitted_at = time.monotonic()
        self._lag_at = 0.0

    # -- hooks --------------------------------------------------------------------------

    def decode(self, record: Record) -> T:
        """The record's value; any exception sets the message aside."""
        raise NotImplementedError

    async def handle(self, messages: list[Message[T]]) -> None:
        """Makes the work of `messages` durable and acks (or hands over) each one."""
        raise NotImplementedError

    def give_up_held(self, partitions: set[TopicPartition] | None = None) -> int:
        """Drops work handed over but not started (of `partitions`, or all), whose offsets
        therefore stay uncommitted for whoever reads them next; how many messages."""
        return 0

    async def hand_back_held(self) -> int:
        """On a stop: what to do with work handed over but not started; how many messages will
        never be acked (not waited for). By default it is given up (`give_up_held`)."""
        return self.give_up_held()

    # -- life cycle ---------------------------------------------------------------------

    async def on_start(self) -> None:
        # The actor's name is its member name in the group; with the process's instance id
        # (given to the bus) it makes a static member id that survives a restart.
        self._consumer = self._bus.consumer(self._topic, self._group, instance_id=self.name)
        self._consumer.on_revoked(self._on_revoked)
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self) -> None:
        assert self._consumer is not None
        try:
            while not self.should_stop:
                records = await self._consumer.fetch(self._fetch_max, self.fetch_timeout_s)
                if records:
                    await self._take(records)
                await self._commit(at_most_every_s=self.commit_interval_s)
                await self._report_lag()
        except StopRequested:
            log.warning(
                "consumer_stopped_uncommitted",
                actor=self.name,
                in_flight=self._tracker.in_flight(),
                why="stopped while a dependency was away; those messages are read again",
            )
        await self._drain()

    # -- the loop's steps ---------------------------------------------------------------

    async def _take(self, records: Sequence[Record]) -> None:
        messages = []
        for record in records:
            done = self._tracker.track((record.topic, record.partition), record.offset)
            try:
                value = self.decode(record)
            except Exception as exc:  # the message's fault, never the actor's
                self._set_aside(record, "undecodable", exc)
                done()
                continue
            messages.append(Message(record, value, done))
        if messages:
            await self._handle(messages)

    async def _handle(self, messages: list[Message[T]]) -> None:
        try:
            await self.handle(messages)
            return
        except StopRequested:
            raise
        except Exception as exc:
            if len(messages) == 1:
                self._set_aside_message(messages[0], exc)
                return
            log.warning(
                "batch_failed_trying_one_by_one",
                actor=self.name,
                messages=len(messages),
                error_type=type(exc).__name__,
                error=str(exc),
            )
        for message in messages:
            if message.settled:
                continue
            try:
                await self.handle([message])
            except StopRequested:
                raise
            except Exception as exc:
                self._set_aside_message(message, exc)

    def _set_aside_message(self, message: Message[T], exc: Exception) -> None:
        self._set_aside(message.record, "unhandled", exc)
        if not message.settled:
            message.ack()

    def _set_aside(self, record: Record, reason: str, exc: Exception) -> None:
        log.error(
            "message_set_aside",
            actor=self.name,
            reason=reason,
            error_type=type(exc).__name__,
            error=str(exc),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            exc_info=reason == "unhandled",  # a bug: where it was raised matters
        )
        metrics.consumer_set_aside.inc({"group": self._group, "reason": reason})

    async def _commit(self, at_most_every_s: float = 0.0) -> None:
        assert self._consumer is not None
        now = time.monotonic()
        if now - self._committed_at < at_most_every_s:
            return
        offsets = self._tracker.committable()
        if now - self._recommitted_at >= self.recommit_interval_s:
            # Offer every position again now and then: a commit that did not land (a broker
            # away, a coordinator moving) is otherwise never retried on a quiet partition.
            offsets = {**self._tracker.positions(), **offsets}
            self._recommitted_at = now
        if offsets:
            self._committed_at = now
            await self._consumer.commit(offsets)

    async def _report_lag(self) -> None:
        assert self._consumer is not None
        now = time.monotonic()
        if now - self._lag_at < self.lag_interval_s:
            return
        self._lag_at = now
        if (lag := await self._consumer.lag()) is not None:
            metrics.consumer_lag.set({"group": self._group}, lag)

    async def _drain(self) -> None:
        """Stopped fetching: waits for the messages in hand to be acked, commits them."""
        deadline = time.monotonic() + self._drain_timeout_s
        given_up = await self.hand_back_held()  # never acked: not waited for
        while self._tracker.in_flight() > given_up and time.monotonic() < deadline:
            await self._commit()
            await asyncio.sleep(0.02)  # not self.sleep: a stop is already requested
        await self._commit()
        if left := self._tracker.in_flight():
            log.info("consumer_drained_with_work_in_flight", actor=self.name, in_flight=left)

    async def _on_revoked(self, partitions: set[TopicPartition]) -> None:
        """The rebalance takes `partitions`: commit their finished work now, before the next
        owner reads from the last commit, then forget them (acks still to come are for work
        the next owner will read again; the claims make the repeat harmless)."""
        assert self._consumer is not None
        self.give_up_held(partitions)
        offsets = self._tracker.committable(partitions)
        in_flight = self._tracker.in_flight(partitions)
        self._tracker.forget(partitions)
        if offsets:
            await self._consumer.commit(offsets)
        log.info(
            "revoked_committed",
            actor=self.name,
            partitions=sorted(p for _, p in partitions),
            committed=len(offsets),
            left_in_flight=in_flight,
        )
