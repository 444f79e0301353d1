"""The supervision tree of each role: the child specs a process runs for its plan, in start
order, over the resources its `Process` opened; and the sampler that sets the gauges."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors.api import AcceptWriter, Republisher, Unpublished, submit
from actors.delivery import DeliveryWorker
from actors.delivery_consumer import DeliveryConsumer
from actors.http import HttpServer
from actors.poller import Backstop, Poller
from actors.recorder import Recorder
from actors.router import Router
from actors.sweeper import Sweeper
from notifi import metrics
from notifi.api.app import ApiContext, build_app
from notifi.api.health import health_app
from notifi.api.limits import Limits
from notifi.api.validation import Validator
from notifi.auth import authenticator
from notifi.destinations.base import Sender
from notifi.destinations.chat import PAYLOADS, ChatSender
from notifi.destinations.email import EmailSender
from notifi.destinations.network import AddressPolicy
from notifi.destinations.webhook import WebhookSender
from notifi.hosts import HostGate
from notifi.partitions import split
from notifi.process import Process
from notifi.ratelimit import RateLimiter
from notifi.retry import RetryPolicy
from notifi.runtime import Actor, ChildSpec, Mailbox, Restart
from notifi.store.retention import RetentionPolicy, RetentionStore

Ready = Callable[[], Awaitable[dict[str, bool]]]
Probe = Callable[[], None]  # sets one sampled gauge


class Sampler(Actor):
    """Sets the process's sampled gauges (mailbox depths, open breakers) once a second."""

    def __init__(self, probes: list[Probe]) -> None:
        super().__init__("sampler")
        self._probes = probes

    async def run(self) -> None:
        while not self.should_stop:
            for probe in self._probes:
                probe()
            await self.sleep(1.0)


def depth_probe(box: Mailbox) -> Probe:
    """A probe that reports how full `box` is."""
    return lambda: metrics.mailbox_depth.set({"mailbox": box.name}, box.qsize())


def children(process: Process, ready: Ready) -> list[ChildSpec]:
    """Child specs in start order: sinks before sources, so a drain (reverse order) stops
    taking work first and finishes what is in hand last."""
    s, roles = process.settings, process.plan.roles
    probes: list[Probe] = []
    specs: list[ChildSpec] = []
    if "api" not in roles:
        specs.append(
            ChildSpec(
                "metrics-server",
                lambda: HttpServer(
                    "metrics-server",
                    lambda: health_app(ready),
                    s.metrics.host,
                    s.metrics.port,
                    header_timeout_s=s.api.header_timeout,
                ),
            )
        )
    if "delivery" in roles:
        specs += _delivery(process, probes)
    if "poller" in roles:
        specs += _poller(process)
    if "router" in roles:
        specs += _router(process)
    if "api" in roles:
        specs += _api(process, ready, probes)
    specs.append(ChildSpec("sampler", lambda: Sampler(probes), Restart.TRANSIENT))
    return specs


def _delivery(process: Process, probes: list[Probe]) -> list[ChildSpec]:
    s, topics, store, bus = process.settings, process.topics, process.store, process.bus
    claims = process.claims
    assert claims is not None  # opened for the delivery role
    timeout = s.supervisor.shutdown_timeout
    work: Mailbox = Mailbox("delivery-work", s.delivery.mailbox)
    records: Mailbox = Mailbox("delivery-records", s.delivery.mailbox)
    probes += [depth_probe(work), depth_probe(records)]
    policy = RetryPolicy.of(s.delivery.retry_schedule, s.delivery.retry_jitter)
    webhook = WebhookSender(process.http, s.delivery.timeout)
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
    probes.append(lambda: metrics.breakers_open.set({}, gate.open_hosts()))
    # One call after another each: a connection held apiece (notifi.store.held). The workers
    # share the pool: their state re-checks and Postgres claims are concurrent.
    recorder_store, consumer_store = store.holding(), store.holding()
    specs = [
        ChildSpec(
            "recorder",
            lambda: Recorder(
                "recorder",
                records,
                store=recorder_store,
                claims=claims,
                batch=s.delivery.record_batch,
                linger_s=s.delivery.record_linger_ms / 1000,
                bus=bus,
                events_topic=topics.events,
            ),
            shutdown_timeout_s=timeout,
        )
    ]
    for i in range(process.plan.delivery_workers):
        specs.append(
            ChildSpec(
                f"worker-{i}",
                lambda i=i: DeliveryWorker(
                    f"worker-{i}",
                    work,
                    records,
                    store=store,
                    claims=claims,
                    senders=senders,
                    policy=policy,
                    claim_ttl_s=s.delivery.claim_ttl,
                    gate=gate,
                    limits=process.limits,
                    disable_after_s=s.delivery.disable_after,
                    marks=process.marks,
                ),
                shutdown_timeout_s=timeout,
            )
        )
    specs.append(
        ChildSpec(
            "delivery-consumer",
            lambda: DeliveryConsumer(
                "delivery-consumer",
                bus,
                consumer_store,
                work,
                topic=topics.deliveries,
                group=f"{s.kafka.topic_prefix}-delivery",
                fetch_max=s.kafka.fetch_max_records,
                instance_id=process.plan.instance_id,
                process_token=process.token,
                drain_timeout_s=timeout * 0.8,
                requeue=records,
            ),
            shutdown_timeout_s=timeout,
        )
    )
    return specs


