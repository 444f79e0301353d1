"""The delivery worker and recorder wait out every way Postgres can be away (refusing, still
starting, shutting down, out of connections), never crashing: a crash would count against the
job and, repeated by every worker at once, make the supervisor give up on the process."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from notifi.model import DeliveryStatus
from tests.support.fake_delivery import DeliveryHarness, FakeJobStore, job_row

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
