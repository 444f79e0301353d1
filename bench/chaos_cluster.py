"""The roles of one chaos scenario, each `supervisor.py --roles <role>` as a process of its own,
pointed at the private services: start, SIGKILL, SIGTERM and restart them as the fault script
says, and act as the orchestrator would when one exits on its own (record it, restart it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import aiohttp

from tests.support.process import ROOT, free_port

SUPERVISOR = ROOT / "supervisor.py"


@cache
def supervisor_flags() -> str:
    """`supervisor.py --help`, read once: which flags this checkout's supervisor takes."""
    done = subprocess.run(
        [sys.executable, str(SUPERVISOR), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout


def takes_instance_id() -> bool:
    return "--instance-id" in supervisor_flags()


@dataclass(frozen=True)
class RoleSpec:
    """One process of the deployment: its name in reports, its supervisor flags."""

    name: str
    args: tuple[str, ...]

    @property
    def role(self) -> str:
        return self.args[1]


# The deployment every scenario runs: one process per role, two pollers on split ranges.
DEPLOYMENT = (
    RoleSpec("api", ("--roles", "api")),
    RoleSpec("router", ("--roles", "router")),
    RoleSpec("poller0", ("--roles", "poller", "--replica-index", "0", "--replica-count", "2")),
    RoleSpec("poller1", ("--roles", "poller", "--replica-index", "1", "--replica-count", "2")),
    RoleSpec("delivery", ("--roles", "delivery")),
)


@dataclass
class Exit:
    """A process that ended: on its own (`expected` False) or after our signal."""

    name: str
    code: int
    at: float  # time.time()
    expected: bool
    how: str  # "own", "sigterm", "sigkill"
    took_s: float | None = None  # for a SIGTERM: signal to exit


@dataclass
class RoleProcess:
    """One role's process over its incarnations; the port and instance id stay across them."""

    spec: RoleSpec
    env: dict[str, str]
    log_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    incarnation: int = 0
    expecting_exit: bool = False
    started_at: float = 0.0
    ready_at: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        args = [sys.executable, str(SUPERVISOR), *self.spec.args]
        if takes_instance_id():
            args += ["--instance-id", f"chaos-{self.name}"]  # the same on every restart
        return args

    def start(self) -> None:
        self.incarnation += 1
        key = "NOTIFI_API__PORT" if self.spec.role == "api" else "NOTIFI_METRICS__PORT"
        # Inherited NOTIFI_* settings would make runs differ from machine to machine.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFI_")}
        env = {**inherited, **self.env, key: str(self.port)}
        log = self.log_dir / f"{self.name}-{self.incarnation}.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.expecting_exit = False
        self.started_at, self.ready_at = time.time(), None

    async def wait_ready(self, timeout_s: float) -> bool:
        """Polls /readyz until 200; False when the process died or the time ran out."""
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.port}/readyz"
        timeout = aiohttp.ClientTimeout(total=1)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while time.monotonic() < deadline:
                if not self.alive:
                    return False
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url) as r:
                        if r.status == 200:
                            self.ready_at = time.time()
                            return True
                await asyncio.sleep(0.1)
        return False

    def kill(self) -> Exit | None:
        if not self.alive:
            return None
        assert self.proc is not None
        self.expecting_exit = True
        os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait()
        return Exit(self.name, code, time.time(), True, "sigkill")

    async def terminate(self, timeout_s: float) -> Exit | None:
        """SIGTERM and wait for the drain; past `timeout_s` it is killed (and says so)."""
        if not self.alive:
            return None
        assert self.proc is not None
        self.expecting_exit = True
        sent = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return Exit(self.name, -9, time.time(), True, "sigterm-timeout", time.time() - sent)
        return Exit(
            self.name, self.proc.returncode, time.time(), True, "sigterm", time.time() - sent
        )


@dataclass
class Cluster:
    """Every role of one scenario, plus the orchestrator's watch: a process that exits without
    being told to is recorded and started again after `restart_delay_s`, as Kubernetes or
    Compose would."""

    env: dict[str, str]
    log_dir: Path
    restart_delay_s: float = 2.0
    roles: dict[str, RoleProcess] = field(default_factory=dict)
    exits: list[Exit] = field(default_factory=list)
    _watch: asyncio.Task | None = None
    _readiness: set[asyncio.Task] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in DEPLOYMENT:
            self.roles[spec.name] = RoleProcess(spec, self.env, self.log_dir)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.roles['api'].port}"

    async def start(self, timeout_s: float = 90.0) -> None:
        for p in self.roles.values():
            p.start()
        results = await asyncio.gather(*(p.wait_ready(timeout_s) for p in self.roles.values()))
        failed = [p.name for p, ok in zip(self.roles.values(), results, strict=True) if not ok]
        if failed:
            raise RuntimeError(f"not ready in {timeout_s}s: {failed} (logs in {self.log_dir})")
        self._watch = asyncio.create_task(self._watch_exits())

    async def _watch_exits(self) -> None:
        while True:
            for p in self.roles.values():
                if p.proc is not None and not p.expecting_exit and p.proc.poll() is not None:
                    p.expecting_exit = True  # recorded once; restarted below
                    self.exits.append(Exit(p.name, p.proc.returncode, time.time(), False, "own"))
                    asyncio.get_running_loop().call_later(
                        self.restart_delay_s, self._restart_if_down, p
                    )
            await asyncio.sleep(0.1)

    def _restart_if_down(self, p: RoleProcess) -> None:
        if not p.alive and p.expecting_exit and self._watch is not None:
            p.start()

    def kill(self, name: str) -> None:
        exit_ = self.roles[name].kill()
        if exit_:
            self.exits.append(exit_)

    async def terminate(self, name: str, timeout_s: float) -> Exit | None:
        exit_ = await self.roles[name].terminate(timeout_s)
        if exit_:
            self.exits.append(exit_)
        return exit_

    def restart(self, name: str) -> None:
        p = self.roles[name]
        if not p.alive:
            p.start()
            # Readiness is only recorded; the fault's end is when the process was started.
            task = asyncio.get_running_loop().create_task(p.wait_ready(60))
            self._readiness.add(task)
            task.add_done_callback(self._readiness.discard)

    async def stop(self, timeout_s: float) -> list[Exit]:
        """The scenario's end: SIGTERM to all at once, SIGKILL to any still there after."""
        for task in list(self._readiness):
            task.cancel()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        done = await asyncio.gather(*(p.terminate(timeout_s) for p in self.roles.values()))
        return [e for e in done if e is not None]

    def kill_all(self) -> None:
        """The last resort in a `finally`: nothing outlives the run."""
        for task in list(self._readiness):
            task.cancel()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for p in self.roles.values():
            with contextlib.suppress(ProcessLookupError):
                p.kill()
