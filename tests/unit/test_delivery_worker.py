"""The delivery worker on in-memory fakes: each path of one job (delivered, retried,
exhausted, permanent, a sender that raises, busy and delivered claims, the host gate, the
deletion re-check at due time, never early, a store outage, the quarantine, the expiry, a
schedule a PATCH moved) and what it records and publishes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from actors.delivery import Work
from notifi import events, metrics, outcome
from notifi.destinations.base import Outcome, SendResult
from notifi.hosts import BUSY_RETRY_S
from notifi.model import DeliveryJob, DeliveryStatus, Notification
from notifi.outcome import QUARANTINE_AFTER_CRASHES
from tests.support.fake_delivery import (
    DeliveryHarness,
    FakeClaims,
    FakeLimits,
    FakeMarks,
    ScriptedSender,
    gate,
    job_row,
    stored_row,
)
from tests.support.fakes import metric_value
from tests.support.schemas import schema

pytestmark = pytest.mark.timeout(20)


def key(row: dict) -> tuple:
    return (row["notification_id"], row["position"])


async def test_delivered_records_publishes_and_remembers() -> None:
    async with DeliveryHarness() as h:
        row = job_row(title="Deploy", data={"service": "api"})
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        [sent] = h.sender.sent
        assert sent.notification == Notification.from_row(row)
        assert sent.destination == row["destination"]
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.DELIVERED and f.outcome == "delivered"
        assert f.status_code == 200 and f.started_at is not None
        assert key(row) in h.claims.delivered and h.claims.released == []
        [event] = await h.events()
        assert event["type"] == events.SUCCEEDED
        assert event["data"]["notification_id"] == str(row["notification_id"])
    assert h.crashes == []


@pytest.mark.parametrize(
    ("attempt", "result", "status", "event"),
    [
        (1, SendResult(Outcome.RETRY, 503, "HTTP 503"), DeliveryStatus.DELIVERING, None),
        (3, SendResult(Outcome.RETRY, 503, "HTTP 503"), DeliveryStatus.FAILED, events.EXHAUSTED),
        (1, SendResult(Outcome.PERMANENT, 404, "HTTP 404"), DeliveryStatus.FAILED, events.FAILED),
    ],
)
async def test_failures_retry_or_end(
    attempt: int, result: SendResult, status: DeliveryStatus, event: str | None
) -> None:
    sender = ScriptedSender([result])
    async with DeliveryHarness({"webhook": sender}) as h:
        row = job_row()
        before = datetime.now(UTC)
        acked = await h.submit(row, attempt=attempt)
        await asyncio.wait_for(acked.wait(), 5)
        f = h.store.finished_for(key(row))
        assert f.new_status is status and f.error == result.error
        if status is DeliveryStatus.DELIVERING:  # the schedule [1, 5] without jitter
            assert before + timedelta(seconds=1) <= f.next_attempt_at
            assert f.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=1)
        else:
            assert f.next_attempt_at is None
        assert h.claims.released == [(key(row), "token-1")]  # the retry may claim again
        assert [e["type"] for e in await h.events()] == ([event] if event else [])


async def test_a_sender_that_raises_ends_the_job_not_the_worker() -> None:
    sender = ScriptedSender([ValueError("Header values may not contain linefeed: sekrit")])
    async with DeliveryHarness({"webhook": sender}) as h:
        bad, good = job_row(), job_row()
        acked = await h.submit(bad)
        await asyncio.wait_for(acked.wait(), 5)
        f = h.store.finished_for(key(bad))
        assert f.new_status is DeliveryStatus.FAILED and f.outcome == "permanent"
        assert "ValueError" in f.error and "sekrit" not in f.error
        sender.script = [SendResult(Outcome.DELIVERED, 200)]
        acked = await h.submit(good)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.store.finished_for(key(good)).new_status is DeliveryStatus.DELIVERED
        assert [e["type"] for e in await h.events()] == [events.FAILED, events.SUCCEEDED]
    assert h.crashes == []


async def test_an_unknown_channel_is_a_permanent_failure() -> None:
    async with DeliveryHarness() as h:
        row = job_row(kind="carrier-pigeon", destination={"type": "carrier-pigeon"})
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.store.finished_for(key(row)).new_status is DeliveryStatus.FAILED
    assert h.crashes == []


async def test_a_busy_claim_sends_the_job_back_for_later() -> None:
    claims = FakeClaims()
    async with DeliveryHarness(claims=claims, claim_ttl_s=30) as h:
        row = job_row()
        claims.holders[key(row)] = "someone-else"
        before = datetime.now(UTC)
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.store.finished == []
        [later] = h.store.requeued
        assert later.key == key(row) and later.attempt == 1
        assert later.due_at >= before + timedelta(seconds=30)


async def test_an_already_delivered_claim_is_skipped_and_recorded_delivered() -> None:
    claims = FakeClaims()
    async with DeliveryHarness(claims=claims) as h:
        row = job_row()
        claims.delivered.add(key(row))
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == []
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.DELIVERED and f.outcome is None
        assert await h.events() == []  # nothing was attempted


async def test_an_open_breaker_defers_the_job_to_the_outbox() -> None:
    host_gate = gate(failure_threshold=1, cooldown_s=30)
    assert host_gate.admit("hooks.example:443") is None
    host_gate.release("hooks.example:443", host_failed=True)  # the breaker opens
    async with DeliveryHarness(host_gate=host_gate) as h:
        row = job_row()
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.store.finished == []
        [later] = h.store.requeued
        assert later.due_at >= datetime.now(UTC) + timedelta(seconds=20)


async def test_a_host_at_its_bound_defers_after_a_short_wait() -> None:
    host_gate = gate(max_in_flight=1)
    assert host_gate.admit("hooks.example:443") is None  # the one slot is taken
    async with DeliveryHarness(host_gate=host_gate) as h:
        row = job_row()
        before = datetime.now(UTC)
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        [later] = h.store.requeued
        assert later.due_at >= before + timedelta(seconds=BUSY_RETRY_S)
        assert h.sender.sent == []


async def test_never_sent_before_it_is_due() -> None:
    async with DeliveryHarness() as h:
        row = job_row()
        acked = await h.submit(row, due_in_s=0.3)
        await asyncio.wait_for(acked.wait(), 5)
        [sent] = h.sender.sent
        due = h.store.finished_for(key(row)).job.due_at
        assert sent.at >= due


async def test_a_delete_before_the_due_time_prevents_the_send() -> None:
    async with DeliveryHarness() as h:
        row = job_row()
        acked = await h.submit(row, due_in_s=0.3)
        h.store.deleted.add(row["notification_id"])
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.store.finished == [] and h.store.requeued == []
        assert "state_of" in h.store.calls


async def test_a_store_outage_at_the_deletion_check_is_waited_out() -> None:
    async with DeliveryHarness() as h:
        row = job_row()
        h.store.down_for = 2
        acked = await h.submit(row, due_in_s=0.05)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.store.calls[:3] == ["state_of"] * 3
        assert h.store.finished_for(key(row)).new_status is DeliveryStatus.DELIVERED
    assert h.crashes == []


async def test_a_job_that_keeps_crashing_the_worker_is_quarantined() -> None:
    claims = FakeClaims()
    claims.crash_claims = 100
    async with DeliveryHarness(claims=claims) as h:
        row = job_row()
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.crashes == ["worker"] * QUARANTINE_AFTER_CRASHES
        assert h.sender.sent == []
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.FAILED and f.error.startswith("quarantined")
        assert [e["type"] for e in await h.events()] == [events.FAILED]
        # The worker goes on with the next job.
        claims.crash_claims = 0
        other = job_row()
        acked = await h.submit(other)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.store.finished_for(key(other)).new_status is DeliveryStatus.DELIVERED


# -- expiry ---------------------------------------------------------------------------------


def expiring_in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_a_job_past_its_expiry_ends_expired_without_an_attempt() -> None:
    async with DeliveryHarness() as h:
        row = job_row(expires_at=expiring_in(-1))
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.store.requeued == []
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.EXPIRED
        assert f.started_at is None and f.outcome is None  # no attempt is recorded
        assert [e["type"] for e in await h.events()] == [events.EXPIRED]
    assert h.crashes == []


async def test_the_due_time_wait_never_waits_past_the_expiry() -> None:
    async with DeliveryHarness() as h:
        expires_at = expiring_in(0.2)
        row = job_row(expires_at=expires_at)
        acked = await h.submit(row, due_in_s=30)
        await asyncio.wait_for(acked.wait(), 5)  # long before the due time
        assert datetime.now(UTC) >= expires_at
        assert h.sender.sent == []
        assert h.store.finished_for(key(row)).new_status is DeliveryStatus.EXPIRED


async def test_a_retry_that_would_start_after_the_expiry_ends_expired() -> None:
    sender = ScriptedSender([SendResult(Outcome.RETRY, 503, "HTTP 503")])
    async with DeliveryHarness({"webhook": sender}) as h:  # schedule [1, 5]: next in 1 s
        row = job_row(expires_at=expiring_in(0.5))
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        [_] = sender.sent  # the attempt itself began before the expiry
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.EXPIRED and f.next_attempt_at is None
        assert f.outcome == "retry" and f.status_code == 503  # the attempt is recorded
        assert h.claims.released == [(key(row), "token-1")]


async def test_a_retry_before_the_expiry_is_scheduled() -> None:
    sender = ScriptedSender([SendResult(Outcome.RETRY, 503, "HTTP 503")])
    async with DeliveryHarness({"webhook": sender}) as h:
        row = job_row(expires_at=expiring_in(60))
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.DELIVERING and f.next_attempt_at is not None


async def test_a_deferral_behind_an_open_breaker_is_due_no_later_than_the_expiry() -> None:
    host_gate = gate(failure_threshold=1, cooldown_s=30)
    assert host_gate.admit("hooks.example:443") is None
    host_gate.release("hooks.example:443", host_failed=True)  # the breaker opens for 30 s
    async with DeliveryHarness(host_gate=host_gate) as h:
        expires_at = expiring_in(5)
        row = job_row(expires_at=expires_at)
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        [later] = h.store.requeued
        assert later.due_at == expires_at  # whoever takes it then ends it expired
        assert h.sender.sent == [] and h.store.finished == []


async def test_a_busy_claim_sends_the_job_back_no_later_than_the_expiry() -> None:
    claims = FakeClaims()
    async with DeliveryHarness(claims=claims, claim_ttl_s=30) as h:
        expires_at = expiring_in(3)
        row = job_row(expires_at=expires_at)
        claims.holders[key(row)] = "someone-else"
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        [later] = h.store.requeued
        assert later.due_at == expires_at


class SlowClaims(FakeClaims):
    """Claims that take `delay_s` to answer (Redis away, the Postgres fallback slow)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def claim(self, item: tuple) -> object:
        await asyncio.sleep(self.delay_s)
        return await super().claim(item)


