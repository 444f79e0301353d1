"""`make bench`: the figures of issue 11 for `supervisor.py --roles all` (embedded) and for the
roles as separate processes over a private tansu broker (split), printed as one table with the
machine it ran on.

    python -m bench                 # full: ~1,000/s for 30 s, 5,000 spread, 10,000 at once ...
    python -m bench --quick         # the same workloads, smaller: under 2 minutes
    python -m bench --modes embedded --profile bench/results/profile.txt   # py-spy, steady phase
    python -m bench --quick --target topic   # to a topic of one stored destination (signed)
    python -m bench --quick --commit 826d13a  # a snapshot of a commit (bench/snapshot.py)

The system's CPU is read from /proc for Notifi's processes, the Postgres backends of the
bench's own database (plus Postgres's shared background processes, shown apart) and a private
Redis; the load generators and the receiver run in processes of their own and are left out.
Settings are `make run`'s defaults, with loopback destinations allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import uvloop

from bench import overrides
from bench.bench_phases import FULL, QUICK, Phases, Results
from bench.bench_system import SHARED_PG, ArqSystem, CelerySystem, PeerSystem, System
from bench.bench_wrk import find_wrk
from bench.load import target_fields
from bench.snapshot import git, run_snapshot, snapshot_of
from tests.support.process import ROOT

PEERS = {"arq": ArqSystem, "celery": CelerySystem}  # issue 11's peers (bench.arq_peer, celery_peer)
MODES = ("embedded", "split", *PEERS)
# Whose CPU counts as the system's: the service's processes (Notifi's or a peer's), its Postgres
# and its Redis; a broker is shown apart.
SYSTEM_GROUPS = ("notifi", *PEERS, "postgres backends", "postgres shared", "redis")
# The signing secret of `--target signed` and `topic` (a stored webhook always has one), so the
# two compare like for like.
BENCH_SECRET = "whsec_" + "QmVuY2ggc2VjcmV0IGZvciBzaWduaW5nIQ=="
TARGETS = ("inline", "signed", "topic")


async def target(name: str, api: str, hook: str) -> str:
    """Where every notification of the run goes (bench.load's `fields`): an unsigned inline
    webhook, a signed inline webhook, or the topic of one stored destination (created here)."""
    webhook = {"type": "webhook", "url": hook}
    if name == "inline":
        return target_fields({"destinations": [webhook]})
    if name == "signed":
        return target_fields({"destinations": [{**webhook, "secret": BENCH_SECRET}]})
    stored = {**webhook, "secret": BENCH_SECRET, "topics": ["bench"]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{api}/api/destinations", json=stored) as r,
    ):
        if r.status != 201:
            raise RuntimeError(f"creating the bench's destination: {r.status} {await r.text()}")
    return target_fields({"topic": "bench"})


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    if pinned := snapshot_of():
        source = f"{pinned[:7]} (a snapshot)"
    else:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        source = git("rev-parse", "--short", "HEAD") + (" (+local changes)" if dirty else "")
    load1, load5, _ = os.getloadavg()
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {source}"
        f", nproc {os.cpu_count()}, {model}, Python {platform.python_version()}"
        f", load average at start {load1:.1f}/{load5:.1f}"
    )


async def start_receiver() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, returns at once)
        [sys.executable, "-m", "bench.bench_receiver"], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    port = int(await asyncio.to_thread(proc.stdout.readline))
    return proc, f"http://127.0.0.1:{port}"


async def run_mode(mode: str, args: argparse.Namespace, receiver: str, wrk: str | None) -> Results:
    if mode in PEERS:
        system: System | PeerSystem = PEERS[mode]()
    else:
        system = System(mode, SHARED_PG, dict(args.env), args.kafka)
    sizes = QUICK if args.quick else FULL
    phases = Phases(system, "", receiver, sizes)
    try:
        started = time.monotonic()
        await system.start()
        phases.fields = await target(args.target, system.api, f"{receiver}/hook")
        print(f"[{mode}] ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        profile = Path(args.profile) if args.profile and mode == "embedded" else None
        for name, step in (
            ("steady", lambda: phases.steady(profile)),
            ("spread", phases.spread),
            ("instant", phases.instant),
            ("closed", phases.closed),
            ("wrk", (lambda: phases.single_posts(wrk)) if wrk else None),
        ):
            if step is None or name not in args.phases.split(","):
                continue
            t = time.monotonic()
            await step()
            print(f"[{mode}] {name} done in {time.monotonic() - t:.1f} s", file=sys.stderr)
        await asyncio.sleep(2)  # a late duplicate of any phase would arrive now
        await phases.recount_repeats()
    finally:
        codes = await system.stop()
        phases.close()
    if any(codes):
        print(f"[{mode}] exit codes {codes}", file=sys.stderr)
    return phases.results


def _f(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def rows(results: dict[str, Results], sizes_rate: float) -> list[tuple[str, dict[str, str], str]]:
    """(measure, value per mode, target)."""
    out: list[tuple[str, dict[str, str], str]] = []

    def row(name: str, fn, target: str = "") -> None:  # type: ignore[no-untyped-def]
        out.append((name, {m: fn(r) for m, r in results.items()}, target))

    def per_hook(r: Results, names: list[str]) -> str:
        if not r.steady_delivered:
            return "n/a"
        total = sum(v for k, v in r.cpu_s.items() if any(k.startswith(n) for n in names))
        return f"{total * 1000 / r.steady_delivered:.3f}"

    rate = f"{sizes_rate:,.0f}/s"
    row(
        f"steady {rate}: CPU ms per delivered webhook (service + Postgres + Redis)",
        lambda r: per_hook(r, list(SYSTEM_GROUPS)),
        "<= 0.4",
    )
    row("  the same, plus the broker", lambda r: per_hook(r, [*SYSTEM_GROUPS, "tansu", "kafka"]))
    groups = sorted({k for r in results.values() for k in r.cpu_s})
    for g in groups:
        row(f"  CPU ms per webhook: {g}", lambda r, g=g: per_hook(r, [g]) if g in r.cpu_s else "")
    row(
        f"steady {rate}: accept->arrival p50 / p99 ms, from the intended send",
        lambda r: f"{_f(r.steady_p50_ms)} / {_f(r.steady_p99_ms)}",
        "p99 <= 25 (split 50)",
    )
    row("  accept (202) p99 ms, from the intended send", lambda r: _f(r.steady_accept_p99_ms))
    row("  delivered", lambda r: f"{r.steady_delivered:,}")
    row(
        "spread schedules: lateness p50 / p99 ms; early",
        lambda r: (
            f"{_f(r.spread_p50_ms)} / {_f(r.spread_p99_ms)}; {r.spread_early}"
            + (f" (by up to {_f(-r.spread_min_ms, 2)} ms)" if r.spread_early else "")
        ),
        "p99 <= 10; 0",
    )
    row(
        "all due at one instant: p50 / last arrival after it, s; early",
        lambda r: (
            f"{_f(r.instant_p50_s, 2)} / {_f(r.instant_last_s, 2)}; {r.instant_early}"
            + (f" (by up to {_f(-r.instant_min_s * 1000, 2)} ms)" if r.instant_early else "")
        ),
        "last <= 2; 0",
    )
    row("closed loop: webhooks/s end to end", lambda r: _f(r.closed_per_s, 0), ">= 3,000")
    row(
        "wrk single POSTs: accepted/s (p50 / p99 ms)",
        lambda r: (
            f"{_f(r.wrk.per_s - r.wrk.non_2xx / r.wrk.wall_s, 0)} "
            f"({_f(r.wrk.p50_ms)} / {_f(r.wrk.p99_ms)})"
            if r.wrk
            else "not run"
        ),
        ">= 5,000",
    )
    row(
        "  wrk's own CPU: % of a core, ms per request",
        lambda r: (
            f"{100 * r.wrk.cpu_s / r.wrk.wall_s:.0f} %, "
            f"{1000 * r.wrk.cpu_s / max(1, r.wrk.requests):.3f}"
            if r.wrk
            else ""
        ),
    )
    row("lost (accepted, never arrived)", lambda r: _counts(r.lost), "0")
    row("arrived twice", lambda r: _counts(r.repeats), "0")
    row("refused by the API or failed to post", lambda r: _counts(r.rejected), "0")
    return out


def _counts(by_phase: dict[str, int]) -> str:
    total = sum(by_phase.values())
    parts = [f"{k} {v}" for k, v in by_phase.items() if v]
    return f"{total}" + (f" ({', '.join(parts)})" if parts else "")


def table(results: dict[str, Results], rate: float, header: str, sizes: str) -> str:
    modes = list(results)
    lines = rows(results, rate)
    names = ["measure", *modes, "target"]
    cells = [[n, *(v.get(m, "") for m in modes), t] for n, v, t in lines]
    widths = [max(len(c[i]) for c in [names, *cells]) for i in range(len(names))]
    fmt = " | ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    text = [header, sizes, "", fmt.format(*names), "-|-".join("-" * w for w in widths)]
    text += [fmt.format(*c) for c in cells]
    return "\n".join(text)


async def main(args: argparse.Namespace) -> int:
    header = machine()
    wrk = find_wrk()
    if wrk is None:
        print(
            "wrk not found and could not be installed: single POSTs not measured", file=sys.stderr
        )
    proc, receiver = await start_receiver()
    results: dict[str, Results] = {}
    try:
        for mode in args.modes:
            results[mode] = await run_mode(mode, args, receiver, wrk)
    finally:
        proc.kill()
        proc.wait()
    s = QUICK if args.quick else FULL
    sizes = (
        f"{'quick' if args.quick else 'full'}: steady {s.steady_rate:,.0f}/s open loop for"
        f" {s.steady_s:.0f} s; {s.spread_n:,} spread over {s.spread_s:.0f} s; {s.instant_n:,}"
        f" due at one instant; {s.closed_n:,} closed loop from {s.closed_clients} clients;"
        f" wrk -t2 -c64 for {s.wrk_s:.0f} s; target {args.target}"
        + (f"; overrides {' '.join(f'{k}={v}' for k, v in args.env)}" if args.env else "")
    )
    print(table(results, s.steady_rate, header, sizes))
    for mode, r in results.items():
        if r.profile:
            print(f"\npy-spy profile of {mode} (steady phase): {r.profile}")
    broken = any(sum(r.lost.values()) + sum(r.repeats.values()) for r in results.values())
    broken |= any(r.spread_early + r.instant_early for r in results.values())
    return 1 if broken else 0


def modes(text: str) -> list[str]:
    """`--modes`: known names, each once (argparse turns the error into exit 2)."""
    names = text.split(",")
    if any(n not in MODES for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more of {', '.join(MODES)}")
    return names


def bootstrap(text: str) -> str:
    """`--kafka`: bootstrap servers, host:port, comma-separated."""
    for server in text.split(","):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise argparse.ArgumentTypeError(f"{server!r}: expected host:port")
    return text


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, under 2 minutes")
    parser.add_argument(
        "--modes",
        type=modes,
        default="embedded,split",
        help="comma-separated: embedded, split, arq, celery (bench.arq_peer, bench.celery_peer)",
    )
    parser.add_argument(
        "--phases", default="steady,spread,instant,closed,wrk", help="which workloads to run"
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="inline",
        help="inline webhook (default), the same signed, or a topic of one stored destination",
    )
    parser.add_argument("--profile", help="py-spy raw profile of embedded's steady phase to here")
    overrides.add_argument(parser)
    parser.add_argument(
        "--kafka",
        type=bootstrap,
        help="split runs over this Kafka (host:port[,host:port]), not a private tansu",
    )
    parser.add_argument("--commit", help="run a snapshot of this commit, not the working tree")
    args = parser.parse_args(argv)
    for peer in PEERS:
        if peer in args.modes and (args.target != "inline" or args.env or args.profile):
            parser.error(
                f"--modes {peer}: the peer takes the inline target only, no --env, no --profile"
            )
    if args.kafka and "split" not in args.modes:
        parser.error("--kafka: only split runs over a broker; add split to --modes")
    return args


def entry() -> int:
    args = parse_args(sys.argv[1:])
    if args.commit:
        return run_snapshot("bench", args.commit, sys.argv[1:])
    return uvloop.run(main(args))


if __name__ == "__main__":
    sys.exit(entry())
