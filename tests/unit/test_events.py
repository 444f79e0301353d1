"""The event envelopes: what is produced validates against its schema and reads back."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import orjson
import pytest

from notifi import events, outcome
from notifi.destinations.base import Outcome, SendResult
from notifi.model import DeliveryJob, DeliveryStatus
from notifi.retry import RetryPolicy
from tests.support.schemas import schema


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


@pytest.mark.parametrize(
    "kind", [events.SUCCEEDED, events.FAILED, events.EXHAUSTED, events.EXPIRED]
)
def test_operational_events_validate(kind: str) -> None:
    job = DeliveryJob(uuid4(), 0, 2, datetime(2026, 11, 24, 18, tzinfo=UTC))
    _, value = events.delivery_outcome(
        kind, job, client_id="c1", channel="webhook", status_code=503, error="HTTP 503"
    )
    schema(f"{kind}.v1.json")(orjson.loads(value))


@pytest.mark.parametrize(("status_code", "error"), [(None, None), (503, "HTTP 503")])
def test_an_expired_delivery_produces_a_valid_expired_event(
    status_code: int | None, error: str | None
) -> None:
    """A retry that would start at or after the expiry ends expired and carries
    delivery.expired, which validates (with or without a last reply)."""
    now = datetime(2026, 11, 24, 18, tzinfo=UTC)
    job = DeliveryJob(uuid4(), 1, 1, now)
    decision = outcome.decide(
        job,
        SendResult(Outcome.RETRY, 503),
        RetryPolicy.of([60.0], 0.0),
        now,
        expires_at=now,
    )
    assert decision.status is DeliveryStatus.EXPIRED and decision.event == events.EXPIRED
    assert outcome.EXPIRED.event == events.EXPIRED  # also when it expired before any attempt
    _, value = events.delivery_outcome(
        decision.event, job, client_id="c1", channel="email", status_code=status_code, error=error
    )
    schema("delivery.expired.v1.json")(orjson.loads(value))
    assert orjson.loads(value)["type"] == "delivery.expired"