async def test_the_expiry_is_checked_again_after_a_slow_claim() -> None:
    claims = SlowClaims(0.3)
    async with DeliveryHarness(claims=claims) as h:
        row = job_row(expires_at=expiring_in(0.1))
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == []
        assert h.store.finished_for(key(row)).new_status is DeliveryStatus.EXPIRED
        assert h.claims.released == [(key(row), "token-1")]  # the claim it took is let go


# -- moved schedules (PATCH) ----------------------------------------------------------------


async def test_a_job_loaded_after_its_schedule_moved_later_goes_back_for_the_new_time() -> None:
    async with DeliveryHarness() as h:
        new_time = datetime.now(UTC) + timedelta(hours=1)
        row = job_row(scheduled_at=new_time)  # the job below is due now: published earlier
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.store.finished == []
        [later] = h.store.requeued
        assert later.key == key(row) and later.due_at == new_time and later.attempt == 1


async def test_a_schedule_moved_later_while_the_job_waits_is_not_sent_at_the_old_time() -> None:
    async with DeliveryHarness() as h:
        row = job_row()
        acked = await h.submit(row, due_in_s=0.3)
        new_time = datetime.now(UTC) + timedelta(hours=1)
        h.store.scheduled[row["notification_id"]] = new_time  # a PATCH, after the load
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.store.finished == []
        [later] = h.store.requeued
        assert later.due_at == new_time
        assert "state_of" in h.store.calls


