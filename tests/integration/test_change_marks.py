"""Change marks (notifi.marks) on the real Redis and Postgres: what Redis vouches for and when
it does not, that the API marks a change before it commits, and that a delivery worker sends a
job loaded early while Postgres is away only when no mark and no gap in the marks stops it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from redis.exceptions import ConnectionError as RedisConnectionError

from actors.delivery import DeliveryWorker, Work
from notifi import metrics
from notifi.api.destinations import DESTINATIONS
from notifi.claims import Claims
from notifi.destinations.base import Outcome, SendResult
from notifi.hosts import HostGate
from notifi.marks import MARK_TTL_S, PAY_RETRY_S, SKEW_S, TRUST_S, ChangeMarks
from notifi.model import DeliveryJob, Notification
from notifi.retry import RetryPolicy
from notifi.runtime import Mailbox
from notifi.store import Store
from tests.support.api import HOOK, ahead, api_client, creds, iso
from tests.support.factories import new_notification
from tests.support.fakes import eventually, metric_value, running
from tests.support.proxy import CuttableProxy

ALPHA = creds("alpha")


def at(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


async def since_of(redis: aioredis.Redis, prefix: str) -> float | None:
    value = await redis.get(f"{prefix}:marks-since")
    return None if value is None else float(value)


async def since_reaches(redis: aioredis.Redis, prefix: str, unix_s: float) -> None:
    deadline = time.monotonic() + 5
    while ((since := await since_of(redis, prefix)) or 0.0) < unix_s:
        assert time.monotonic() < deadline, f"marks-since {since} never reached {unix_s}"
        await asyncio.sleep(0.02)


async def settled(redis: aioredis.Redis, prefix: str, ago_s: float = 60.0) -> float:
    """Sets marks-since `ago_s` back (Redis has held every mark for that long); returns it."""
    since = time.time() - ago_s
    await redis.set(f"{prefix}:marks-since", repr(since))
    return since


class Away:
    """One of ChangeMarks' scripts, failing as an unreachable Redis does while `down`."""

    def __init__(self, script: Any) -> None:
        self.script, self.down, self.calls = script, True, 0

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("Redis away (test)")
        return await self.script(**kwargs)


