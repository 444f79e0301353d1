"""The system under test of `make bench`: `supervisor.py --roles all` (embedded) or the roles as
separate processes over a private tansu broker (split, the chaos deployment: api, router, two
pollers, delivery), each on a fresh database of the shared Postgres and a private Redis, and
the process groups whose CPU counts as the system's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from bench.bench_cpu import descendants, parent_pid, pids_with_args
from bench.chaos_cluster import Cluster
from notifi.store.migrate import prepare_database
from tests.support.process import ROOT, NotifiProcess, free_port
from tests.support.services import PrivateRedis
from tests.support.tansu import BINARY as TANSU
from tests.support.tansu import TansuBroker, kafka_env

# The shared Postgres `make bench` runs on (each run on a fresh database of it).
SHARED_PG = os.environ.get("NOTIFI_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
# Postgres's own processes: their work (WAL, checkpoints) is partly ours, partly any other
# database's on a shared server, so they are shown on their own line.
PG_SHARED = ("walwriter", "checkpointer", "background writer", "autovacuum launcher")


@asynccontextmanager
async def fresh_database(pg: str, prefix: str) -> AsyncIterator[str]:
    """The dsn of a new database of the server `pg` (named `prefix` and a random suffix) at the
    current schema, dropped after, whoever still holds a connection to it."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    dsn = f"{pg}/{name}"
    try:
        await prepare_database(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(f"{pg}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


class System:
    """Start, the API's URL, and the groups of pids to charge CPU to."""

    def __init__(
        self, mode: str, pg: str, settings: dict[str, str], kafka: str | None = None
    ) -> None:
        """`kafka`: split runs over this broker (bootstrap servers) instead of a private tansu."""
        self.mode, self.pg, self.kafka = mode, pg, kafka
        self.db = f"notifi_bench_{uuid.uuid4().hex[:8]}"
        self.topics = f"b{uuid.uuid4().hex[:8]}"  # this run's topic prefix
        self.redis = PrivateRedis()
        self.broker: TansuBroker | None = None
        self.settings = settings
        self.embedded: NotifiProcess | None = None
        self.cluster: Cluster | None = None
        self._admin: asyncpg.Connection | None = None

    @property
    def outside_kafka(self) -> bool:
        """Split over a Kafka given with `--kafka`, not a private tansu."""
        return self.mode == "split" and self.kafka is not None

    def env(self) -> dict[str, str]:
        env = {
            "NOTIFI_POSTGRES__DSN": f"{self.pg}/{self.db}",
            "NOTIFI_REDIS__URL": self.redis.url,
            "NOTIFI_DELIVERY__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            "NOTIFI_LOG__LEVEL": "warning",
        }
        if self.broker is not None:
            env |= kafka_env(self.broker.bootstrap, self.topics)
        elif self.outside_kafka:
            # A real Kafka: its defaults are right (idempotent producer, fetch waits, group
            # timeouts); only where and under which names.
            env |= {
                "NOTIFI_BUS__KIND": "kafka",
                "NOTIFI_KAFKA__BOOTSTRAP_SERVERS": self.kafka,
                "NOTIFI_KAFKA__TOPIC_PREFIX": self.topics,
            }
        return env | self.settings  # what the caller asked for wins

    async def start(self) -> None:
        self.redis.start()
        self._admin = await asyncpg.connect(f"{self.pg}/postgres")
        await self._admin.execute(f'CREATE DATABASE "{self.db}"')
        if self.mode == "embedded":
            port = free_port()
            env = {**self.env(), "NOTIFI_API__PORT": str(port)}
            self.embedded = NotifiProcess(["--roles", "all"], env, ready_port=port).start()
            self.api = f"http://127.0.0.1:{port}"
            await self.embedded.wait_ready(90)
        else:
            if not self.outside_kafka:
                self.broker = TansuBroker().start()
            log_dir = Path(tempfile.mkdtemp(prefix="notifi-bench-"))
            self.cluster = Cluster(self.env(), log_dir)
            await self.cluster.start(90)
            self.api = self.cluster.api_url

    def notifi_pids(self) -> dict[str, list[int]]:
        if self.embedded is not None and self.embedded.proc is not None:
            return {"notifi": descendants(self.embedded.proc.pid)}
        assert self.cluster is not None
        return {
            f"notifi {name}": descendants(p.proc.pid)
            for name, p in self.cluster.roles.items()
            if p.proc is not None
        }

    async def groups(self) -> dict[str, list[int]]:
        """Every process the system's CPU is read from, by group, as of now."""
        assert self._admin is not None
        rows = await self._admin.fetch(
            "SELECT pid, datname, backend_type FROM pg_stat_activity"
            " WHERE datname = $1 OR backend_type = ANY($2::text[])",
            self.db,
            list(PG_SHARED),
        )
        ours = [r["pid"] for r in rows if r["datname"] == self.db]
        shared = [r["pid"] for r in rows if r["datname"] != self.db]
        if shared and (postmaster := parent_pid(shared[0])):
            shared.append(postmaster)
        out = {**self.notifi_pids(), "postgres backends": ours, "postgres shared": shared}
        out["redis"] = pids_with_args("redis-server", f":{self.redis.port}")
        if self.broker is not None:
            out["tansu broker"] = pids_with_args(str(TANSU), f":{self.broker.port}")
        elif self.outside_kafka:
            # Counted when it runs on this machine (Kafka's JVM names its main class).
            out["kafka broker"] = pids_with_args("kafka.Kafka")
        return out

    def pid(self) -> int:
        """The embedded process (what the profiler attaches to)."""
        assert self.embedded is not None and self.embedded.proc is not None
        return self.embedded.proc.pid

    async def redis_keys(self) -> int:
        client = aioredis.from_url(self.redis.url)
        try:
            return await client.dbsize()
        finally:
            await client.aclose()

    async def stop(self) -> list[int]:
        codes: list[int] = []
        try:
            if self.embedded is not None:
                codes.append(await self.embedded.terminate(60))
                self.embedded.kill()
            if self.cluster is not None:
                codes += [e.code for e in await self.cluster.stop(60)]
                self.cluster.kill_all()
        finally:
            if self.broker is not None:
                self.broker.stop()
            self.redis.close()
            if self._admin is not None:
                await self._admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
                await self._admin.close()
        return codes


def peer_python(name: str) -> Path:
    """The interpreter of a bench peer (`arq`, `celery`): its own virtualenv beside Notifi's,
    `.venv-<name>`, made from bench/<name>_peer.txt or brought up to date first (each peer's
    module says why it has its own)."""
    venv, requirements = (
        Path(sys.prefix).parent / f".venv-{name}",
        ROOT / "bench" / f"{name}_peer.txt",
    )
    python, stamp = venv / "bin" / "python", venv / ".installed"
    if stamp.exists() and stamp.read_bytes() == requirements.read_bytes():
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)]
    subprocess.run(pip, check=True)
    stamp.write_bytes(requirements.read_bytes())
    return python


