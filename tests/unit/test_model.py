"""The retry schedule, the offset tracker, and the event envelopes against their schemas."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from uuid import uuid4

import orjson
import pytest

from notifi import events
from notifi.model import DeliveryJob
from notifi.offsets import OffsetTracker
from notifi.retry import MAX_RETRY_AFTER_S, RetryPolicy
from notifi.roles import split
from tests.support.schemas import schema


def test_retry_schedule_bounds_attempts() -> None:
    policy = RetryPolicy.of([5, 300], jitter=0.0)
    assert policy.max_attempts == 3
    assert policy.delay_after(1) == 5
    assert policy.delay_after(2) == 300
    assert policy.delay_after(3) is None


def test_retry_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy.of([100], jitter=0.2)
    assert policy.delay_after(1, rand=lambda: 0.0) == pytest.approx(80)
    assert policy.delay_after(1, rand=lambda: 1.0) == pytest.approx(120)


def test_retry_after_is_honoured_within_bounds() -> None:
    policy = RetryPolicy.of([5], jitter=0.0)
    assert policy.delay_after(1, retry_after_s=60) == 60
    assert policy.delay_after(1, retry_after_s=1) == 5  # never sooner than the schedule
    assert policy.delay_after(1, retry_after_s=10**9) == MAX_RETRY_AFTER_S


def test_offsets_commit_below_the_oldest_in_flight() -> None:
    t = OffsetTracker()
    acks = {o: t.track(("t", 0), o) for o in range(5)}
    acks[1]()
    acks[2]()
    assert t.committable() == {}  # 0 still in flight
    acks[0]()
    assert t.committable() == {("t", 0): 3}
    acks[4]()
    assert t.committable() == {}
    acks[3]()
    assert t.committable() == {("t", 0): 5}
    assert t.in_flight() == 0


def test_offsets_per_partition() -> None:
    t = OffsetTracker()
    t.track(("t", 0), 10)()
    pending = t.track(("t", 1), 7)
    assert t.committable() == {("t", 0): 11}
    pending()
    assert t.committable() == {("t", 1): 8}


def test_partition_split_covers_the_range() -> None:
    assert split(0, 1023, 2) == [(0, 511), (512, 1023)]
    parts = split(0, 1023, 3)
    assert parts[0][0] == 0 and parts[-1][1] == 1023
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(parts))
    assert split(5, 6, 4) == [(5, 5), (6, 6)]


def test_accepted_event_validates_and_round_trips() -> None:
    nid = uuid4()
    key, value = events.accepted(nid, 17)
    assert key == nid.bytes
    schema("notification.accepted.v1.json")(orjson.loads(value))
    assert events.read_accepted(value) == nid


def test_delivery_due_event_validates_and_round_trips() -> None:
    job = DeliveryJob(uuid4(), 2, 3, datetime(2026, 11, 24, 18, tzinfo=UTC))
    [(_, value)] = events.delivery_due([job])
    schema("delivery.due.v1.json")(orjson.loads(value))
    assert events.read_delivery_due(value) == job


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"{}", b'{"type": "delivery.due", "version": 2, "data": {}}', b"[]"],
)
def test_bad_events_are_refused(raw: bytes) -> None:
    with pytest.raises(events.BadEvent):
        events.read_delivery_due(raw)
    with pytest.raises(events.BadEvent):
        events.read_accepted(raw)


@pytest.mark.parametrize("kind", [events.SUCCEEDED, events.FAILED, events.EXHAUSTED])
def test_operational_events_validate(kind: str) -> None:
    job = DeliveryJob(uuid4(), 0, 2, datetime(2026, 11, 24, 18, tzinfo=UTC))
    _, value = events.delivery_outcome(
        kind, job, client_id="c1", channel="webhook", status_code=503, error="HTTP 503"
    )
    schema(f"{kind}.v1.json")(orjson.loads(value))
