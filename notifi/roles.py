"""What each role is made of: the shared resources a process opens (Postgres, the bus, Redis,
one HTTP client session) and the child specs of its supervision tree."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
import structlog

from actors.api import AcceptWriter, submit
from actors.delivery import DeliveryConsumer, DeliveryWorker, Recorder
from actors.http import HttpServer
from actors.poller import Backstop, Poller
from actors.router import Router
from notifi import metrics
from notifi.api.app import ApiContext, build_app
from notifi.api.health import health_app
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.auth import authenticator
from notifi.bus import Bus, KafkaBus, MemoryBus, topic_names
from notifi.claims import Claims
from notifi.destinations.base import Sender
from notifi.destinations.chat import PAYLOADS, ChatSender
from notifi.destinations.email import EmailSender
from notifi.destinations.network import AddressPolicy
from notifi.destinations.webhook import WebhookSender, make_session
from notifi.hosts import HostGate
from notifi.ratelimit import RateLimiter
from notifi.retry import RetryPolicy
from notifi.runtime import Actor, ChildSpec, Mailbox, Restart
from notifi.settings import Settings, SettingsError
from notifi.store import Store, ensure_database, migrate

log = structlog.get_logger(__name__)

ROLES = ("api", "router", "poller", "delivery")


@dataclass(frozen=True, slots=True)
class Plan:
    """What this process runs: from flags, over settings."""

    roles: frozenset[str]
    router_consumers: int
    delivery_workers: int
    pollers: int
    partitions: tuple[int, int]  # inclusive range of partition keys this process polls


def split(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """Splits [lo, hi] into `parts` contiguous ranges of near-equal size."""
    size = hi - lo + 1
    parts = max(1, min(parts, size))
    bounds = [lo + size * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]


def check(settings: Settings, plan: Plan) -> None:
    if settings.bus.kind == "memory" and plan.roles != frozenset(ROLES):
        raise SettingsError(
            "bus.kind = memory keeps the topics inside one process, so it needs every role "
            "there (--roles all); to run roles as separate processes set bus.kind = kafka "
            "and kafka.bootstrap_servers"
        )
    if "api" in plan.roles:
        authenticator(settings.auth, session=None)  # type: ignore[arg-type]  # checks settings
    loopback = settings.api.host in ("127.0.0.1", "::1", "localhost")
    if settings.auth.mode == "none" and "api" in plan.roles and not loopback:
        raise SettingsError(
            "auth.mode = none is allowed only while api.host is a loopback address "
            f"(got {settings.api.host!r}); choose tokens or cloudflare to listen wider"
        )


class Sampler(Actor):
    """Sets the process's sampled gauges (mailbox depths, open breakers) once a second."""

    def __init__(self, probes: list[Callable[[], None]]) -> None:
        super().__init__("sampler")
        self._probes = probes

    async def run(self) -> None:
        while not self.should_stop:
            for probe in self._probes:
                probe()
            await self.sleep(1.0)


