"""Deliveries to stored destinations, by the real delivery actors on the real Postgres and Redis
with the real webhook sender and loopback receivers: the destination as it is at send time,
the two signatures of a rotation's overlap, a 410 that disables and pauses until an enable
re-drives, failing past `delivery.disable_after`, a deleted destination, a pause that races an
enable, and the shared rate limit's Redis script."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import pytest
import redis.asyncio as aioredis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from uuid_utils.compat import uuid7

from actors.delivery import DeliveryWorker, Record, Work
from actors.recorder import Recorder
from notifi.bus import MemoryBus
from notifi.claims import Claims
from notifi.destination_limits import REDIS_AWAY_RETRY_S, DestinationLimits
from notifi.destinations.http_client import HttpClient
from notifi.destinations.network import AddressPolicy
from notifi.destinations.webhook import WebhookSender
from notifi.hosts import HostGate
from notifi.model import DeliveryJob
from notifi.retry import RetryPolicy
from notifi.runtime import ChildSpec, Mailbox, Supervisor
from notifi.store import Store
from notifi.store.destinations import Destinations, Fields, NewDestination
from tests.support.factories import new_notification
from tests.support.receiver import Receiver
from tests.support.schemas import schema

pytestmark = pytest.mark.timeout(60)

EVENTS = "t.events"


def secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


class Rig:
    """A recorder and a worker (real actors under a real supervisor) with the webhook sender;
    jobs are handed in as the delivery consumer would, after `load_jobs`."""

    def __init__(
        self,
        store: Store,
        claims: Claims,
        sender: WebhookSender,
        *,
        limits: DestinationLimits | None = None,
        disable_after_s: float = 0.0,
    ) -> None:
        self.store, self.bus = store, MemoryBus()
        self.work: Mailbox[Work] = Mailbox("work", 100)
        records: Mailbox[Record] = Mailbox("records", 100)
        gate = HostGate(max_in_flight=8, failure_threshold=50, cooldown_s=1, max_cooldown_s=1)
        self.supervisor = Supervisor(
            [
                ChildSpec(
                    "recorder",
                    lambda: Recorder(
                        "recorder",
                        records,
                        store=store,
                        claims=claims,
                        batch=10,
                        linger_s=0.002,
                        bus=self.bus,
                        events_topic=EVENTS,
                    ),
                    shutdown_timeout_s=1,
                ),
                ChildSpec(
                    "worker",
                    lambda: DeliveryWorker(
                        "worker",
                        self.work,
                        records,
                        store=store,
                        claims=claims,
                        senders={"webhook": sender},
                        policy=RetryPolicy.of([1, 5], 0),
                        claim_ttl_s=30,
                        gate=gate,
                        limits=limits,
                        disable_after_s=disable_after_s,
                    ),
                    shutdown_timeout_s=1,
                ),
            ],
            max_restarts=3,
            period_s=10,
            backoff_initial_s=0.01,
        )
        self.events_feed = self.bus.consumer(EVENTS, "test")

    async def __aenter__(self) -> Rig:
        await self.events_feed.start()
        self._running = asyncio.create_task(self.supervisor.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.supervisor.stop()
        assert (await self._running).ok

    async def run(self, jobs: Sequence[DeliveryJob]) -> None:
        """Hands the jobs to the worker as loaded now; returns once all are acked."""
        rows = await self.store.load_jobs([j.key for j in jobs])
        acked = [asyncio.Event() for _ in jobs]
        now = datetime.now(UTC)
        for i, (job, done) in enumerate(zip(jobs, acked, strict=True)):
            await self.work.put(Work(job, rows[job.key], f"token-{i}-{uuid7()}", done.set, now))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in acked)), 20)

    async def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in await self.events_feed.fetch(100, timeout_s=0.2)]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    policy = AddressPolicy(["127.0.0.0/8"])
    session = HttpClient(policy)
    yield WebhookSender(session, timeout_s=2)
    await session.close()


@pytest.fixture
def claims(store: Store, redis: aioredis.Redis, key_prefix: str) -> Claims:
    return Claims(redis, store, prefix=key_prefix, claim_ttl_s=30, delivered_ttl_s=60)


async def stored(
    store: Store,
    config: dict[str, Any],
    *,
    signing: str | None = None,
    enabled: bool = True,
    rate_limit: float | None = None,
) -> UUID:
    fields = Fields(None, "", config, [], rate_limit, enabled)
    new = NewDestination(uuid7(), "client-d", "webhook", signing, fields)
    return (await Destinations(store.pool).create(new))["id"]


async def send_to(store: Store, destination_id: UUID, count: int = 1) -> list[DeliveryJob]:
    """Notifications with one delivery to the stored destination, as the accept writes them."""
    jobs = []
    for _ in range(count):
        n = new_notification(client_id="client-d")
        await store.accept([n])
        await store.pool.execute(
            "UPDATE deliveries SET destination_id = $2,"
            " destination = jsonb_build_object('type', 'webhook', 'destination_id', $3::text)"
            " WHERE notification_id = $1",
            n.id,
            destination_id,
            str(destination_id),
        )
        jobs.append(DeliveryJob(n.id, 0, 1, datetime.now(UTC)))
    return jobs


async def take_outbox(store: Store, jobs: Sequence[DeliveryJob]) -> list[DeliveryJob]:
    """The outbox rows of these jobs' deliveries, taken as a poller takes them."""
    rows = await store.pool.fetch(
        "DELETE FROM outbox WHERE notification_id = ANY ($1::uuid[])"
        " RETURNING notification_id, position, attempt, due_at",
        [j.notification_id for j in jobs],
    )
    return sorted((DeliveryJob(*r) for r in rows), key=lambda j: j.notification_id)


