"""Private Postgres, Redis and tansu broker processes for fault tests and `make chaos`: each on
a free loopback port of its own, stoppable and restartable at will, never the shared
5432/6379 services. Whatever is still running is stopped at interpreter exit, even after a
failure.

    with PrivateServices() as services:
        services.postgres.stop("immediate"); services.postgres.start()  # data kept
        services.redis.kill(); services.redis.start()                    # back empty
        services.broker.kill(); services.broker.start()                  # back empty
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal, Protocol

from tests.support.process import free_port
from tests.support.tansu import TansuBroker

PG_BIN = Path(os.environ.get("NOTIFI_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = os.environ.get("NOTIFI_REDIS_SERVER", "redis-server")


class _Closeable(Protocol):
    def close(self) -> None: ...


# Everything started and not yet closed; closed at exit so no private service outlives us.
_OPEN: list[_Closeable] = []


@atexit.register
def _close_all() -> None:
    for service in reversed(list(_OPEN)):
        with contextlib.suppress(Exception):
            service.close()


def _track(service: _Closeable) -> None:
    if service not in _OPEN:
        _OPEN.append(service)


def _untrack(service: _Closeable) -> None:
    with contextlib.suppress(ValueError):
        _OPEN.remove(service)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class PrivatePostgres:
    """A throw-away Postgres cluster: `initdb` in a temp folder (once), its own port, trust
    auth, `fsync=off` (the OS survives a stop, so nothing committed is lost). Postgres refuses
    to run as root, so as root the commands run as the `postgres` user."""

    def __init__(self, *, port: int | None = None, bin_dir: Path = PG_BIN) -> None:
        self.port = port or free_port()
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="notifi-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self._initialized = False
        if os.geteuid() == 0:
            # mkdtemp makes a 0700 root folder; the postgres user must own what it writes.
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            start_new_session=True,  # a Ctrl-C of ours is not theirs: we stop them ourselves
        )

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return _listening(self.port)

    def start(self, timeout_s: float = 60.0) -> PrivatePostgres:
        _track(self)
        if not self._initialized:
            self._run(
                "initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres",
                "--no-sync", "-E", "UTF8",
            )  # fmt: skip
            self._initialized = True
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
            f" -c unix_socket_directories={self.root} -c max_connections=300"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options,
            "-w", "-t", str(int(timeout_s)), "start",
            timeout_s=timeout_s + 5,
        )  # fmt: skip
        return self

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """`immediate` is a crash as far as clients can tell: no goodbye to connections, and
        the next start replays the WAL. The data folder is kept either way."""
        if self._initialized and (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: Literal["fast", "immediate"] = "fast") -> PrivatePostgres:
        self.stop(mode)
        return self.start()

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        _untrack(self)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrivateRedis:
    """A Redis with no persistence on its own port: after `kill()` and `start()` it is empty,
    like a restarted cache in production."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.root = Path(tempfile.mkdtemp(prefix="notifi-redis-"))
        self._proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 20.0) -> PrivateRedis:
        _track(self)
        if self.running:
            return self
        # No RDB snapshots, no AOF: a restart is an empty Redis.
        options = f"--port {self.port} --bind 127.0.0.1 --appendonly no --dir {self.root}"
        self._proc = subprocess.Popen(
            [REDIS_SERVER, *options.split(), "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            if self._pong():
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"redis-server did not answer on {self.port} in {timeout_s}s")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: everything in memory is gone."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        _untrack(self)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrivateBroker(TansuBroker):
    """tansu on a port of its own. It keeps everything in memory, so `kill()` then `start()`
    is a broker that lost its topics, messages and committed offsets; the port stays."""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 20.0) -> PrivateBroker:
        _track(self)
        if not self.running:
            super().start(timeout_s)
        return self

    def kill(self) -> None:
        self.stop()  # TansuBroker.stop is a SIGKILL of its process group

    def pause(self) -> None:
        """Freezes the broker (SIGSTOP): connections stay open and nothing is answered."""
        assert self._proc is not None
        os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.killpg(self._proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        _untrack(self)


class PrivateServices:
    """The three together, started in parallel-safe order and all closed on exit."""

    def __init__(self) -> None:
        self.postgres = PrivatePostgres()
        self.redis = PrivateRedis()
        self.broker = PrivateBroker()

    def start(self) -> PrivateServices:
        try:
            self.postgres.start()
            self.redis.start()
            self.broker.start()
        except BaseException:
            self.close()
            raise
        return self

    def ensure_running(self) -> None:
        """Brings back whatever a fault left stopped (the next scenario starts whole)."""
        if not self.postgres.running:
            self.postgres.start()
        self.redis.start()
        self.broker.start()

    def close(self) -> None:
        for service in (self.broker, self.redis, self.postgres):
            with contextlib.suppress(Exception):
                service.close()

    def __enter__(self) -> PrivateServices:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
