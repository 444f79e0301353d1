"""Single POSTs at full speed from Debian's `wrk` (compiled, so the generator is not the limit;
its own CPU is reported from the kernel's accounting of the child). Every request carries a
unique marker ("<phase>:<thread>-<n>") so its webhook is counted like any other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

SCRIPT = r"""
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  phase = args[1]
  fields = args[2]
  n = 0
end
request = function()
  n = n + 1
  local body = '{"body":"' .. phase .. ':' .. tid .. '-' .. n .. '",' .. fields .. '}'
  return wrk.format("POST", "/api/notifications", {["Content-Type"] = "application/json"}, body)
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    per_s: float
    non_2xx: int
    errors: int  # connect/read/write/timeout
    p50_ms: float
    p99_ms: float
    cpu_s: float  # wrk's own user + system time
    wall_s: float


def find_wrk() -> str | None:
    """`wrk` on PATH; installs Debian's package when missing and we may (root with apt-get)."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    for cmd in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"]):
        subprocess.run(cmd, capture_output=True, timeout=300, check=False)
        if shutil.which("wrk"):
            break
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, timeout=300)
    return shutil.which("wrk")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse(out: str) -> tuple[int, float, int, int, float, float]:
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    return (
        requests,
        per_s,
        int(non.group(1)) if non else 0,
        sum(int(g) for g in errs.groups()) if errs else 0,
        _ms(p50.group(1)) if p50 else float("nan"),
        _ms(p99.group(1)) if p99 else float("nan"),
    )


def run_wrk(
    wrk: str, api: str, fields: str, phase: str, seconds: float, connections: int = 64
) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(SCRIPT)
    try:
        argv = [
            wrk, "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "-s", f.name, f"{api}/api/notifications", "--", phase, fields,
        ]  # fmt: skip
        started = time.monotonic()
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.monotonic() - started
            out.seek(0)
            text = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"wrk exited {proc.returncode}: {text[-2000:]}")
        requests, per_s, non_2xx, errors, p50, p99 = parse(text)
        return WrkResult(
            requests, per_s, non_2xx, errors, p50, p99, usage.ru_utime + usage.ru_stime, wall
        )
    finally:
        os.unlink(f.name)