async def delivery(store: Store, job: DeliveryJob) -> dict[str, Any]:
    return (await store.get(job.notification_id, None))["deliveries"][0]


async def destination(store: Store, destination_id: UUID) -> dict[str, Any]:
    row = await store.pool.fetchrow("SELECT * FROM destinations WHERE id = $1", destination_id)
    return dict(row)


async def enable(store: Store, destination_id: UUID) -> None:
    """A PATCH {"enabled": true}, through the stored destinations' own update."""

    def merge(row: dict[str, Any]) -> Fields:
        return Fields(
            row["name"], row["description"], row["config"], row["topics"], row["rate_limit"], True
        )

    assert await Destinations(store.pool).update(destination_id, None, merge) is not None


async def test_delivered_with_the_destinations_config_at_send_time(
    store: Store, claims: Claims, sender: WebhookSender, receiver: Receiver
) -> None:
    d = await stored(store, {"url": receiver.url("old")})
    [job] = await send_to(store, d)
    # Changed after the accept: the send uses the destination as it is now.
    await store.pool.execute(
        "UPDATE destinations SET config = $2 WHERE id = $1",
        d,
        {"url": receiver.url("new"), "headers": {"X-Team": "ops"}},
    )
    async with Rig(store, claims, sender) as rig:
        await rig.run([job])
    assert receiver.count("old") == 0 and receiver.count("new") == 1
    [got] = receiver.received["new"]
    assert got.headers["X-Team"] == "ops" and "webhook-signature" not in got.headers
    assert got.json["id"] == str(job.notification_id)
    assert (await delivery(store, job))["status"] == "delivered"
    [attempt] = await store.pool.fetch(
        "SELECT destination_id FROM delivery_attempts WHERE notification_id = $1",
        job.notification_id,
    )
    assert attempt["destination_id"] == d
    assert (await destination(store, d))["failing_since"] is None