async def test_a_fresh_prefix_vouches_only_for_jobs_loaded_after_its_first_check(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    marks = ChangeMarks(redis, prefix=key_prefix)
    before = time.time()
    assert not await marks.unchanged(datetime.now(UTC), uuid4(), None)
    since = await since_of(redis, key_prefix)
    assert since is not None and before <= since <= time.time()
    await asyncio.sleep(SKEW_S + 0.1)
    assert await marks.unchanged(datetime.now(UTC), uuid4(), uuid4())
    assert await since_of(redis, key_prefix) == since  # a check never moves it once set


async def test_a_marked_notification_or_destination_is_not_vouched_for(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    marks = ChangeMarks(redis, prefix=key_prefix)
    await settled(redis, key_prefix)
    loaded = datetime.now(UTC)
    nid, other, did = uuid4(), uuid4(), uuid4()
    assert await marks.unchanged(loaded, nid, did)
    async with marks.changing(notifications=[nid]):
        assert await redis.exists(f"{key_prefix}:changed:n:{nid}")  # before the change
    assert not await marks.unchanged(loaded, nid, None)
    assert await marks.unchanged(loaded, other, did)
    async with marks.changing(destinations=[did]):
        pass
    assert not await marks.unchanged(loaded, other, did)
    assert await marks.unchanged(loaded, other, uuid4())
    assert 0 < await redis.ttl(f"{key_prefix}:changed:d:{did}") <= MARK_TTL_S


async def test_jobs_loaded_too_soon_after_marks_since_or_too_long_ago_are_not_vouched_for(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    marks = ChangeMarks(redis, prefix=key_prefix)
    since = await settled(redis, key_prefix, 60)
    assert not await marks.unchanged(at(since + SKEW_S - 0.2), uuid4(), None)
    assert await marks.unchanged(at(since + SKEW_S + 0.2), uuid4(), None)
    await settled(redis, key_prefix, TRUST_S + 60)
    assert not await marks.unchanged(at(time.time() - TRUST_S - 5), uuid4(), None)
    assert await marks.unchanged(at(time.time() - TRUST_S + 5), uuid4(), None)


async def test_a_mark_not_written_raises_marks_since_past_the_change_once_redis_answers(
    redis: aioredis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks = ChangeMarks(redis, prefix=key_prefix)
    old_since = await settled(redis, key_prefix)
    loaded, nid = datetime.now(UTC), uuid4()
    mark, raise_ = Away(marks._mark), Away(marks._raise)
    monkeypatch.setattr(marks, "_mark", mark)
    monkeypatch.setattr(marks, "_raise", raise_)
    try:
        ended: list[float] = []  # when each block's change was done
        for _ in range(2):  # the second within DOWN_FOR_S of the first: not even tried
            async with marks.changing(notifications=[nid]):
                await asyncio.sleep(0.1)  # the change in Postgres
                ended.append(time.time())
        assert len(ended) == 2 and mark.calls == 1
        assert not await redis.exists(f"{key_prefix}:changed:n:{nid}")
        await asyncio.sleep(PAY_RETRY_S * 2.5)  # Redis still away for this API process
        assert raise_.calls >= 2 and await since_of(redis, key_prefix) == old_since
        raise_.down = False
        await since_reaches(redis, key_prefix, ended[-1])
        assert (await since_of(redis, key_prefix) or 0.0) <= time.time()
        assert not await marks.unchanged(loaded, nid, None)
        assert not await marks.unchanged(loaded, uuid4(), None)  # no job loaded before either
    finally:
        await marks.close()


async def test_start_raises_marks_since_to_now_and_never_lowers_it(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    await settled(redis, key_prefix)
    loaded = datetime.now(UTC)
    marks = ChangeMarks(redis, prefix=key_prefix)
    try:
        before = time.time()
        marks.start()
        await since_reaches(redis, key_prefix, before)
        assert (await since_of(redis, key_prefix) or 0.0) <= time.time()
        assert not await marks.unchanged(loaded, uuid4(), None)
        later = time.time() + 100
        await redis.set(f"{key_prefix}:marks-since", repr(later))
        marks.start()
        await asyncio.sleep(0.2)
        assert await since_of(redis, key_prefix) == later
    finally:
        await marks.close()


async def marked_first(
    monkeypatch: pytest.MonkeyPatch,
    redis: aioredis.Redis,
    key: str,
    change: tuple[object, str],
    request: Callable[[], Awaitable[ClientResponse]],
) -> int:
    """Sends `request()`, checking that the mark `key` is in Redis by the time the store's
    `change` (an object and a method) is called, and after; returns the response status."""
    await redis.delete(key)
    (target, method), seen = change, []
    real = getattr(target, method)

    async def call(*args: Any, **kwargs: Any) -> Any:
        seen.append(bool(await redis.exists(key)))
        return await real(*args, **kwargs)

    monkeypatch.setattr(target, method, call)
    status = (await request()).status
    assert seen == [True], f"{method}: no mark when the change began"
    assert await redis.exists(key)
    return status


async def test_the_api_marks_a_notification_or_a_destination_before_changing_it(
    store: Store, redis: aioredis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with api_client(store, marks=ChangeMarks(redis, prefix=key_prefix)) as api:
        body = {"body": "b", "destinations": [HOOK], "scheduled_at": iso(ahead(600))}
        r = await api.post("/api/notifications", json=body, headers=ALPHA)
        assert r.status == 202
        nid = (await r.json())["id"]
        key, path = f"{key_prefix}:changed:n:{nid}", f"/api/notifications/{nid}"
        assert not await redis.exists(key)  # creating one marks nothing
        patch = partial(api.patch, path, json={"scheduled_at": iso(ahead(900))}, headers=ALPHA)
        assert await marked_first(monkeypatch, redis, key, (store, "reschedule"), patch) == 200
        delete = partial(api.delete, path, headers=ALPHA)
        assert await marked_first(monkeypatch, redis, key, (store, "delete"), delete) == 200

        r = await api.post("/api/destinations", json=HOOK, headers=ALPHA)
        assert r.status == 201, await r.text()
        did = (await r.json())["id"]
        key, path = f"{key_prefix}:changed:d:{did}", f"/api/destinations/{did}"
        assert not await redis.exists(key)
        destinations = api.app[DESTINATIONS].store
        patch = partial(api.patch, path, json={"enabled": False}, headers=ALPHA)
        assert await marked_first(monkeypatch, redis, key, (destinations, "update"), patch) == 200
        delete = partial(api.delete, path, headers=ALPHA)
        assert await marked_first(monkeypatch, redis, key, (destinations, "delete"), delete) == 204


class RecordingSender:
    def __init__(self) -> None:
        self.sent: dict[UUID, datetime] = {}

    async def send(self, destination: Mapping[str, Any], n: Notification) -> SendResult:
        self.sent[n.id] = datetime.now(UTC)
        return SendResult(Outcome.DELIVERED, status_code=200, duration_ms=1.0)


@asynccontextmanager
async def workers_behind_a_proxy(
    dsn: str, redis: aioredis.Redis, prefix: str, marks: ChangeMarks | None
) -> AsyncIterator[tuple[CuttableProxy, Mailbox[Work], RecordingSender]]:
    """Two delivery workers on one mailbox, their store through a cuttable proxy, claims on
    the real Redis; on exit, neither may have crashed."""
    sender, work, records = RecordingSender(), Mailbox[Work]("work", 10), Mailbox("records", 10)
    gate = HostGate(max_in_flight=8, failure_threshold=5, cooldown_s=1, max_cooldown_s=1)
    async with AsyncExitStack() as stack:
        proxy = await CuttableProxy("127.0.0.1", 5432).start()
        stack.push_async_callback(proxy.stop)
        proxied = await Store.open(
            dsn.replace(":5432/", f":{proxy.port}/"), min_size=1, max_size=2, command_timeout=1
        )
        stack.push_async_callback(proxied.close)
        claims = Claims(redis, proxied, prefix=prefix, claim_ttl_s=30, delivered_ttl_s=60)
        kw = {"store": proxied, "claims": claims, "senders": {"webhook": sender}, "gate": gate}
        policy, tasks = RetryPolicy.of([1], 0), []
        for i in range(2):
            worker = DeliveryWorker(
                f"worker-{i}", work, records, policy=policy, claim_ttl_s=30, marks=marks, **kw
            )
            tasks.append(await stack.enter_async_context(running(worker)))
        yield proxy, work, sender
        assert not any(t.done() for t in tasks), "a worker crashed"


async def loaded(store: Store, nid: UUID, ack: Callable[[], None] = lambda: None) -> Work:
    """The job of the notification's first delivery, loaded now as the consumer loads it."""
    loaded_at = datetime.now(UTC)
    row = (await store.load_jobs([(nid, 0)]))[(nid, 0)]
    return Work(DeliveryJob(nid, 0, 1, row["scheduled_at"]), row, f"token-{nid}", ack, loaded_at)


async def test_a_worker_sends_an_unmarked_job_while_postgres_is_away_but_not_a_deleted_one(
    store: Store, dsn: str, redis: aioredis.Redis, key_prefix: str
) -> None:
    marks = ChangeMarks(redis, prefix=key_prefix)
    await settled(redis, key_prefix)
    kept, gone = new_notification(in_s=2.0), new_notification(in_s=2.0)
    await store.accept([kept, gone])
    gone_acked = asyncio.Event()
    vouched = metric_value(metrics.rechecks_vouched, {})
    async with workers_behind_a_proxy(dsn, redis, key_prefix, marks) as (proxy, work, sender):
        await work.put(await loaded(store, kept.id))
        await work.put(await loaded(store, gone.id, gone_acked.set))
        async with marks.changing(notifications=[gone.id]):
            assert await store.delete(gone.id, None)
        proxy.cut()
        assert datetime.now(UTC) < kept.due_at() - timedelta(seconds=0.3)  # cut before due
        await eventually(lambda: kept.id in sender.sent, 6)
        assert sender.sent[kept.id] >= kept.due_at()  # never early
        assert metric_value(metrics.rechecks_vouched, {}) > vouched  # Redis vouched for it
        await asyncio.sleep(1.0)
        assert gone.id not in sender.sent and not gone_acked.is_set()  # waits for Postgres
        proxy.restore()
        await asyncio.wait_for(gone_acked.wait(), 10)  # read deleted once Postgres is back
        await asyncio.sleep(0.3)
        assert set(sender.sent) == {kept.id}


@pytest.mark.parametrize("with_marks", [True, False], ids=["since-raised", "no-marks"])
async def test_without_marks_that_cover_its_load_a_job_waits_for_postgres(
    store: Store, dsn: str, redis: aioredis.Redis, key_prefix: str, with_marks: bool
) -> None:
    marks = ChangeMarks(redis, prefix=key_prefix) if with_marks else None
    await settled(redis, key_prefix)
    n = new_notification(in_s=1.5)
    await store.accept([n])
    try:
        async with workers_behind_a_proxy(dsn, redis, key_prefix, marks) as (proxy, work, sender):
            job = await loaded(store, n.id)
            await work.put(job)
            if marks is not None:  # an API process started after the load
                marks.start()
                await since_reaches(redis, key_prefix, job.loaded_at.timestamp())
            proxy.cut()
            assert datetime.now(UTC) < n.due_at()
            while datetime.now(UTC) < n.due_at() + timedelta(seconds=1.5):
                assert n.id not in sender.sent, "sent while Postgres was away"
                await asyncio.sleep(0.05)
            back = datetime.now(UTC)
            proxy.restore()
            await eventually(lambda: n.id in sender.sent, 10)
            assert sender.sent[n.id] >= back
    finally:
        if marks is not None:
            await marks.close()
