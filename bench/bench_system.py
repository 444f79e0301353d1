"""The system under test of `make bench`: `supervisor.py --roles all` (embedded) or the roles as
separate processes over a private tansu broker (split, the chaos deployment: api, router, two
pollers, delivery), each on a fresh database of the shared Postgres and a private Redis, and
the process groups whose CPU counts as the system's."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from bench.bench_cpu import descendants, parent_pid, pids_with_args
from bench.chaos_cluster import Cluster
from tests.support.process import NotifiProcess, free_port
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

    def __init__(self, mode: str, pg: str, settings: dict[str, str]) -> None:
        self.mode, self.pg = mode, pg
        self.db = f"notifi_bench_{uuid.uuid4().hex[:8]}"
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
            env |= kafka_env(self.broker.bootstrap, f"b{uuid.uuid4().hex[:8]}")
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
