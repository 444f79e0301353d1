"""The delivery worker and recorder wait out every way Postgres can be away (refusing, still
starting, shutting down, out of connections), never crashing: a crash would count against the
job and, repeated by every worker at once, make the supervisor give up on the process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from notifi.model import DeliveryStatus
from tests.support.fake_delivery import (
    DeliveryHarness,
    FakeJobStore,
    FakeMarks,
    job_row,
    stored_row,
    wait_until,
)

pytestmark = pytest.mark.timeout(20)

AWAY = [
    asyncpg.CannotConnectNowError("the database system is not yet accepting connections"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    ConnectionRefusedError("connection refused"),
    TimeoutError(),
]


class AwayStore(FakeJobStore):
    """Raises `error` for the next `down_for` calls."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def _maybe_down(self, call: str) -> None:
        self.calls.append(call)
        if self.down_for > 0:
            self.down_for -= 1
            raise self.error


@pytest.mark.parametrize("error", AWAY, ids=lambda e: type(e).__name__)
async def test_the_deletion_check_waits_out_postgres_away(error: BaseException) -> None:
    store = AwayStore(error)
    async with DeliveryHarness(store=store) as h:
        row = job_row()
        store.down_for = 2
        acked = await h.submit(row, due_in_s=0.05)
        await asyncio.wait_for(acked.wait(), 10)
        f = store.finished_for((row["notification_id"], row["position"]))
        assert f.new_status is DeliveryStatus.DELIVERED
    assert h.crashes == []


async def test_a_job_loaded_early_goes_on_time_while_postgres_is_away_when_marks_vouch() -> None:
    """Postgres away when a job loaded ahead comes due: Redis's change marks vouch that nothing
    changed since the load, so it is sent at its time, not after the outage; the outcome is
    written once Postgres is back."""
    store, marks = AwayStore(ConnectionRefusedError("refused")), FakeMarks(vouch=True)
    async with DeliveryHarness(store=store, marks=marks) as h:
        row = stored_row()
        store.down_for = 10_000
        acked = await h.submit(row, due_in_s=0.2)
        await wait_until(lambda: len(h.sender.sent) == 1, timeout_s=3)
        assert store.down_for > 0  # Postgres still away
        loaded_at, notification_id, destination_id = marks.calls[0]
        assert (notification_id, destination_id) == (row["notification_id"], row["destination_id"])
        assert loaded_at <= h.sender.sent[0].at
        assert not acked.is_set()  # not durable in Postgres yet
        store.down_for = 0
        await asyncio.wait_for(acked.wait(), 10)
        f = store.finished_for((row["notification_id"], row["position"]))
        assert f is not None and f.new_status is DeliveryStatus.DELIVERED
    assert h.crashes == [] and len(h.sender.sent) == 1


async def test_without_the_marks_vouching_a_job_waits_for_postgres_and_sees_the_delete() -> None:
    store, marks = AwayStore(ConnectionRefusedError("refused")), FakeMarks(vouch=False)
    async with DeliveryHarness(store=store, marks=marks) as h:
        row = job_row()
        store.down_for = 10_000
        acked = await h.submit(row, due_in_s=0.05)
        await asyncio.sleep(0.5)
        assert h.sender.sent == [] and len(marks.calls) == 1
        store.deleted.add(row["notification_id"])  # the change the marks stood for
        store.down_for = 0
        await asyncio.wait_for(acked.wait(), 10)
    assert h.sender.sent == [] and h.crashes == []


async def test_a_stored_destination_changed_since_the_load_sends_the_job_back_to_load() -> None:
    """Its URL, headers or secret may differ now: the job goes back to the outbox, due now, and
    is loaded again with the destination as it is."""
    store = FakeJobStore()
    async with DeliveryHarness(store=store) as h:
        row = stored_row()
        row["destination_updated_at"] = datetime(2026, 1, 1, tzinfo=UTC)
        store.destinations_updated[row["destination_id"]] = datetime.now(UTC)
        acked = await h.submit(row, due_in_s=0.05)
        await asyncio.wait_for(acked.wait(), 5)
        assert h.sender.sent == []
        assert [j.key for j in store.requeued] == [(row["notification_id"], row["position"])]
        assert store.requeued[0].due_at <= datetime.now(UTC)
        unchanged = stored_row()
        unchanged["destination_updated_at"] = datetime(2026, 1, 1, tzinfo=UTC)
        acked = await h.submit(unchanged, due_in_s=0.05, token="token-2")
        await asyncio.wait_for(acked.wait(), 5)
        assert len(h.sender.sent) == 1
