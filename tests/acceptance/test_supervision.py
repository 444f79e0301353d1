"""The supervisor as a process: a crash loop ends it with a non-zero exit, bad settings stop it
at start with a message naming the setting, and flags are checked."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

import aiohttp
import pytest

from tests.support.process import ROOT, NotifiProcess, free_port


async def test_crash_loop_exits_non_zero(settings_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **settings_env,
            "NOTIFI_API__PORT": str(port),
            "NOTIFI_SUPERVISOR__MAX_RESTARTS": "3",
            "NOTIFI_SUPERVISOR__RESTART_PERIOD": "30",
        }
        proc = NotifiProcess(["--roles", "all"], env, ready_port=free_port()).start()
        try:
            code = await proc.wait_exit(60)
        finally:
            proc.kill()
    assert code == 1, proc.output()
    # The whole log: the shared test database may hold other tests' open deliveries, whose
    # attempts this process logs too and which can push the crashes out of a tail.
    out = proc.output(limit=None)
    assert "actor_crashed" in out and '"api"' in out
    assert "supervisor_gave_up" in out


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "supervisor.py"), *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--roles", "api"], {}, "bus.kind = memory"),
        (["--roles", "pigeon"], {}, "--roles"),
        (["--partitions", "9-2"], {}, "--partitions"),
        (["--partitions", "a-b"], {}, "--partitions"),
        (["--replica-index", "3", "--replica-count", "2"], {}, "--replica-index"),
        (["--replica-index", "1"], {}, "--replica-count"),
        (["--delivery-workers", "0"], {}, "--delivery-workers"),
        ([], {"NOTIFI_API__PORT": "http"}, "api.port"),
        ([], {"NOTIFI_API__HOST": "0.0.0.0"}, "auth.mode = none"),
        ([], {"NOTIFI_DELIVERY__RETRY_SCHEDULE": "[1, -1]"}, "delivery.retry_schedule"),
        ([], {"NOTIFI_AUTH__MODE": "tokens"}, "auth.clients"),
        (
            [],
            {
                "NOTIFI_AUTH__MODE": "tokens",
                "NOTIFI_AUTH__CLIENTS": '[{id = "a", secret_sha256 = "x"}]',
            },
            "auth.clients[0].secret_sha256",
        ),
        ([], {"NOTIFI_AUTH__MODE": "cloudflare"}, "auth.team_domain"),
        ([], {"NOTIFI_API__RATE_LIMIT": "-1"}, "api.rate_limit"),
    ],
)
def test_bad_start_up_is_refused_with_a_message(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run(args, env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_migrate_command(dsn: str) -> None:
    result = run(["migrate"], {"NOTIFI_POSTGRES__DSN": dsn})
    assert result.returncode == 0, result.stderr
    assert "migrations_done" in result.stderr


def test_unreachable_postgres_stops_start_up_with_a_message() -> None:
    result = run([], {"NOTIFI_POSTGRES__DSN": "postgresql://postgres@127.0.0.1:1/none"})
    assert result.returncode == 3, result.stderr
    assert "start_failed" in result.stderr
    assert "Traceback" not in result.stderr


async def test_readiness_fails_first_on_sigterm(settings_env: dict[str, str]) -> None:
    port = free_port()
    env = {**settings_env, "NOTIFI_API__PORT": str(port), "NOTIFI_SUPERVISOR__DRAIN_DELAY": "1"}
    proc = NotifiProcess(["--roles", "all"], env, ready_port=port).start()
    try:
        await proc.wait_ready()
        proc.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as r,
        ):
            assert r.status == 503  # still serving, no longer ready
            assert (await r.json())["checks"]["accepting"] is False
        assert await proc.wait_exit(30) == 0
    finally:
        proc.kill()
