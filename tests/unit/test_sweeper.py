"""The retention sweeper on an in-memory store: it walks its range in bounded steps from the
oldest id, counts what it removed by table, sweeps again every interval, stops between steps
when asked, and rides out Postgres being away (and a contended step) without crashing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import pytest
from structlog.testing import capture_logs

from actors.sweeper import Sweeper, SweepStore
from notifi import metrics
from notifi.store import id_at
from notifi.store.retention import Removed, RetentionPolicy, RetentionStore, Step
from tests.support.fakes import assert_implements, eventually, metric_value, postgres_down, running

DAY = 86_400.0
POLICY = RetentionPolicy(delivered_s=30 * DAY, failed_s=90 * DAY)


@dataclass
class Row:
    id: UUID
    partition_key: int
    ended_days_ago: float | None  # None: still open
    failed: bool = False


@dataclass
class FakeSweepStore:
    """The step's contract on a list: examine up to `batch` ids of the range after `after`,
    remove those past their window (one delivery and one attempt each)."""

    rows: list[Row] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)  # raised by the next steps
    calls: list[tuple[UUID, int]] = field(default_factory=list)

    def add(
        self,
        made_days_ago: float,
        ended_days_ago: float | None,
        *,
        partition_key: int,
        failed: bool = False,
    ) -> Row:
        made = datetime.now(UTC) - timedelta(days=made_days_ago)
        row_id = UUID(int=id_at(made).int + len(self.rows))
        row = Row(row_id, partition_key, ended_days_ago, failed)
        self.rows.append(row)
        return row

    async def step(
        self, after: UUID, before: UUID, lo: int, hi: int, batch: int, policy: RetentionPolicy
    ) -> Step:
        self.calls.append((after, batch))
        if self.failures:
            raise self.failures.pop(0)
        scanned = sorted(
            (r for r in self.rows if after < r.id < before and lo <= r.partition_key <= hi),
            key=lambda r: r.id,
        )[:batch]
        doomed = [r for r in scanned if self._past(r, policy)]
        for r in doomed:
            self.rows.remove(r)
        n = len(doomed)
        removed = Removed(notifications=n, deliveries=n, delivery_attempts=n)
        return Step(scanned[-1].id if scanned else None, len(scanned), removed)

    @staticmethod
    def _past(r: Row, policy: RetentionPolicy) -> bool:
        keep_s = policy.failed_s if r.failed else policy.delivered_s
        return r.ended_days_ago is not None and keep_s > 0 and r.ended_days_ago * DAY > keep_s


def make_sweeper(
    store: FakeSweepStore, *, batch: int = 3, policy: RetentionPolicy = POLICY
) -> Sweeper:
    return Sweeper("sweeper", store, lo=0, hi=9, policy=policy, interval_s=0.01, batch=batch)


def removed_total(table: str) -> float:
    return metric_value(metrics.retention_removed, {"table": table})


def test_the_store_has_what_the_sweeper_needs() -> None:
    assert_implements(RetentionStore, SweepStore)
    assert_implements(FakeSweepStore, SweepStore)


async def test_it_removes_what_is_past_retention_in_bounded_steps_and_counts_it() -> None:
    store = FakeSweepStore()
    old = [store.add(40, 40, partition_key=i % 10) for i in range(7)]
    kept = [
        store.add(40, None, partition_key=1),  # still open
        store.add(40, 5, partition_key=2),  # ended recently
        store.add(40, 40, partition_key=3, failed=True),  # inside the failed window
        store.add(40, 40, partition_key=10),  # another process's range
        store.add(1, 1, partition_key=4),  # recent: past the walk's horizon
    ]
    before = removed_total("notifications"), removed_total("delivery_attempts")
    async with running(make_sweeper(store, batch=3)):
        await eventually(lambda: not any(r in store.rows for r in old))
    assert all(r in store.rows for r in kept)
    assert removed_total("notifications") - before[0] == 7
    assert removed_total("delivery_attempts") - before[1] == 7
    # Each sweep starts from the oldest id and never asks for more than a batch.
    assert all(batch == 3 for _, batch in store.calls)
    assert store.calls[0][0] == UUID(int=0)


async def test_it_sweeps_again_every_interval() -> None:
    store = FakeSweepStore()
    async with running(make_sweeper(store)):
        await eventually(lambda: len(store.calls) >= 1)
        late = store.add(40, 40, partition_key=5)  # ended long ago, seen by a later sweep
        await eventually(lambda: late not in store.rows)


async def test_zero_keeps_everything_and_asks_nothing() -> None:
    store = FakeSweepStore()
    row = store.add(400, 400, partition_key=1)
    forever = RetentionPolicy(delivered_s=0, failed_s=0)
    async with running(make_sweeper(store, policy=forever)) as task:
        await asyncio.sleep(0.3)  # some thirty intervals of 0.01 s
        assert not task.done()
    assert store.calls == [] and row in store.rows


async def test_a_postgres_outage_is_logged_once_and_ridden_out() -> None:
    store = FakeSweepStore()
    store.failures = [postgres_down(), OSError("connection reset"), TimeoutError()]
    row = store.add(40, 40, partition_key=1)
    outages = metric_value(
        metrics.dependency_outages, {"dependency": "postgres", "actor": "sweeper"}
    )
    with capture_logs() as logs:
        async with running(make_sweeper(store)) as task:
            await eventually(lambda: row not in store.rows)
            assert not task.done()
    away = [e for e in logs if e["event"] == "dependency_away"]
    assert len(away) == 1
    assert any(e["event"] == "dependency_back" for e in logs)
    after = metric_value(metrics.dependency_outages, {"dependency": "postgres", "actor": "sweeper"})
    assert after == outages + 1


async def test_a_contended_step_waits_for_the_next_sweep() -> None:
    store = FakeSweepStore()
    store.failures = [asyncpg.LockNotAvailableError("lock timeout")]
    row = store.add(40, 40, partition_key=1)
    async with running(make_sweeper(store)) as task:
        await eventually(lambda: row not in store.rows)
        assert not task.done()


async def test_a_bug_is_not_swallowed() -> None:
    store = FakeSweepStore()
    store.failures = [asyncpg.UndefinedColumnError("no such column")]
    sweeper = make_sweeper(store)
    with pytest.raises(asyncpg.UndefinedColumnError):
        await sweeper.run()


async def test_it_stops_between_steps() -> None:
    store = FakeSweepStore()
    for i in range(30):
        store.add(40, 40, partition_key=i % 10)
    sweeper = make_sweeper(store, batch=1)
    sweeper.request_stop()
    assert await sweeper.sweep() == Removed()
    assert store.calls == []
