"""Prometheus metrics of every role, in one registry per process (names in Prometheus style:
base units, `_total` counters, bounded label values)."""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate
from typing import Any

import aioprometheus
from aioprometheus import Registry
from aioprometheus.histogram import POS_INF
from aioprometheus.renderer import render

REGISTRY = Registry()


class _KeyedOnce:
    """aioprometheus checks a label set's names and encodes it as a JSON key on every call, and
    a counter's `add` reads and writes, so twice: about 5 µs a call in the running service, a few
    calls per notification (14-17 µs of the API's 116-139 µs per POST, measured alone). This
    checks and encodes each label set once and keeps its key; label values are bounded, so the
    keys kept are as many as the series."""

    values: Any  # aioprometheus's MetricDict

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keys: dict[tuple[tuple[str, str], ...], Any] = {}

    def _key(self, labels: dict[str, str]) -> Any:
        items = tuple(labels.items())
        key = self._keys.get(items)
        if key is None:
            if labels:
                self._check_labels(labels)  # type: ignore[attr-defined]
            key = self._keys[items] = self.values.__keytransform__(labels)
        return key

    def get_value(self, labels: Any) -> Any:
        if not isinstance(labels, dict):  # the renderer passes the keys it found back
            return super().get_value(labels)  # type: ignore[misc]
        return self.values.store[self._key(labels)]

    def set_value(self, labels: Any, value: Any) -> None:
        if not isinstance(labels, dict):
            super().set_value(labels, value)  # type: ignore[misc]
            return
        self.values.store[self._key(labels)] = value


class Counter(_KeyedOnce, aioprometheus.Counter):
    """`inc` and `add` read and write the series' value in one step (aioprometheus goes through
    `get_value`, a KeyError for a new series, and `set_value`)."""

    def inc(self, labels: dict[str, str]) -> None:
        self.add(labels, 1)

    def add(self, labels: dict[str, str], value: float) -> None:
        if value < 0:
            raise ValueError("Counters can't decrease")
        store, key = self.values.store, self._key(labels)
        store[key] = store.get(key, 0) + value


class Gauge(_KeyedOnce, aioprometheus.Gauge):
    pass


