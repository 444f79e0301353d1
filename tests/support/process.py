"""Runs `supervisor.py` as a real process for acceptance tests, and talks to it over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotifiProcess:
    def __init__(self, args: list[str], env: dict[str, str], *, ready_port: int) -> None:
        self.args, self.env, self.ready_port = args, env, ready_port
        self.proc: subprocess.Popen | None = None
        # The process writes this file for its whole life; it is kept for the failure report.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="notifi-", suffix=".log", delete=False
        )

    def start(self) -> NotifiProcess:
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "supervisor.py"), *self.args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.ready_port}/readyz"
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"exited {self.proc.returncode}:\n{self.output()}")
                try:
                    async with http.get(url) as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"not ready in {timeout_s}s:\n{self.output()}")

    def output(self, limit: int | None = 6000) -> str:
        text = Path(self.log.name).read_text(errors="replace")
        return text if limit is None else text[-limit:]

    async def wait_exit(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"did not exit in {timeout_s}s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
