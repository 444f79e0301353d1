"""The resources of one Notifi process: Postgres (created and migrated on first start), the
bus, Redis claims and the HTTP client sessions, opened before the actors and closed after
them; plus the process's readiness and drain flag. Knows no actor."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack

import aiohttp
import redis.asyncio as aioredis
import structlog

from notifi.bus import Bus, KafkaBus, MemoryBus, topic_names
from notifi.claims import Claims
from notifi.destination_limits import DestinationLimits
from notifi.destinations.http_client import HttpClient
from notifi.destinations.network import AddressPolicy
from notifi.marks import ChangeMarks
from notifi.plan import Plan
from notifi.settings import Settings
from notifi.store import Store
from notifi.store.migrate import prepare_database

log = structlog.get_logger(__name__)


class Process:
    """The resources of one Notifi process, opened before its actors and closed after."""

    def __init__(self, settings: Settings, plan: Plan) -> None:
        self.settings, self.plan = settings, plan
        # The incarnation: new at every start, so this run's claims are told from those of a
        # dead predecessor with the same instance id (which it may take over: notifi.claims).
        self.token = uuid.uuid4().hex[:12]
        self.topics = topic_names(settings.kafka.topic_prefix)
        self._stack = AsyncExitStack()
        self.store: Store
        self.bus: Bus
        self.claims: Claims | None = None  # delivery role only
        self.marks: ChangeMarks | None = None  # api and delivery roles (notifi.marks)
        self.limits: DestinationLimits | None = None  # delivery role only: shared rate limits
        self.policy: AddressPolicy  # delivery role only
        self.http: HttpClient  # delivery role only: sends to destinations
        self.api_http: aiohttp.ClientSession  # api role only: fetches the Access JWKS
        self.draining = False

    async def open(self) -> None:
        s = self.settings
        await prepare_database(s.postgres.dsn)
        self.store = await Store.open(
            s.postgres.dsn,
            min_size=s.postgres.pool_min,
            max_size=s.postgres.pool_max,
            command_timeout=s.postgres.command_timeout,
        )
        self._stack.push_async_callback(self.store.close)
        if s.bus.kind == "memory":
            self.bus = MemoryBus()
        else:
            self.bus = KafkaBus(
                s.kafka.bootstrap_servers,
                topics=[self.topics.notifications, self.topics.deliveries, self.topics.events],
                partitions=s.kafka.partitions,
                replication_factor=s.kafka.replication_factor,
                enable_idempotence=s.kafka.enable_idempotence,
                session_timeout_ms=s.kafka.session_timeout_ms,
                heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
                # Consumers join as static members `{instance_id}-{actor name}`, so a restarted
                # process takes its predecessor's partitions at once (KIP-345).
                instance_id=self.plan.instance_id,
                static_membership=s.kafka.static_membership,
                publish_timeout_s=s.kafka.publish_timeout,
                fetch_max_wait_ms=s.kafka.fetch_max_wait_ms,
                linger_ms=s.kafka.linger_ms,
            )
        await self.bus.start()
        self._stack.push_async_callback(self.bus.stop)
        if "delivery" in self.plan.roles or "api" in self.plan.roles:
            redis = await self._open_redis()
            self.marks = ChangeMarks(redis, prefix=s.redis.key_prefix)
            self._stack.push_async_callback(self.marks.close)
        if "delivery" in self.plan.roles:
            self._open_delivery(redis)
        if "api" in self.plan.roles:
            assert self.marks is not None
            self.marks.start()  # a predecessor may have died owing a raise of marks-since
            self.api_http = aiohttp.ClientSession()
            self._stack.push_async_callback(self.api_http.close)

    async def _open_redis(self) -> aioredis.Redis:
        s = self.settings
        redis = aioredis.from_url(
            s.redis.url,
            socket_timeout=s.redis.socket_timeout,
            socket_connect_timeout=s.redis.socket_timeout,
        )
        self._stack.push_async_callback(redis.aclose)
        try:
            await redis.ping()
        except (aioredis.RedisError, OSError) as exc:
            log.warning(
                "redis_unreachable_at_start",
                url=s.redis.url,
                error=str(exc),
                fallback="claims use Postgres, and jobs due while Postgres is away wait for it",
            )
        return redis

    def _open_delivery(self, redis: aioredis.Redis) -> None:
        s = self.settings
        self.claims = Claims(
            redis,
            self.store,
            prefix=s.redis.key_prefix,
            claim_ttl_s=s.delivery.claim_ttl,
            delivered_ttl_s=s.delivery.delivered_ttl,
        )
        self.limits = DestinationLimits(redis, prefix=s.redis.key_prefix)
        self.policy = AddressPolicy(s.delivery.allowed_networks)
        self.http = HttpClient(
            self.policy,
            limit=s.delivery.max_connections,
            limit_per_host=s.delivery.max_connections_per_host,
        )
        self._stack.push_async_callback(self.http.close)

    async def close(self) -> None:
        await self._stack.aclose()

    async def readiness(self, actors_running: Callable[[], bool]) -> dict[str, bool]:
        return {
            "accepting": not self.draining,
            "postgres": await self.store.ping(),
            "bus": await self.bus.ping(),
            "actors": actors_running(),
        }