async def test_during_the_overlap_either_secret_verifies_after_it_only_the_new(
    store: Store, claims: Claims, sender: WebhookSender, receiver: Receiver
) -> None:
    old, new = secret(), secret()
    d = await stored(store, {"url": receiver.url("signed")}, signing=old)
    rotated = await Destinations(store.pool).rotate_secret(d, None, new, 3600)
    assert rotated.previous_until is not None
    [during] = await send_to(store, d)
    async with Rig(store, claims, sender) as rig:
        await rig.run([during])
        got = receiver.received["signed"][-1]
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        assert Webhook(new).verify(got.body, got.headers)
        assert Webhook(old).verify(got.body, got.headers)
        # The overlap ends.
        await store.pool.execute(
            "UPDATE destinations SET previous_secret_until = now() - interval '1 second'"
            " WHERE id = $1",
            d,
        )
        [after] = await send_to(store, d)
        await rig.run([after])
    got = receiver.received["signed"][-1]
    assert got.json["id"] == str(after.notification_id)
    assert len(got.headers["webhook-signature"].split(" ")) == 1
    assert Webhook(new).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(got.body, got.headers)


async def test_a_410_disables_after_one_attempt_and_enabling_delivers_what_waited(
    store: Store, claims: Claims, sender: WebhookSender, receiver: Receiver
) -> None:
    receiver.script["gone"] = [410]
    d = await stored(store, {"url": receiver.url("gone")})
    [first] = await send_to(store, d)
    async with Rig(store, claims, sender) as rig:
        await rig.run([first])
        assert receiver.count("gone") == 1
        gone = await destination(store, d)
        assert (
            gone["enabled"] is False and gone["disabled_reason"] == "the endpoint answered 410 Gone"
        )
        assert gone["disabled_at"] is not None
        paused = await delivery(store, first)
        assert paused["status"] == "paused" and paused["attempts"] == 1
        assert paused["last_status_code"] == 410
        assert (await store.get(first.notification_id, None))["status"] == "paused"
        [event] = await rig.events()
        schema("destination.disabled.v1.json")(event)
        assert event["data"]["destination_id"] == str(d) and event["data"]["cause"] == "gone"
        # Further notifications wait, unattempted.
        later = await send_to(store, d, 2)
        await rig.run(later)
        assert receiver.count("gone") == 1
        for job in later:
            waiting = await delivery(store, job)
            assert waiting["status"] == "paused" and waiting["attempts"] == 0
        assert await take_outbox(store, [first, *later]) == []  # nothing waits in the outbox
        # The endpoint is back; enabling re-drives all three, oldest first.
        receiver.script["gone"] = [410, 200]
        await enable(store, d)
        resumed = await take_outbox(store, [first, *later])
        assert [j.attempt for j in resumed] == [2, 1, 1]
        await rig.run(resumed)
        assert await rig.events() != []  # delivery.succeeded, one each
    assert receiver.count("gone") == 4
    for job in (first, *later):
        assert (await delivery(store, job))["status"] == "delivered"
    assert (await destination(store, d))["enabled"] is True


async def test_failing_past_disable_after_disables_and_a_success_ends_the_streak(
    store: Store, claims: Claims, sender: WebhookSender, receiver: Receiver
) -> None:
    receiver.script["flaky"] = [503, 200]
    d = await stored(store, {"url": receiver.url("flaky")})
    async with Rig(store, claims, sender, disable_after_s=3600) as rig:
        # The first failure starts the streak; a success ends it.
        [job] = await send_to(store, d)
        await rig.run([job])
        assert (await destination(store, d))["failing_since"] is not None
        [retry] = await take_outbox(store, [job])
        await rig.run([retry])
        assert (await destination(store, d))["failing_since"] is None
        # Failing for longer than disable_after: the next failure disables it.
        receiver.script["flaky"] = [503]
        since = datetime.now(UTC) - timedelta(hours=2)
        await store.pool.execute(
            "UPDATE destinations SET failing_since = $2 WHERE id = $1", d, since
        )
        [job] = await send_to(store, d)
        await rig.run([job])
        [event] = [e for e in await rig.events() if e["type"] == "destination.disabled"]
        assert event["data"]["cause"] == "failing"
    row = await destination(store, d)
    assert row["enabled"] is False
    assert row["disabled_reason"].startswith("failing without a success since ")
    assert (await delivery(store, job))["status"] == "paused"  # it would have been retried
    assert await take_outbox(store, [job]) == []