async def test_a_schedule_moved_earlier_or_to_now_still_sends_at_the_jobs_time() -> None:
    async with DeliveryHarness() as h:
        row = job_row(scheduled_at=datetime.now(UTC) + timedelta(seconds=0.3))
        acked = await h.submit(row, due_in_s=0.3)
        h.store.scheduled[row["notification_id"]] = None  # moved to now: never early, though
        await asyncio.wait_for(acked.wait(), 5)
        [sent] = h.sender.sent
        assert sent.at >= h.store.finished_for(key(row)).job.due_at
        assert h.store.requeued == []


async def test_a_job_that_waited_long_for_its_turn_is_rechecked() -> None:
    async with DeliveryHarness() as h:
        row = job_row()
        h.store.add(row)
        h.store.deleted.add(row["notification_id"])  # deleted after the (old) load
        loaded_at = datetime.now(UTC) - timedelta(seconds=1)
        job = DeliveryJob(row["notification_id"], 0, 1, loaded_at)
        acked = asyncio.Event()
        await h.work.put(Work(job, row, "token-1", acked.set, loaded_at))
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.store.finished == []


# -- stored destinations ------------------------------------------------------------------


async def test_a_disabled_stored_destination_pauses_its_job_without_an_attempt() -> None:
    async with DeliveryHarness() as h:
        row = stored_row(enabled=False)
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.claims.holders == {}
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.PAUSED and f.outcome is None
        assert f.destination_id == row["destination_id"] and f.disable_reason is None
        assert await h.events() == []