def _poller(process: Process) -> list[ChildSpec]:
    s, store, bus = process.settings, process.store, process.bus
    lo, hi = process.plan.partitions
    specs = [
        ChildSpec(
            f"poller-{i}",
            lambda a=a, b=b, i=i: Poller(
                f"poller-{i}",
                bus,
                store,
                lo=a,
                hi=b,
                target=process.topics.deliveries,
                interval_s=s.poller.interval,
                batch=s.poller.batch,
                lookahead_s=s.poller.lookahead,
            ),
        )
        for i, (a, b) in enumerate(split(lo, hi, process.plan.pollers))
    ]
    specs.append(
        ChildSpec(
            "backstop",
            lambda: Backstop(
                "backstop",
                store,
                lo=lo,
                hi=hi,
                interval_s=s.poller.backstop_interval,
                grace_s=s.poller.backstop_grace,
                idempotency_retention_s=s.api.idempotency_retention,
                batch=s.poller.batch,
                # The broker lost its data: re-queue from Postgres at once, not after the grace.
                bus_resets=lambda: bus.resets,
                reset_lookahead_s=max(s.poller.interval, s.poller.lookahead),
            ),
        )
    )
    specs.append(
        ChildSpec(
            "sweeper",
            lambda: Sweeper(
                "sweeper",
                RetentionStore(store.pool),
                lo=lo,
                hi=hi,
                policy=RetentionPolicy(
                    delivered_s=s.retention.delivered, failed_s=s.retention.failed
                ),
                interval_s=s.retention.interval,
                batch=s.retention.batch,
            ),
        )
    )
    return specs


def _router(process: Process) -> list[ChildSpec]:
    s, topics = process.settings, process.topics
    # Each router makes one call after another: a connection held apiece (notifi.store.held).
    stores = [process.store.holding() for _ in range(process.plan.router_consumers)]
    return [
        ChildSpec(
            f"router-{i}",
            lambda i=i, store=store: Router(
                f"router-{i}",
                process.bus,
                store,
                source=topics.notifications,
                group=f"{s.kafka.topic_prefix}-router",
                target=topics.deliveries,
                horizon_s=max(s.poller.interval, s.poller.lookahead),
                fetch_max=s.kafka.fetch_max_records,
            ),
        )
        for i, store in enumerate(stores)
    ]


def _api(process: Process, ready: Ready, probes: list[Probe]) -> list[ChildSpec]:
    s = process.settings
    timeout = s.supervisor.shutdown_timeout
    inbox: Mailbox = Mailbox("accept", s.api.accept_batch * 4)
    unpublished = Unpublished()
    probes.append(depth_probe(inbox))
    limits = Limits(
        s.api.max_destinations,
        s.api.max_title_chars,
        s.api.max_body_chars,
        s.api.max_data_bytes,
        s.api.max_bulk,
        max_data_depth=s.api.max_data_depth,
    )
    ctx = ApiContext(
        store=process.store,
        validator=Validator(limits, s.destinations, s.poller.partitions),
        submit=lambda n: submit(inbox, n),
        ready=ready,
        default_page_size=s.api.default_page_size,
        max_page_size=s.api.max_page_size,
        auth=authenticator(s.auth, process.api_http),
        limiter=RateLimiter(s.api.rate_limit, s.api.rate_burst),
        max_body_bytes=s.api.max_body_bytes,
        body_timeout_s=s.api.body_timeout,
        metric_clients=frozenset(c["id"] for c in s.auth.clients) | {"anonymous"},
        # Stored destinations meet the sender's address policy when they are created.
        address_policy=AddressPolicy(s.delivery.allowed_networks),
        rotation_overlap_s=s.delivery.rotation_overlap,
        max_stored_destinations=s.api.max_stored_destinations,
        marks=process.marks,
    )
    writer_store = process.store.holding()  # one batch after another: a connection held
    return [
        ChildSpec(
            "accept-writer",
            lambda: AcceptWriter(
                inbox,
                writer_store,
                process.bus,
                process.topics.notifications,
                s.api.accept_batch,
                s.api.accept_linger_ms / 1000,
                unpublished,
                linger_batch=s.api.accept_linger_batch,
            ),
            shutdown_timeout_s=timeout,
        ),
        ChildSpec(
            "accept-republisher",
            lambda: Republisher(
                unpublished, process.bus, process.topics.notifications, s.api.accept_batch
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
                header_timeout_s=s.api.header_timeout,
            ),
            shutdown_timeout_s=timeout,
        ),
    ]