class Process:
    """The resources of one Notifi process, opened before its actors and closed after."""

    def __init__(self, settings: Settings, plan: Plan) -> None:
        self.settings, self.plan = settings, plan
        self.token = uuid.uuid4().hex[:12]
        self.topics = topic_names(settings.kafka.topic_prefix)
        self._stack = AsyncExitStack()
        self.store: Store
        self.bus: Bus
        self.claims: Claims | None = None
        self.draining = False
        self.probes: list[Callable[[], None]] = []

    async def open(self) -> None:
        s = self.settings
        await ensure_database(s.postgres.dsn)
        self.store = await Store.open(
            s.postgres.dsn,
            min_size=s.postgres.pool_min,
            max_size=s.postgres.pool_max,
            command_timeout=s.postgres.command_timeout,
        )
        self._stack.push_async_callback(self.store.close)
        async with self.store.pool.acquire() as conn:
            await migrate(conn)
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
            )
        await self.bus.start()
        self._stack.push_async_callback(self.bus.stop)
        if "delivery" in self.plan.roles:
            await self._open_delivery()
        if "api" in self.plan.roles:
            self.api_http = aiohttp.ClientSession()  # fetches the Access JWKS
            self._stack.push_async_callback(self.api_http.close)

    async def _open_delivery(self) -> None:
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
                fallback="delivery claims use Postgres until Redis is back",
            )
        self.claims = Claims(
            redis,
            self.store,
            prefix=s.redis.key_prefix,
            claim_ttl_s=s.delivery.claim_ttl,
            delivered_ttl_s=s.delivery.delivered_ttl,
        )
        self.policy = AddressPolicy(s.delivery.allowed_networks)
        self.http = make_session(
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

    def children(self, ready: Callable[[], Awaitable[dict[str, bool]]]) -> list[ChildSpec]:
        """Child specs in start order: sinks before sources, so a drain (reverse order) stops
        taking work first and finishes what is in hand last."""
        s, plan, topics = self.settings, self.plan, self.topics
        timeout = s.supervisor.shutdown_timeout
        specs: list[ChildSpec] = []
        if "api" not in plan.roles:
            specs.append(
                ChildSpec(
                    "metrics-server",
                    lambda: HttpServer(
                        "metrics-server", lambda: health_app(ready), s.metrics.host, s.metrics.port
                    ),
                )
            )
        if "delivery" in plan.roles:
            specs += self._delivery_children(timeout)
        if "poller" in plan.roles:
            lo, hi = plan.partitions
            for i, (a, b) in enumerate(split(lo, hi, plan.pollers)):
                specs.append(
                    ChildSpec(
                        f"poller-{i}",
                        lambda a=a, b=b, i=i: Poller(
                            f"poller-{i}",
                            self.bus,
                            self.store,
                            lo=a,
                            hi=b,
                            target=topics.deliveries,
                            interval_s=s.poller.interval,
                            batch=s.poller.batch,
                        ),
                    )
                )
            specs.append(
                ChildSpec(
                    "backstop",
                    lambda: Backstop(
                        "backstop",
                        self.store,
                        lo=lo,
                        hi=hi,
                        interval_s=s.poller.backstop_interval,
                        grace_s=s.poller.backstop_grace,
                        idempotency_retention_s=s.api.idempotency_retention,
                        batch=s.poller.batch,
                    ),
                )
            )
        if "router" in plan.roles:
            for i in range(plan.router_consumers):
                specs.append(
                    ChildSpec(
                        f"router-{i}",
                        lambda i=i: Router(
                            f"router-{i}",
                            self.bus,
                            self.store,
                            source=topics.notifications,
                            group=f"{s.kafka.topic_prefix}-router",
                            target=topics.deliveries,
                            horizon_s=s.poller.interval,
                            fetch_max=s.kafka.fetch_max_records,
                        ),
                    )
                )
        if "api" in plan.roles:
            specs += self._api_children(ready, timeout)
        specs.append(ChildSpec("sampler", lambda: Sampler(self.probes), Restart.TRANSIENT))
        return specs

    def _sample(self, box: Mailbox) -> None:
        self.probes.append(lambda: metrics.mailbox_depth.set({"mailbox": box.name}, box.qsize()))

    def _delivery_children(self, timeout: float) -> list[ChildSpec]:
        s, topics = self.settings, self.topics
        assert self.claims is not None
        work: Mailbox = Mailbox("delivery-work", s.delivery.mailbox)
        records: Mailbox = Mailbox("delivery-records", s.delivery.mailbox)
        self._sample(work)
        self._sample(records)
        policy = RetryPolicy.of(s.delivery.retry_schedule, s.delivery.retry_jitter)
        webhook = WebhookSender(self.http, self.policy, s.delivery.timeout)
        senders: dict[str, Sender] = {
            "webhook": webhook,
            "email": EmailSender(s.smtp, s.delivery.timeout),
            **{kind: ChatSender(webhook, kind) for kind in PAYLOADS},
        }
        gate = HostGate(
            max_in_flight=s.delivery.max_in_flight_per_host,
            failure_threshold=s.delivery.breaker_threshold,
            cooldown_s=s.delivery.breaker_cooldown,
            max_cooldown_s=s.delivery.breaker_max_cooldown,
        )
        self.probes.append(lambda: metrics.breakers_open.set({}, gate.open_hosts()))
        specs = [
            ChildSpec(
                "recorder",
                lambda: Recorder(
                    "recorder",
                    records,
                    store=self.store,
                    claims=self.claims,
                    batch=s.delivery.record_batch,
                    bus=self.bus,
                    events_topic=topics.events,
                ),
                shutdown_timeout_s=timeout,
            )
        ]
        for i in range(self.plan.delivery_workers):
            specs.append(
                ChildSpec(
                    f"worker-{i}",
                    lambda i=i: DeliveryWorker(
                        f"worker-{i}",
                        work,
                        records,
                        store=self.store,
                        claims=self.claims,
                        senders=senders,
                        policy=policy,
                        claim_ttl_s=s.delivery.claim_ttl,
                        gate=gate,
                    ),
                    shutdown_timeout_s=timeout,
                )
            )
        specs.append(
            ChildSpec(
                "delivery-consumer",
                lambda: DeliveryConsumer(
                    "delivery-consumer",
                    self.bus,
                    self.store,
                    work,
                    topic=topics.deliveries,
                    group=f"{s.kafka.topic_prefix}-delivery",
                    fetch_max=s.kafka.fetch_max_records,
                    process_token=self.token,
                    drain_timeout_s=timeout * 0.8,
                ),
                shutdown_timeout_s=timeout,
            )
        )
        return specs

    def _api_children(
        self, ready: Callable[[], Awaitable[dict[str, bool]]], timeout: float
    ) -> list[ChildSpec]:
        s = self.settings
        inbox: Mailbox = Mailbox("accept", s.api.accept_batch * 4)
        self._sample(inbox)
        limits = Limits(
            s.api.max_destinations,
            s.api.max_title_chars,
            s.api.max_body_chars,
            s.api.max_data_bytes,
            s.api.max_bulk,
        )
        ctx = ApiContext(
            store=self.store,
            validator=Validator(limits, s.destinations, s.poller.partitions),
            submit=lambda n: submit(inbox, n),
            ready=ready,
            default_page_size=s.api.default_page_size,
            max_page_size=s.api.max_page_size,
            auth=authenticator(s.auth, self.api_http),
            limiter=RateLimiter(s.api.rate_limit, s.api.rate_burst),
            max_body_bytes=s.api.max_body_bytes,
            metric_clients=frozenset(c["id"] for c in s.auth.clients) | {"anonymous"},
        )
        return [
            ChildSpec(
                "accept-writer",
                lambda: AcceptWriter(
                    inbox,
                    self.store,
                    self.bus,
                    self.topics.notifications,
                    s.api.accept_batch,
                    s.api.accept_linger_ms / 1000,
                ),
                shutdown_timeout_s=timeout,
            ),
            ChildSpec(
                "api",
                lambda: HttpServer(
                    "api",
                    lambda: build_app(ctx, s.api.max_bulk_body_bytes),
                    s.api.host,
                    s.api.port,
                    shutdown_timeout_s=timeout / 2,
                ),
                shutdown_timeout_s=timeout,
            ),
        ]