async def test_a_stored_destination_disabled_after_the_load_pauses_the_job_at_its_time() -> None:
    """A job loaded before it was due is checked again then: its destination, disabled since,
    is not sent to (the recorder pauses the delivery), and one deleted since ends it."""
    async with DeliveryHarness() as h:
        row = stored_row()
        acked = await h.submit(row, due_in_s=0.3)
        h.store.destinations_now[row["destination_id"]] = False  # disabled after the load
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.claims.holders == {}
        assert h.store.finished_for(key(row)).new_status is DeliveryStatus.PAUSED
        assert "destination_state_of" in h.store.calls
        gone = stored_row()
        acked = await h.submit(gone, due_in_s=0.3)
        h.store.destinations_now[gone["destination_id"]] = None  # deleted after the load
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == []
        assert h.store.finished_for(key(gone)).new_status is DeliveryStatus.CANCELLED


async def test_a_stored_destination_still_enabled_at_its_time_is_sent_to() -> None:
    async with DeliveryHarness() as h:
        row = stored_row()
        acked = await h.submit(row, due_in_s=0.2)
        await asyncio.wait_for(acked.wait(), 5)
        assert len(h.sender.sent) == 1
        assert h.store.finished_for(key(row)).new_status is DeliveryStatus.DELIVERED


async def test_a_deleted_stored_destination_cancels_its_job_without_an_attempt() -> None:
    async with DeliveryHarness() as h:
        row = stored_row(gone=True)
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == []
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.CANCELLED and f.outcome is None


async def test_a_410_disables_the_stored_destination_and_pauses_the_delivery() -> None:
    gone = metric_value(metrics.destinations_disabled, {"reason": "gone"})
    marks = FakeMarks(vouch=True)
    async with DeliveryHarness(marks=marks) as h:
        h.sender.script = [SendResult(Outcome.PERMANENT, 410, "HTTP 410")]
        row = stored_row()
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.PAUSED and f.outcome == "permanent"
        assert f.status_code == 410 and f.disable_reason == outcome.GONE_REASON
        assert f.failing is True  # the first failure of a streak
        [event] = await h.events()  # no delivery.failed: the delivery is not over
        schema("destination.disabled.v1.json")(event)
        assert event["data"]["destination_id"] == str(row["destination_id"])
        assert event["data"]["cause"] == "gone"
        # Marked changed first: a job to it loaded earlier is not vouched for (notifi.marks).
        assert marks.marked == [row["destination_id"]]
    assert metric_value(metrics.destinations_disabled, {"reason": "gone"}) == gone + 1


@pytest.mark.parametrize(
    ("attempt", "status"),
    [(1, DeliveryStatus.PAUSED), (3, DeliveryStatus.FAILED)],  # retry pauses; the end stays
)
async def test_failing_past_disable_after_disables(attempt: int, status: DeliveryStatus) -> None:
    async with DeliveryHarness(disable_after_s=3600) as h:
        h.sender.script = [SendResult(Outcome.RETRY, 503, "HTTP 503")]
        row = stored_row(failing_since=datetime.now(UTC) - timedelta(hours=2))
        acked = await h.submit(row, attempt=attempt)
        await asyncio.wait_for(acked.wait(), 5)
        f = h.store.finished_for(key(row))
        assert f.new_status is status and f.failing is None
        assert f.disable_reason.startswith("failing without a success since ")
        kinds = [e["type"] for e in await h.events()]
        assert events.DESTINATION_DISABLED in kinds


async def test_an_inline_destination_never_touches_stored_state() -> None:
    async with DeliveryHarness(disable_after_s=1) as h:
        h.sender.script = [SendResult(Outcome.PERMANENT, 410, "HTTP 410")]
        row = job_row()
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        f = h.store.finished_for(key(row))
        assert f.new_status is DeliveryStatus.FAILED and f.destination_id is None
        assert f.failing is None and f.disable_reason is None


async def test_over_the_rate_limit_the_job_waits_in_the_outbox_for_its_slot() -> None:
    limits = FakeLimits(2.5)
    async with DeliveryHarness(limits=limits) as h:
        row = stored_row(rate_limit=5)
        before = datetime.now(UTC)
        acked = await h.submit(row)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == [] and h.store.finished == []
        [later] = h.store.requeued
        assert later.attempt == 1 and later.due_at >= before + timedelta(seconds=2.5)
        [(destination_id, rate, _, attempt)] = limits.asked
        assert destination_id == row["destination_id"] and rate == 5 and attempt == 1


async def test_within_the_rate_limit_the_job_goes_and_unlimited_ones_never_ask() -> None:
    limits = FakeLimits(None)
    async with DeliveryHarness(limits=limits) as h:
        limited, free = stored_row(rate_limit=5), stored_row()
        for row in (limited, free):
            await asyncio.wait_for((await h.submit(row)).wait(), 5)
        assert len(h.sender.sent) == 2 and len(limits.asked) == 1
