"""The bench's systems: what the peers of `--modes arq` and `--modes celery` (bench.arq_peer,
bench.celery_peer) take from a request and how the Celery one starts, the modes the bench
accepts, and split over an outside Kafka (`--kafka`). The peers' processes need virtualenvs of
their own; `make bench` runs them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.__main__ import parse_args
from bench.bench_system import CelerySystem, System
from bench.peers import BadItem, Peer, api, jobs_of, retryable
from notifi.destinations.webhook import retryable_status

HOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook"}


def test_a_notification_becomes_one_job_per_webhook_with_what_the_receiver_reads() -> None:
    urls, payload, due = jobs_of({"body": "steady:1", "destinations": [HOOK, HOOK]})
    assert urls == [HOOK["url"], HOOK["url"]]
    assert orjson.loads(payload) == {"title": None, "body": "steady:1", "data": None}
    assert due is None


def test_a_scheduled_notification_is_deferred_to_its_time() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    item = {"body": "x", "destinations": [HOOK], "scheduled_at": when.isoformat()}
    assert jobs_of(item)[2] == when


@pytest.mark.parametrize(
    "item",
    [
        None,
        [],
        {"destinations": [HOOK]},
        {"body": 1, "destinations": [HOOK]},
        {"body": "x"},
        {"body": "x", "destinations": []},
        {"body": "x", "destinations": [{"type": "email", "to": "a@example.com"}]},
        {"body": "x", "destinations": [{**HOOK, "secret": "whsec_x"}]},
        {"body": "x", "destinations": [{"type": "webhook"}]},
        {"body": "x", "destinations": [HOOK], "scheduled_at": "soon"},
        {"body": "x", "destinations": [HOOK], "scheduled_at": "2030-01-02T03:04:05"},
    ],
)
def test_what_the_peer_cannot_deliver_is_refused(item: object) -> None:
    with pytest.raises(BadItem):
        jobs_of(item)


def test_the_bench_takes_known_modes_once_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--modes", "embedded,arq"]).modes == ["embedded", "arq"]
    assert parse_args(["--modes", "celery,embedded"]).modes == ["celery", "embedded"]
    assert parse_args([]).modes == ["embedded", "split"]
    for bad in ("rq", "embedded,embedded", "embedded,", ""):
        with pytest.raises(SystemExit) as exited:
            parse_args(["--modes", bad])
        assert exited.value.code == 2
    assert "give one or more of embedded, split, arq, celery" in capsys.readouterr().err


def test_split_over_an_outside_kafka_keeps_kafkas_defaults() -> None:
    system = System("split", "postgresql://x", {}, kafka="kafka-1:9092,kafka-2:9092")
    env = system.env()
    assert env["NOTIFI_BUS__KIND"] == "kafka"
    assert env["NOTIFI_KAFKA__BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092"
    assert env["NOTIFI_KAFKA__TOPIC_PREFIX"] == system.env()["NOTIFI_KAFKA__TOPIC_PREFIX"]
    assert not any(
        k.startswith("NOTIFI_KAFKA__") for k in env if "SERVERS" not in k and "PREFIX" not in k
    )
    embedded = System("embedded", "postgresql://x", {}, kafka="kafka-1:9092").env()
    assert "NOTIFI_BUS__KIND" not in embedded  # embedded is the in-process bus, always


@pytest.mark.parametrize("bad", ["kafka", "kafka:", ":9092", "kafka:0", "kafka:x", "a:1,b"])
def test_a_malformed_kafka_address_is_refused(bad: str) -> None:
    assert parse_args(["--kafka", "h:9092,[::1]:9093"]).kafka == "h:9092,[::1]:9093"
    with pytest.raises(SystemExit) as exited:
        parse_args(["--kafka", bad])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--modes", "arq", "--target", "signed"], "the peer takes the inline target only"),
        (["--modes", "embedded,arq", "--env", "NOTIFI_LOG__LEVEL=info"], "no --env"),
        (["--modes", "arq", "--profile", "p.txt"], "no --profile"),
        (["--modes", "embedded,celery", "--target", "topic"], "--modes celery: the peer takes"),
        (["--modes", "celery", "--env", "NOTIFI_LOG__LEVEL=info"], "no --env"),
        (["--modes", "embedded", "--kafka", "k:9092"], "add split to --modes"),
    ],
)
def test_what_a_mode_cannot_take_is_refused(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_the_celery_peer_runs_a_prefork_worker_on_its_private_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_PEER_CONCURRENCY", "3")
    system = CelerySystem()
    commands = system.commands(Path("/venv/bin/python"), 8091)
    assert list(commands) == ["celery worker", "celery api"]  # CPU groups: "celery ..."
    worker = commands["celery worker"]
    assert worker[:6] == ["/venv/bin/python", "-m", "celery", "-A", "bench.celery_peer", "worker"]
    assert worker[worker.index("--pool") + 1] == "prefork"
    assert worker[worker.index("--concurrency") + 1] == "3"
    assert commands["celery api"][-2:] == ["--port", "8091"]
    assert system.env()["CELERY_PEER_REDIS"] == system.redis.url


async def test_a_peers_api_sends_each_webhook_and_refuses_what_it_cannot_deliver() -> None:
    sent: list[tuple[list[str], bytes, datetime | None]] = []
    up = False

    async def send(urls: list[str], payload: bytes, due: datetime | None) -> str:
        sent.append((urls, payload, due))
        return f"job-{len(sent)}"

    async def ready() -> bool:
        return up

    async def start() -> Peer:
        return Peer(send, ready)

    async with TestClient(TestServer(api(start))) as client:
        assert (await client.get("/readyz")).status == 503
        up = True
        assert (await client.get("/readyz")).status == 200
        r = await client.post("/api/notifications", json={"body": "a:1", "destinations": [HOOK]})
        assert (r.status, (await r.json())["id"]) == (202, "job-1")
        assert sent == [
            ([HOOK["url"]], orjson.dumps({"title": None, "body": "a:1", "data": None}), None)
        ]
        r = await client.post("/api/notifications", data=b"{not json")
        assert r.status == 422 and len(sent) == 1
        when = "2030-01-02T03:04:05+00:00"
        items = [{"body": "b:1", "destinations": [HOOK], "scheduled_at": when}, {"body": 2}]
        r = await client.post("/api/notifications/bulk", json={"notifications": items})
        assert [i["status"] for i in (await r.json())["items"]] == [202, 422]
        assert sent[-1][2] == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert (await client.post("/api/notifications/bulk", json={"x": 1})).status == 422
        for not_a_list in (5, {"a": 1}, "ab"):
            r = await client.post("/api/notifications/bulk", json={"notifications": not_a_list})
            assert r.status == 422
        assert len(sent) == 2


@pytest.mark.parametrize(
    ("status", "again"),
    [(500, True), (503, True), (408, True), (425, True), (429, True), (404, False), (200, False)],
)
def test_the_peers_try_again_what_notifi_tries_again(status: int, again: bool) -> None:
    assert retryable(status) is again


def test_the_peers_retry_rule_is_notifis_for_every_status() -> None:
    assert [s for s in range(100, 600) if retryable(s)] == [
        s for s in range(100, 600) if retryable_status(s)
    ]
