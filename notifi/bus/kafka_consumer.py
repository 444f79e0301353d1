"""One Kafka consumer of the bus (aiokafka): manual commits only, a rebalance listener that
runs the actor's revoke hooks, and broker faults turned into "nothing fetched" or "commit
skipped" instead of exceptions, so a broker that restarts (even empty) never crashes an actor.

Static membership (KIP-345): with a `group_instance_id` a restarted consumer takes its
predecessor's place in the group without waiting for the predecessor's session to expire.
On a clean stop a static member stays in the group (aiokafka, like the Java client, sends no
LeaveGroup for it): a stop is almost always a restart (deploy, rolling update), and staying
lets the restart take its partitions back at once with no rebalance for anyone. The cost is a
scale-down: the removed member's partitions move to the others only after
`session_timeout_ms`. A dynamic member (no instance id) leaves on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from notifi.bus.base import Record, RevokedHook
from notifi.bus.base import TopicPartition as Partition

log = structlog.get_logger(__name__)


class _RevokeListener(ConsumerRebalanceListener):
    """Runs inside aiokafka's rebalance, before the partitions go to their next owner."""

    def __init__(self, owner: KafkaConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            await self._owner._revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "partitions_assigned",
            group=self._owner.group,
            instance_id=self._owner.instance_id,
            partitions=sorted(tp.partition for tp in assigned),
        )


class KafkaConsumer:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        group: str,
        instance_id: str | None,
        *,
        commit_timeout_s: float = 5.0,
        broker_seen: Callable[[], bool] = lambda: True,
    ) -> None:
        self._consumer = consumer
        # Whether the bus has looked at the broker since it was last away (KafkaBus.seen): a
        # broker back from an outage may be back empty, and until the bus has looked, the ends
        # this consumer knows may be an old log's.
        self._broker_seen = broker_seen
        # aiokafka's commit waits for a coordinator as long as it takes; a broker that is away
        # must not hold the actor's loop.
        self._commit_timeout_s = commit_timeout_s
        self.topic, self.group, self.instance_id = topic, group, instance_id
        self._hooks: list[RevokedHook] = []
        self._started = False
        # Partitions whose log the broker lost, with the end this consumer knew then (None: not
        # owned): until a fetch tells the new log's end, none of their offsets is committed.
        self._stale_ends: dict[TopicPartition, int | None] = {}
        # Subscribing with the listener (rather than naming the topic to the constructor)
        # is the only way aiokafka takes a rebalance listener.
        consumer.subscribe([topic], listener=_RevokeListener(self))

    def on_revoked(self, hook: RevokedHook) -> None:
        self._hooks.append(hook)

    async def _revoked(self, partitions: set[Partition]) -> None:
        log.info("partitions_revoked", group=self.group, partitions=sorted(partitions))
        for hook in self._hooks:
            try:
                await hook(partitions)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The rebalance must go on: what the hook did not commit is read again.
                log.exception("revoke_hook_failed", group=self.group)

    async def start(self) -> None:
        await self._consumer.start()
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            await self._consumer.stop()
        except KafkaError as exc:
            log.warning("consumer_stop_failed", group=self.group, error=repr(exc))

    def assignment(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def lost(self, partitions: Iterable[Partition]) -> None:
        """The broker lost these partitions' logs. The ends this consumer knows are the old
        logs' until its next fetch, so an offset read from an old log would pass the check in
        `commit` and make the next owner skip that far into the new log: none of theirs is
        committed until a fetch has told a new end. Called at once when the bus sees the
        loss, before a rebalance's revoke hook can commit."""
        owned = self._consumer.assignment() if self._started else set()
        for topic, partition in partitions:
            if topic == self.topic:
                tp = TopicPartition(topic, partition)
                self._stale_ends[tp] = self._consumer.highwater(tp) if tp in owned else None

    async def rewind(self, partitions: Iterable[Partition]) -> None:
        """Reads the `partitions` it owns again from their beginning: the broker lost their logs,
        so everything in the new ones is unread, and a position kept from an old log would skip
        that far into the new one once it has grown past it (nothing out of range to say so).
        Reading again is harmless (a routed notification, a claimed job)."""
        owned = self._consumer.assignment() if self._started else set()
        mine = [tp for t, p in partitions if (tp := TopicPartition(t, p)) in owned]
        if not mine:
            return
        try:
            await self._consumer.seek_to_beginning(*mine)
        except KafkaError as exc:  # a rebalance took them: their next owner starts afresh
            log.warning("rewind_failed", group=self.group, error=repr(exc))
            return
        log.info(
            "partitions_rewound", group=self.group, partitions=sorted(tp.partition for tp in mine)
        )

    def refresh_metadata(self) -> None:
        """Asks for fresh metadata now (the bus re-created topics), so the group sees the new
        partitions and re-joins without waiting for `metadata_max_age_ms`."""
        client = getattr(self._consumer, "_client", None)
        if self._started and client is not None:
            client.force_metadata_update()

    async def fetch(self, max_records: int, timeout_s: float) -> list[Record]:
        try:
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout_s * 1000), max_records=max_records
            )
        except KafkaError as exc:
            # The broker is away or lost the topic: aiokafka reconnects and re-joins by
            # itself; the actor sees an empty fetch, not a crash.
            log.warning("fetch_failed", group=self.group, error=repr(exc))
            await asyncio.sleep(timeout_s)
            return []
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value)
            for messages in batches.values()
            for m in messages
        ]

    async def lag(self) -> int | None:
        total = 0
        try:
            async with asyncio.timeout(1.0):  # position() may wait for a coordinator
                for tp in self._consumer.assignment():
                    end = self._consumer.highwater(tp)
                    if end is None:
                        return None  # not fetched yet
                    total += max(end - await self._consumer.position(tp), 0)
        except (KafkaError, TimeoutError):  # IllegalStateError: a rebalance took it
            return None
        return total

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        if not self._broker_seen():
            # Away, or back and not looked at yet: a commit now could put an old log's offsets
            # in a broker that lost it (tansu takes them from a member it no longer knows).
            log.debug("commit_deferred", group=self.group, why="broker away, not seen since")
            return
        owned = self._consumer.assignment()
        mine = {
            tp: offset
            for (topic, partition), offset in offsets.items()
            if (tp := TopicPartition(topic, partition)) in owned
        }
        if len(mine) < len(offsets):
            log.info("commit_skipped_revoked", partitions=len(offsets) - len(mine))
        for tp, offset in list(mine.items()):
            end = self._consumer.highwater(tp)
            if tp in self._stale_ends:
                if end is None or end == self._stale_ends[tp]:
                    log.warning("commit_skipped_lost_log", partition=tp.partition)
                    del mine[tp]
                    continue
                del self._stale_ends[tp]  # fetched from the new log: its end is known
            if end is not None and offset > end:
                # Work read before the broker lost its log: committing it would make a
                # restarted member skip that far into the NEW log once it grows.
                log.warning("commit_skipped_beyond_end", partition=tp.partition, end=end)
                del mine[tp]
        if not mine:
            return
        try:
            async with asyncio.timeout(self._commit_timeout_s):
                await self._consumer.commit(mine)
        except (KafkaError, TimeoutError) as exc:
            # A rebalance took the partition, or the broker is away or lost the group: the
            # partition's next owner reads again from the last commit that did land, and the
            # claims make the repeat harmless.
            log.warning("commit_failed", group=self.group, error=repr(exc))