async def test_a_deleted_destination_cancels_its_delivery_without_a_send(
    store: Store, claims: Claims, sender: WebhookSender, receiver: Receiver
) -> None:
    d = await stored(store, {"url": receiver.url("deleted")})
    [job] = await send_to(store, d)
    # The row is gone but the delivery is still open: a job loaded after a delete it raced.
    await store.pool.execute("DELETE FROM destinations WHERE id = $1", d)
    async with Rig(store, claims, sender) as rig:
        await rig.run([job])
    assert receiver.count("deleted") == 0
    row = await delivery(store, job)
    assert row["status"] == "cancelled" and row["attempts"] == 0
    assert await store.attempts(job.notification_id) == []


async def test_a_pause_that_loses_the_race_with_an_enable_goes_back_to_the_outbox(
    store: Store, claims: Claims, sender: WebhookSender, receiver: Receiver
) -> None:
    d = await stored(store, {"url": receiver.url("raced")}, enabled=False)
    [job] = await send_to(store, d)
    rows = await store.load_jobs([job.key])
    assert rows[job.key]["destination_enabled"] is False
    # Enabled after the load, before the pause is written (nothing was paused to resume).
    await store.pool.execute("UPDATE destinations SET enabled = true WHERE id = $1", d)
    async with Rig(store, claims, sender) as rig:
        acked = asyncio.Event()
        now = datetime.now(UTC)
        await rig.work.put(Work(job, rows[job.key], "token-raced", acked.set, now))
        await asyncio.wait_for(acked.wait(), 10)
        assert (await delivery(store, job))["status"] == "pending"
        [again] = await take_outbox(store, [job])
        assert again.attempt == 1 and again.due_at <= datetime.now(UTC)
        await rig.run([again])
    assert receiver.count("raced") == 1
    assert (await delivery(store, job))["status"] == "delivered"


async def test_the_shared_budget_spaces_slots_and_honours_reservations(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    limits = DestinationLimits(redis, prefix=key_prefix)
    d, nid = uuid7(), uuid7()
    waits = [await limits.admit(d, 5, (nid, i), 1) for i in range(5)]
    assert waits[0] is None
    assert all(w is not None for w in waits[1:])
    spaced = [w for w in waits[1:] if w is not None]
    for i, w in enumerate(spaced, start=1):  # 0.2 s apart (less the time the calls took)
        assert 0.2 * i - 0.1 <= w <= 0.2 * i
    # A copy of a job that comes back before its slot waits for that same slot (not a new one,
    # and not at once: that would go over the budget) ...
    early = await limits.admit(d, 5, (nid, 1), 1)
    assert early is not None and early <= spaced[0]
    await asyncio.sleep(early)
    # ... and back at its slot, it goes without taking another ...
    assert await limits.admit(d, 5, (nid, 1), 1) is None
    # ... so the next newcomer queues behind the four reserved slots, not five.
    newcomer = await limits.admit(d, 5, (nid, 9), 1)
    assert newcomer is not None and 0.9 - early <= newcomer <= 1.0 - early
    # Another destination has its own budget.
    assert await limits.admit(uuid7(), 5, (nid, 0), 1) is None


async def test_without_redis_a_rate_limited_job_waits_a_second() -> None:
    down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limits = DestinationLimits(down, prefix="x")
    assert await limits.admit(uuid7(), 5, (uuid7(), 0), 1) == REDIS_AWAY_RETRY_S
    await down.aclose()


async def test_workers_read_a_stored_destination_as_it_is_now(store: Store) -> None:
    """The re-check a worker makes when a job comes due: enabled, disabled, or gone."""
    on = await stored(store, {"url": "https://example.com/a"})
    off = await stored(store, {"url": "https://example.com/b"}, enabled=False)
    gone = await stored(store, {"url": "https://example.com/c"})
    assert await Destinations(store.pool).delete(gone, None)
    states = await asyncio.gather(*(store.destination_state_of(i) for i in (on, off, gone)))
    assert [(s.gone, s.enabled) for s in states] == [(False, True), (False, False), (True, False)]
