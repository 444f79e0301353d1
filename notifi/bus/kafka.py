"""The bus over Kafka (aiokafka): topics created when missing, batched acknowledged publishes
bounded in time, consumers with manual commits only, and a watcher that heals the bus when the
broker comes back empty (topics re-created with the configured partition count, consumers
nudged to re-join, `resets` counted and `on_reset` hooks run) without a process restart."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Coroutine, Sequence
from typing import Any

import aiokafka.admin.client
import aiokafka.client
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from notifi.bus import healing
from notifi.bus.base import BusError, ResetHook
from notifi.bus.base import TopicPartition as Partition
from notifi.bus.kafka_consumer import KafkaConsumer

log = structlog.get_logger(__name__)

AWAY_LOOK_S = 0.2  # between looks while the broker is away


def _never_auto_create_topics() -> None:
    """aiokafka asks for topic auto-creation in every metadata request and has no setting to
    turn that off. A broker that allows it (tansu always; Kafka with its default
    `auto.create.topics.enable=true`) would then re-create a lost topic with the BROKER's
    default partition count (tansu 4, Kafka 1) the moment any client looks, before the bus
    can create it with the configured count. So the clients of this process never ask; the
    bus creates its topics itself. (aiokafka is pinned; both modules build the request by
    this one name.)"""
    for module in (aiokafka.client, aiokafka.admin.client):
        if not isinstance(module.MetadataRequest, functools.partial):
            module.MetadataRequest = functools.partial(  # type: ignore[attr-defined]
                MetadataRequest, allow_auto_topic_creation=False
            )


class KafkaBus:
    """`instance_id`: this process's stable instance id (the `--instance-id` flag, e.g. the
    StatefulSet pod name). With it and `static_membership`, each consumer joins its group as
    a static member `{instance_id}-{consumer name}`; without it, as a dynamic member.

    Defaults that real Kafka accepts: its `group.min.session.timeout.ms` is 6000, so the
    session timeout is 10000 ms, with a heartbeat every 1000 ms (well under a third of it)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topics: Sequence[str],
        partitions: int = 16,
        replication_factor: int = 1,
        enable_idempotence: bool = False,
        client_id: str = "notifi",
        instance_id: str | None = None,
        static_membership: bool = True,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        linger_ms: int = 0,
        request_timeout_ms: int = 10_000,
        publish_timeout_s: float = 5.0,
        heal_interval_s: float = 1.0,
        metadata_max_age_ms: int = 5_000,
        fetch_max_wait_ms: int = 500,
    ) -> None:
        _never_auto_create_topics()
        self._servers = bootstrap_servers
        self._topics = list(topics)
        self._partitions, self._replication = partitions, replication_factor
        self._idempotence = enable_idempotence
        self._client_id = client_id
        self.instance_id, self._static = instance_id, static_membership
        self._session_ms, self._heartbeat_ms = session_timeout_ms, heartbeat_interval_ms
        self._linger_ms, self._request_ms = linger_ms, request_timeout_ms
        self._publish_timeout_s, self._heal_interval_s = publish_timeout_s, heal_interval_s
        self._metadata_max_age_ms = metadata_max_age_ms
        self._fetch_wait_ms = fetch_max_wait_ms
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._watcher: AIOKafkaConsumer | None = None  # group-less: reads end offsets only
        self._watch_task: asyncio.Task[None] | None = None
        self._look_now = asyncio.Event()  # a publish saw a topic missing: look at once
        self._ends: dict[Partition, int] = {}
        self._resets = 0
        self._seen = True  # the last look at the broker succeeded (see `seen`)
        self._reset_hooks: list[ResetHook] = []
        self._tasks: set[asyncio.Task[None]] = set()  # reset hooks and rewinds under way
        self._consumers: weakref.WeakSet[KafkaConsumer] = weakref.WeakSet()  # to nudge
        self._short_warned: set[str] = set()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self._servers,
            client_id=self._client_id,
            request_timeout_ms=self._request_ms,
        )
        await self._admin.start()
        await self._create_topics(self._topics)
        self._producer = await self._new_producer()
        self._watcher = AIOKafkaConsumer(
            bootstrap_servers=self._servers,
            client_id=f"{self._client_id}-watcher",
            group_id=None,
            request_timeout_ms=self._request_ms,
            metadata_max_age_ms=self._metadata_max_age_ms,
        )
        await self._watcher.start()
        try:
            await self._look()  # the baseline of end offsets
        except (KafkaError, TimeoutError):
            self._seen = False
        self._watch_task = asyncio.create_task(self._watch(), name="kafka-bus-watch")

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=self._idempotence,
            linger_ms=self._linger_ms,
            request_timeout_ms=self._request_ms,
            metadata_max_age_ms=self._metadata_max_age_ms,
        )
        await producer.start()
        return producer

    async def _renew_producer(self) -> None:
        """An idempotent producer's id and sequence numbers mean nothing to a broker that lost
        its state (it answers UnknownProducerId / OutOfOrderSequence): start a fresh one."""
        old, self._producer = self._producer, await self._new_producer()
        if old is not None:
            with contextlib.suppress(KafkaError):
                await old.stop()
        log.info("producer_renewed_after_reset")

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        for task in list(self._tasks):
            task.cancel()
        for closing in (self._producer, self._watcher):
            if closing is not None:
                with contextlib.suppress(KafkaError):
                    await closing.stop()
        if self._admin is not None:
            with contextlib.suppress(KafkaError):
                await self._admin.close()
        self._producer = self._watcher = self._admin = None

    async def ping(self) -> bool:
        """The broker answers and has the bus's topics (a metadata request, not the cache)."""
        if self._admin is None:
            return False
        try:
            async with asyncio.timeout(2):
                described = await self._admin.describe_topics(self._topics)
            return all(t["error_code"] == 0 and t["partitions"] for t in described)
        except (KafkaError, TimeoutError):
            return False

    # -- publishing ---------------------------------------------------------------------------

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        if self._producer is None:
            raise BusError("the bus is not started")
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                await self._publish_with_retries(topic, list(messages))
        except TimeoutError:
            raise BusError(
                f"publish to {topic} not acknowledged within {self._publish_timeout_s}s"
            ) from None

    async def _publish_with_retries(
        self, topic: str, pending: list[tuple[bytes | None, bytes]]
    ) -> None:
        """Sends until every message is acknowledged; the caller bounds the total time. Only
        the messages that failed are sent again (a retry may still repeat one whose ack was
        lost: the bus is at-least-once, and consumers tolerate repeats)."""
        attempt = 0
        while pending:
            producer = self._producer  # renewed after a reset: take the current one each try
            if producer is None:
                raise BusError("the bus is stopped")
            # Queue every message first (the producer batches them), then wait for the acks.
            sent: list[tuple[tuple[bytes | None, bytes], asyncio.Future]] = []
            failure: KafkaError | None = None
            for message in pending:
                key, value = message
                try:
                    sent.append((message, await producer.send(topic, value=value, key=key)))
                except KafkaError as exc:
                    failure = exc
                    break
            acks = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            failed = [
                m for (m, _), ack in zip(sent, acks, strict=True) if isinstance(ack, BaseException)
            ]
            failure = failure or next((a for a in acks if isinstance(a, KafkaError)), None)
            for ack in acks:
                if isinstance(ack, BaseException) and not isinstance(ack, KafkaError):
                    raise ack
            pending = failed + pending[len(sent) :]
            if not pending:
                return
            if failure is not None and not _retriable(failure):
                raise BusError(f"publish to {topic} failed: {failure!r}") from failure
            log.info("publish_retry", topic=topic, messages=len(pending), error=repr(failure))
            self._look_now.set()  # maybe the topic is gone: let the watcher look now
            await asyncio.sleep(healing.backoff_s(attempt))
            attempt += 1

    # -- consumers ----------------------------------------------------------------------------

    def consumer(self, topic: str, group: str, *, instance_id: str | None = None) -> KafkaConsumer:
        """`instance_id`: the consumer's name within this process (e.g. the actor's name),
        unique per group in the process; with the bus's own instance id it makes the static
        member id. Without it the consumer is a dynamic member."""
        member = healing.group_instance_id(
            self.instance_id, instance_id, static_membership=self._static
        )
        consumer = KafkaConsumer(
            AIOKafkaConsumer(
                bootstrap_servers=self._servers,
                client_id=self._client_id,
                group_id=group,
                group_instance_id=member,
                enable_auto_commit=False,
                # A partition with no commit, or one whose commit is beyond the end of a log
                # the broker lost, is read from its start: nothing in it is skipped.
                auto_offset_reset="earliest",
                session_timeout_ms=self._session_ms,
                heartbeat_interval_ms=self._heartbeat_ms,
                request_timeout_ms=max(self._request_ms, self._session_ms + 5_000),
                metadata_max_age_ms=self._metadata_max_age_ms,
                # Kafka answers a fetch as soon as a record is there (fetch.min.bytes = 1);
                # tansu holds it for the whole wait, so a long wait is latency on every hop.
                fetch_max_wait_ms=self._fetch_wait_ms,
            ),
            topic,
            group,
            member,
            commit_timeout_s=self._request_ms / 1000,
            broker_seen=lambda: self._seen,
        )
        self._consumers.add(consumer)
        return consumer

    # -- healing ------------------------------------------------------------------------------

    @property
    def resets(self) -> int:
        return self._resets

    @property
    def seen(self) -> bool:
        """Whether the last look at the broker succeeded. After an outage it is False until a
        look has found the broker as it is now (and counted a reset if it lost its logs), so
        consumers commit nothing read before it on the strength of what they knew then."""
        return self._seen

    def on_reset(self, hook: ResetHook) -> None:
        self._reset_hooks.append(hook)

    async def _watch(self) -> None:
        """Looks at the broker every `heal_interval_s` (at once when a publish failed, and
        every `AWAY_LOOK_S` while the broker is away, so its return is seen at once)."""
        while True:
            wait_s = self._heal_interval_s
            if not self._seen:
                wait_s = min(wait_s, AWAY_LOOK_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._look_now.wait()
            self._look_now.clear()
            try:
                async with asyncio.timeout(max(self._heal_interval_s * 3, 3.0)):
                    await self._look()
            except (KafkaError, TimeoutError) as exc:
                self._seen = False  # consumers hold their commits until a look succeeds
                log.debug("bus_watch_failed", error=repr(exc))  # the broker is away: try again
            else:
                self._seen = True  # after the look: a loss it found is known to consumers

    async def _look(self) -> None:
        assert self._admin is not None and self._watcher is not None
        found = {
            t["topic"]: len(t["partitions"])
            for t in await self._admin.describe_topics(self._topics)
            if t["error_code"] == 0 and t["partitions"]
        }
        present = [TopicPartition(t, p) for t, n in found.items() for p in range(n)]
        ends_now: dict[Partition, int] = {}
        if present:
            ends = await self._watcher.end_offsets(present)
            ends_now = {(tp.topic, tp.partition): end for tp, end in ends.items() if end >= 0}
        seen = healing.survey(self._topics, self._partitions, found, self._ends, ends_now)
        # Keep the highest end seen while the log lives; after a loss start again from now.
        self._ends = ends_now if seen.lost_data else {**self._ends, **ends_now}
        if seen.missing:
            await self._create_topics(list(seen.missing))
        for topic in seen.short:
            if topic not in self._short_warned:
                self._short_warned.add(topic)
                log.warning(
                    "topic_has_fewer_partitions",
                    topic=topic,
                    partitions=found[topic],
                    configured=self._partitions,
                    why="created by someone else (broker auto-creation?); not changed",
                )
        if seen.lost_data:
            self._reset(seen)
            if self._idempotence:
                try:
                    await self._renew_producer()
                except KafkaError as exc:  # the old one goes on; publishes fail and retry
                    log.warning("producer_renewal_failed", error=repr(exc))

    def _reset(self, seen: healing.Survey) -> None:
        self._resets += 1
        log.warning(
            "bus_reset",
            resets=self._resets,
            missing_topics=list(seen.missing),
            partitions_went_back=len(seen.went_back),
            why="the broker lost its data: topics re-created, open work must come from Postgres",
        )
        lost = seen.lost_logs(self._partitions)
        for consumer in self._consumers:
            consumer.lost(lost)  # before anything awaits: a revoke hook may commit next
            consumer.refresh_metadata()
            self._spawn(consumer.rewind(lost), "bus-reset-rewind")
        for hook in self._reset_hooks:
            self._spawn(self._run_hook(hook), "bus-reset-hook")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _run_hook(hook: ResetHook) -> None:
        try:
            await hook()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bus_reset_hook_failed")

    async def _create_topics(self, topics: list[str]) -> None:
        assert self._admin is not None
        existing = set(await self._admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        new = [NewTopic(t, self._partitions, self._replication) for t in missing]
        try:
            await self._admin.create_topics(new)
            log.info("topics_created", topics=missing, partitions=self._partitions)
        except TopicAlreadyExistsError:
            pass  # another process won the race


def _retriable(exc: KafkaError) -> bool:
    # A metadata wait that timed out (topic missing, broker away) is worth another try too.
    return exc.retriable or isinstance(exc, KafkaTimeoutError)