class _Series:
    """One series of a histogram. An observation is one bisection and one increment, where
    aioprometheus's walks every bucket and increments each it falls under (14 here: 1.8 against
    0.2 µs alone, three or four observations a webhook); the cumulative counts the renderer
    reads (`buckets`, as aioprometheus's) are summed when read."""

    __slots__ = ("_bounds", "_counts", "observations", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds  # sorted upper bounds, the last +Inf
        self._counts = [0] * len(bounds)  # observations per bucket, not cumulative
        self.observations = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        if value == value:  # NaN falls in no bucket (as in aioprometheus), only the sum
            self._counts[bisect_left(self._bounds, value)] += 1
        self.observations += 1
        self.sum += value

    @property
    def buckets(self) -> dict[float, int]:
        """Upper bound -> observations at or below it."""
        return dict(zip(self._bounds, accumulate(self._counts), strict=True))


class Histogram(_KeyedOnce, aioprometheus.Histogram):
    """`observe` finds the series in one step (as Counter's `add` does) and bisects its
    buckets (`_Series`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bounds = [float(b) for b in self.upper_bounds]
        if bounds != sorted(bounds):  # as aioprometheus refuses them
            raise ValueError("Buckets not in sorted order")
        self._bounds = tuple(bounds) if bounds[-1:] == [POS_INF] else (*bounds, POS_INF)

    def observe(self, labels: dict[str, str], value: float) -> None:
        if type(value) not in (float, int):
            raise TypeError("Histogram only works with digits (int, float)")
        store, key = self.values.store, self._key(labels)
        if (h := store.get(key)) is None:
            h = store[key] = _Series(self._bounds)
        h.observe(float(value))

    add = observe


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

api_requests = Counter(
    "notifi_api_requests_total", "API requests by route, method and status.", registry=REGISTRY
)
api_latency = Histogram(
    "notifi_api_request_duration_seconds",
    "API request latency by route.",
    registry=REGISTRY,
    buckets=_LATENCY_BUCKETS,
)
accepted = Counter(
    "notifi_notifications_accepted_total", "Notifications accepted.", registry=REGISTRY
)
routed = Counter(
    "notifi_notifications_routed_total",
    "Delivery jobs routed, by route (immediate or scheduled).",
    registry=REGISTRY,
)
dispatched = Counter(
    "notifi_poller_dispatched_total", "Outbox rows dispatched by pollers.", registry=REGISTRY
)
poller_lag = Gauge(
    "notifi_poller_lag_seconds",
    "Age of the oldest due outbox row in a poller's range.",
    registry=REGISTRY,
)
backstop_requeued = Counter(
    "notifi_backstop_requeued_total",
    "Work the back-stop re-queued, by kind (unrouted or stuck).",
    registry=REGISTRY,
)
delivery_attempts = Counter(
    "notifi_delivery_attempts_total",
    "Delivery attempts by channel and outcome.",
    registry=REGISTRY,
)
delivery_latency = Histogram(
    "notifi_delivery_duration_seconds",
    "Duration of one delivery attempt, by channel.",
    registry=REGISTRY,
    buckets=_LATENCY_BUCKETS,
)
delivery_lateness = Histogram(
    "notifi_delivery_lateness_seconds",
    "Delay between a job's due time and the start of its attempt.",
    registry=REGISTRY,
    buckets=_LATENCY_BUCKETS,
)
retries_scheduled = Counter(
    "notifi_delivery_retries_scheduled_total", "Retries scheduled.", registry=REGISTRY
)
deliveries_failed = Counter(
    "notifi_deliveries_failed_total",
    "Deliveries ended failed, by reason (permanent or exhausted).",
    registry=REGISTRY,
)
delivery_errors = Counter(
    "notifi_delivery_errors_total",
    "Attempts whose rendering or sending raised (ended as permanent failures), by channel.",
    registry=REGISTRY,
)
deliveries_quarantined = Counter(
    "notifi_deliveries_quarantined_total",
    "Jobs set aside as failed after repeatedly crashing a delivery worker, by channel.",
    registry=REGISTRY,
)
claims_skipped = Counter(
    "notifi_delivery_claims_skipped_total",
    "Jobs not sent because of a claim, by reason (delivered or busy).",
    registry=REGISTRY,
)
deferred = Counter(
    "notifi_delivery_deferred_total",
    "Jobs sent back to the outbox unattempted, by breaker state (closed: at the per-host bound).",
    registry=REGISTRY,
)
breakers_open = Gauge(
    "notifi_delivery_breakers_open", "Hosts whose circuit breaker is open.", registry=REGISTRY
)
consumer_lag = Gauge(
    "notifi_consumer_lag_messages",
    "Messages a consumer group member is behind on the partitions it owns, by group.",
    registry=REGISTRY,
)
consumer_set_aside = Counter(
    "notifi_consumer_set_aside_total",
    "Messages a consumer set aside (acked unhandled: undecodable or unhandled), by group, reason.",
    registry=REGISTRY,
)
claims_taken_over = Counter(
    "notifi_delivery_claims_taken_over_total",
    "Claims taken over from a dead predecessor of the same instance (not waiting claim_ttl).",
    registry=REGISTRY,
)
mailbox_depth = Gauge(
    "notifi_mailbox_depth", "Messages waiting in an actor's mailbox.", registry=REGISTRY
)
dependency_outages = Counter(
    "notifi_dependency_outages_total",
    "Times a dependency (postgres, bus) went away under an actor, once per outage, by actor.",
    registry=REGISTRY,
)
retention_removed = Counter(
    "notifi_retention_removed_total",
    "Rows the retention sweep removed, by table.",
    registry=REGISTRY,
)
deliveries_expired = Counter(
    "notifi_deliveries_expired_total",
    "Deliveries ended expired, by stage: due (the expiry came before an attempt) or retry (the "
    "next attempt would have started after it).",
    registry=REGISTRY,
)
jobs_moved = Counter(
    "notifi_delivery_jobs_moved_total",
    "Jobs published for a schedule a PATCH moved later, sent back to the outbox for the new time.",
    registry=REGISTRY,
)
rechecks_vouched = Counter(
    "notifi_delivery_rechecks_vouched_total",
    "Jobs loaded early sent while Postgres was away, vouched for by Redis's change marks.",
    registry=REGISTRY,
)
jobs_held = Gauge(
    "notifi_delivery_jobs_held",
    "Jobs loaded ahead of their due time, held by the delivery consumer's timer.",
    registry=REGISTRY,
)
destinations_disabled = Counter(
    "notifi_destinations_disabled_total",
    "Stored destinations disabled automatically, by reason (gone: a 410; failing: no success "
    "for delivery.disable_after).",
    registry=REGISTRY,
)
deliveries_paused = Counter(
    "notifi_deliveries_paused_total",
    "Deliveries paused because their stored destination is disabled, by stage (load: not "
    "attempted; attempt: the attempt disabled it).",
    registry=REGISTRY,
)
actor_restarts = Counter(
    "notifi_actor_restarts_total",
    "Actor crashes followed by a restart, by actor.",
    registry=REGISTRY,
)


def exposition(accept_headers: list[str]) -> tuple[bytes, dict[str, str]]:
    """The registry in Prometheus's text format."""
    return render(REGISTRY, accept_headers)