class PeerSystem:
    """A bench peer (bench.arq_peer, bench.celery_peer) as the system under test: its api and
    worker processes and a private Redis, with the interface of `System`."""

    mode = ""

    def __init__(self) -> None:
        self.redis = PrivateRedis()
        self.procs: dict[str, subprocess.Popen] = {}
        self.api = ""
        self.log = Path(tempfile.mkdtemp(prefix=f"notifi-bench-{self.mode}-")) / "peer.log"

    def commands(self, python: Path, port: int) -> dict[str, list[str]]:
        """The peer's processes by name (their CPU groups), workers first."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        with self.log.open("ab") as log:  # every process's, kept for a failure's report
            return subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _failed(self, what: str) -> RuntimeError:
        tail = self.log.read_text(errors="replace")[-3000:]
        return RuntimeError(f"the {self.mode} peer {what} (its log, {self.log}):\n{tail}")

    async def start(self) -> None:
        python = peer_python(self.mode)
        self.redis.start()
        port = free_port()
        for name, argv in self.commands(python, port).items():
            self.procs[name] = self._spawn(argv)
        self.api = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                if any(p.poll() is not None for p in self.procs.values()):
                    raise self._failed("exited while starting")
                with contextlib.suppress(aiohttp.ClientError):  # the api answers 200 once the
                    async with http.get(f"{self.api}/readyz") as r:  # workers are up
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise self._failed("was not ready in 30 s")

    async def groups(self) -> dict[str, list[int]]:
        out = {name: descendants(p.pid) for name, p in self.procs.items()}
        out["redis"] = pids_with_args("redis-server", f":{self.redis.port}")
        return out

    def pid(self) -> int:
        raise RuntimeError("--profile profiles Notifi's embedded process only")

    async def stop(self) -> list[int]:
        codes = []
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                codes.append(await asyncio.to_thread(p.wait, 30))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                codes.append(await asyncio.to_thread(p.wait))
        self.redis.close()
        # SIGTERM is how they stop: arq's and Celery's workers exit 0, aiohttp's app with -15.
        return [0 if c in (0, -signal.SIGTERM) else c for c in codes]


class ArqSystem(PeerSystem):
    """bench.arq_peer: `ARQ_PEER_WORKERS` worker processes (1) and the api, which answers
    /readyz once a worker has polled."""

    mode = "arq"

    def commands(self, python: Path, port: int) -> dict[str, list[str]]:
        peer = [str(python), "-m", "bench.arq_peer"]
        redis = ["--redis", self.redis.url]
        workers = int(os.environ.get("ARQ_PEER_WORKERS", "1"))
        out = {f"arq worker {i}": [*peer, "worker", *redis] for i in range(workers)}
        out["arq api"] = [*peer, "api", "--port", str(port), *redis]
        return out


class CelerySystem(PeerSystem):
    """bench.celery_peer: a prefork worker (`CELERY_PEER_CONCURRENCY` children, 4) and the api,
    which answers /readyz once a worker answers a ping."""

    mode = "celery"

    def env(self) -> dict[str, str]:
        return {**os.environ, "CELERY_PEER_REDIS": self.redis.url}

    def commands(self, python: Path, port: int) -> dict[str, list[str]]:
        concurrency = os.environ.get("CELERY_PEER_CONCURRENCY", "4")
        worker = [
            str(python), "-m", "celery", "-A", "bench.celery_peer", "worker",
            "--pool", "prefork", "--concurrency", concurrency, "-O", "fair",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "WARNING",
        ]  # fmt: skip
        api = [str(python), "-m", "bench.celery_peer", "api", "--port", str(port)]
        return {"celery worker": worker, "celery api": api}
