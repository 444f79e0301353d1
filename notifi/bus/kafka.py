"""The bus over Kafka (aiokafka): topics created when missing, batched acknowledged publishes,
consumers with manual commits only."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)

from notifi.bus.base import BusError, Record

log = structlog.get_logger(__name__)


class KafkaBus:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topics: Sequence[str],
        partitions: int = 16,
        replication_factor: int = 1,
        enable_idempotence: bool = False,
        client_id: str = "notifi",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        linger_ms: int = 2,
        request_timeout_ms: int = 10_000,
    ) -> None:
        self._servers = bootstrap_servers
        self._topics = list(topics)
        self._partitions, self._replication = partitions, replication_factor
        self._idempotence = enable_idempotence
        self._client_id = client_id
        self._session_ms, self._heartbeat_ms = session_timeout_ms, heartbeat_interval_ms
        self._linger_ms, self._request_ms = linger_ms, request_timeout_ms
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        await self._create_topics()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=self._idempotence,
            linger_ms=self._linger_ms,
            request_timeout_ms=self._request_ms,
        )
        await self._producer.start()

    async def _create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._servers, client_id=self._client_id)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in self._topics if t not in existing]
            if missing:
                new = [NewTopic(t, self._partitions, self._replication) for t in missing]
                try:
                    await admin.create_topics(new)
                    log.info("topics_created", topics=missing)
                except TopicAlreadyExistsError:
                    pass  # another process won the race
        finally:
            await admin.close()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ping(self) -> bool:
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(2):
                await self._producer.partitions_for(self._topics[0])
            return True
        except (KafkaError, TimeoutError):
            return False

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        if self._producer is None:
            raise BusError("the bus is not started")
        try:
            # Queue every message first (the producer batches them), then wait for the acks.
            acks = [await self._producer.send(topic, value=v, key=k) for k, v in messages]
            await asyncio.gather(*acks)
        except KafkaError as exc:
            raise BusError(f"publish to {topic} failed: {exc!r}") from exc

    def consumer(self, topic: str, group: str) -> KafkaConsumer:
        return KafkaConsumer(
            AIOKafkaConsumer(
                topic,
                bootstrap_servers=self._servers,
                client_id=self._client_id,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=self._session_ms,
                heartbeat_interval_ms=self._heartbeat_ms,
            )
        )


class KafkaConsumer:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()  # leaves the group, so the rebalance is quick

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    async def fetch(self, max_records: int, timeout_s: float) -> list[Record]:
        batches = await self._consumer.getmany(
            timeout_ms=int(timeout_s * 1000), max_records=max_records
        )
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value)
            for messages in batches.values()
            for m in messages
        ]

    async def lag(self) -> int | None:
        total = 0
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:
                return None  # not fetched yet
            total += max(end - await self._consumer.position(tp), 0)
        return total

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        owned = self._consumer.assignment()
        mine = {
            tp: offset
            for (topic, partition), offset in offsets.items()
            if (tp := TopicPartition(topic, partition)) in owned
        }
        if len(mine) < len(offsets):
            log.info("commit_skipped_revoked", partitions=len(offsets) - len(mine))
        if not mine:
            return
        try:
            await self._consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partition: its new owner re-reads from the last commit.
            log.warning("commit_failed_rebalance", error=str(exc))
