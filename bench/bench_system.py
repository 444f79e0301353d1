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
from pathlib import Path

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from bench.bench_cpu import descendants, parent_pid, pids_with_args
from bench.chaos_cluster import Cluster
from tests.support.process import ROOT, NotifiProcess, free_port
from tests.support.services import PrivateRedis
from tests.support.tansu import BINARY as TANSU
from tests.support.tansu import TansuBroker, kafka_env

# The shared Postgres `make bench` runs on (each run on a fresh database of it).
SHARED_PG = os.environ.get("NOTIFI_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
# Postgres's own processes: their work (WAL, checkpoints) is partly ours, partly any other
# database's on a shared server, so they are shown on their own line.
PG_SHARED = ("walwriter", "checkpointer", "background writer", "autovacuum launcher")


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

    def env(self) -> dict[str, str]:
        env = {
            "NOTIFI_POSTGRES__DSN": f"{self.pg}/{self.db}",
            "NOTIFI_REDIS__URL": self.redis.url,
            "NOTIFI_DELIVERY__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
            "NOTIFI_LOG__LEVEL": "warning",
        }
        if self.broker is not None:
            env |= kafka_env(self.broker.bootstrap, self.topics)
        elif self.mode == "split" and self.kafka is not None:
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
            if self.kafka is None:
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
        elif self.mode == "split" and self.kafka is not None:
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


# The arq peer's virtualenv, beside Notifi's (bench.arq_peer says why it has its own).
ARQ_VENV = Path(sys.prefix).parent / ".venv-arq"
ARQ_REQUIREMENTS = ROOT / "bench" / "arq_peer.txt"


def arq_python() -> Path:
    """The peer's interpreter, its virtualenv made or brought up to date first."""
    python, stamp = ARQ_VENV / "bin" / "python", ARQ_VENV / ".installed"
    if stamp.exists() and stamp.read_bytes() == ARQ_REQUIREMENTS.read_bytes():
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ARQ_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "-r", str(ARQ_REQUIREMENTS)]
    subprocess.run(pip, check=True)
    stamp.write_bytes(ARQ_REQUIREMENTS.read_bytes())
    return python


class ArqSystem:
    """The arq peer (bench.arq_peer) as the system under test: its api and worker processes
    and a private Redis, with the interface of `System`."""

    mode = "arq"

    def __init__(self) -> None:
        self.redis = PrivateRedis()
        self.procs: dict[str, subprocess.Popen] = {}
        self.api = ""
        self.log = Path(tempfile.mkdtemp(prefix="notifi-bench-arq-")) / "peer.log"

    def _spawn(self, python: Path, *args: str) -> subprocess.Popen:
        with self.log.open("ab") as log:  # both processes', kept for a failure's report
            return subprocess.Popen(
                [str(python), "-m", "bench.arq_peer", *args, "--redis", self.redis.url],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _failed(self, what: str) -> RuntimeError:
        tail = self.log.read_text(errors="replace")[-3000:]
        return RuntimeError(f"the arq peer {what} (its log, {self.log}):\n{tail}")

    async def start(self) -> None:
        python = arq_python()
        self.redis.start()
        port = free_port()
        for i in range(int(os.environ.get("ARQ_PEER_WORKERS", "1"))):
            self.procs[f"arq worker {i}"] = self._spawn(python, "worker")
        self.procs["arq api"] = self._spawn(python, "api", "--port", str(port))
        self.api = f"http://127.0.0.1:{port}"
        client = aioredis.from_url(self.redis.url)
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    if any(p.poll() is not None for p in self.procs.values()):
                        raise self._failed("exited while starting")
                    # The worker writes its health-check key at its first poll.
                    if await client.exists("arq:queue:health-check"):
                        with contextlib.suppress(aiohttp.ClientError):
                            async with http.get(f"{self.api}/readyz") as r:
                                if r.status == 200:
                                    return
                    await asyncio.sleep(0.1)
        finally:
            await client.aclose()
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
        # SIGTERM is how both stop: arq's worker exits 0, aiohttp's app with -15.
        return [0 if c in (0, -signal.SIGTERM) else c for c in codes]
