"""`make chaos`: fault injection. Starts private Postgres, Redis and tansu, runs every role as
its own process, drives a steady mixed load at a loopback receiver, injects one fault per
scenario, and prints a table (and writes JSON) of what was lost, sent twice, sent early, how
long nothing arrived and how late things were. The bounds are issue 10's.

    python -m bench.chaos                      # every scenario, ~12 minutes
    python -m bench.chaos --quick              # shorter load and bounds, ~5 minutes
    python -m bench.chaos --scenario kill-router --scenario none
    python -m bench.chaos --env NOTIFI_DELIVERY__CLAIM_TTL=10
    python -m bench.chaos --commit HEAD        # a snapshot of a commit, not the live tree

`--commit` runs everything from a `git archive` of that commit, so edits made to the working
tree during the run (a restarted role imports the code afresh) cannot change what is measured.

The columns: `refused` POSTs got no 202 (the API was down or said 503); `missing` were
accepted and never arrived within the bound (60 s after the last POST; 45 s after the broker's
return for broker-empty); `dup (same id, in flight)` counts notification+destination pairs that
arrived twice, then how many of those kept their webhook-id, and how many also came within 5 s
of the fault's end (the only duplicates issue 10 allows); `early` arrived before the
scheduled_at the client asked for; `first new s` runs from the fault's end (the process or
service started again) to the first arrival of work accepted after the fault began;
`longest silence s` is the longest gap between arrivals from the first arrival to the last
POST; `late p99 s` is arrival minus the later of scheduled_at and the 202; `202 p99 s` is
from a POST's send to its 202 (a stalled accept shows here, not in lateness); `exits` are roles
that exited without being told to (the harness restarts them 2 s later, as an orchestrator
would) or that did not exit 0 on SIGTERM. Exit status 1 when any bound of issue 10 is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
import tomllib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import redis

from bench import overrides
from bench.chaos_cluster import ROOT, Cluster, takes_instance_id
from bench.chaos_load import ChaosReceiver, Load
from bench.chaos_report import Fault, Summary, broken_promises, summarize
from bench.snapshot import git, run_snapshot, snapshot_of
from tests.support.services import PrivateServices
from tests.support.tansu import kafka_env

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Timing:
    """How long each phase lasts. The fault comes `fault_at_s` into the load; the load goes on
    `tail_s` after the fault ends; then up to `settle_s` for stragglers."""

    rate_per_s: float = 120.0
    ahead_s: tuple[float, float] = (2.0, 5.0)  # how far ahead the scheduled half is due
    fault_at_s: float = 20.0
    tail_s: float = 20.0
    settle_s: float = 60.0  # after the last POST, at most
    quiet_s: float = 3.0  # watched after everything arrived, for late duplicates
    kill_down_s: float = 2.0  # a killed role is started again this much later
    redis_down_s: float = 3.0
    broker_down_s: float = 3.0
    broker_paused_s: float = 3.0
    postgres_down_s: float = 6.0
    rolling_gap_s: float = 1.0  # between a role's exit and its replacement's start


FULL = Timing()
QUICK = Timing(ahead_s=(1.0, 3.0), fault_at_s=5.0, tail_s=5.0, settle_s=15.0, quiet_s=1.0)


@dataclass
class Context:
    """What a fault script may act on."""

    services: PrivateServices
    cluster: Cluster
    timing: Timing
    shutdown_timeout_s: float
    notes: list[str] = field(default_factory=list)


FaultScript = Callable[[Context], Awaitable[Fault | None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    inject: FaultScript
    watch_claims: bool = False  # watch until claim_ttl after the fault for late re-sends
    heal_bound_s: float | None = None  # every accepted notification in by fault end + this


async def no_fault(ctx: Context) -> Fault | None:
    return None


def kill_role(name: str) -> FaultScript:
    async def inject(ctx: Context) -> Fault:
        start = time.time()
        ctx.cluster.kill(name)
        await asyncio.sleep(ctx.timing.kill_down_s)
        ctx.cluster.restart(name)
        return Fault(start, time.time())

    return inject


async def rolling_sigterm(ctx: Context) -> Fault:
    """A rolling restart: each role in turn drains on SIGTERM, is replaced, and must be ready
    before the next one goes, as a Deployment's rollout does."""
    start = time.time()
    for name, p in ctx.cluster.roles.items():
        exit_ = await ctx.cluster.terminate(name, ctx.shutdown_timeout_s + 10)
        if exit_ is not None:
            ctx.notes.append(f"{name} exit {exit_.code} after {exit_.took_s:.1f}s on SIGTERM")
        await asyncio.sleep(ctx.timing.rolling_gap_s)
        p.start()
        end = time.time()
        if not await p.wait_ready(60):
            ctx.notes.append(f"{name} not ready 60 s after its restart")
    return Fault(start, end)


async def stop_postgres(ctx: Context) -> Fault:
    start = time.time()
    await asyncio.to_thread(ctx.services.postgres.stop, "immediate")
    await asyncio.sleep(ctx.timing.postgres_down_s)
    await asyncio.to_thread(ctx.services.postgres.start)
    return Fault(start, time.time())


async def empty_redis(ctx: Context) -> Fault:
    start = time.time()
    await asyncio.to_thread(ctx.services.redis.kill)
    await asyncio.sleep(ctx.timing.redis_down_s)
    await asyncio.to_thread(ctx.services.redis.start)
    return Fault(start, time.time())


async def empty_broker(ctx: Context) -> Fault:
    start = time.time()
    await asyncio.to_thread(ctx.services.broker.kill)
    await asyncio.sleep(ctx.timing.broker_down_s)
    await asyncio.to_thread(ctx.services.broker.start)
    return Fault(start, time.time())


async def pause_broker(ctx: Context) -> Fault:
    """The broker hangs (SIGSTOP) and resumes with everything it had: requests to it wait
    instead of failing, as with a broker that is stuck or cut off."""
    start = time.time()
    ctx.services.broker.pause()
    await asyncio.sleep(ctx.timing.broker_paused_s)
    ctx.services.broker.resume()
    return Fault(start, time.time())


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("none", "no fault at all", no_fault),
        Scenario("kill-api", "SIGKILL of the api, restarted", kill_role("api")),
        Scenario("kill-router", "SIGKILL of the router, restarted", kill_role("router")),
        Scenario("kill-poller", "SIGKILL of one poller, restarted", kill_role("poller0")),
        Scenario(
            "kill-delivery",
            "SIGKILL of delivery, restarted",
            kill_role("delivery"),
            watch_claims=True,
        ),
        Scenario(
            "rolling-sigterm",
            "SIGTERM of every role in turn under load, each restarted",
            rolling_sigterm,
            watch_claims=True,
        ),
        Scenario("postgres-stop", "Postgres stopped (immediate), started again", stop_postgres),
        Scenario("redis-empty", "Redis killed, back empty", empty_redis),
        Scenario("broker-pause", "broker frozen (SIGSTOP), then resumed", pause_broker),
        Scenario(
            "broker-empty",
            "broker killed, back empty (topics, messages, offsets gone)",
            empty_broker,
            heal_bound_s=45.0,
        ),
    ]
}


@dataclass
class Result:
    scenario: Scenario
    summary: Summary | None = None
    fault: dict | None = None  # start/end in seconds into the load
    broken: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    teardown_exits: list[dict] = field(default_factory=list)
    ready_after_restart_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    took_s: float = 0.0

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario.name,
            "description": self.scenario.description,
            "summary": self.summary.to_json() if self.summary else None,
            "fault": self.fault,
            "broken": self.broken,
            "notes": self.notes,
            "teardown_exits": self.teardown_exits,
            "ready_after_restart_s": self.ready_after_restart_s,
            "error": self.error,
            "took_s": round(self.took_s, 1),
        }


def settings_value(section: str, key: str, env: dict[str, str]) -> float:
    """A numeric setting as the roles will see it: settings.toml, then our overrides."""
    name = f"NOTIFI_{section.upper()}__{key.upper()}"
    if name in env:
        return float(env[name])
    with (ROOT / "settings.toml").open("rb") as f:
        return float(tomllib.load(f)[section][key])


def role_env(services: PrivateServices, database: str, prefix: str) -> dict[str, str]:
    """Every role's settings: the private services, tansu-friendly Kafka (no idempotent
    producer, short group timeouts as the split-roles test uses, dynamic members), loopback
    webhooks allowed, JSON logs."""
    return {
        **kafka_env(services.broker.bootstrap, prefix),
        # tansu holds every static member's join for max(6 s, session/2 + 3 s), the first one
        # included, where Kafka hands a returning static member its partitions at once; on
        # tansu, dynamic members re-join in about 1 s. The product default stays static (right
        # for Kafka); `--env NOTIFI_KAFKA__STATIC_MEMBERSHIP=true` shows what tansu makes of it.
        "NOTIFI_KAFKA__STATIC_MEMBERSHIP": "false",
        "NOTIFI_POSTGRES__DSN": services.postgres.dsn(database),
        "NOTIFI_REDIS__URL": services.redis.url,
        "NOTIFI_REDIS__KEY_PREFIX": prefix,
        "NOTIFI_DELIVERY__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "NOTIFI_LOG__FORMAT": "json",
    }


async def fresh_state(services: PrivateServices, database: str) -> None:
    """Whatever the last scenario left is out of the way: services up, Redis empty, and the
    database made here (roles racing to CREATE DATABASE would be a harness fault)."""
    await asyncio.to_thread(services.ensure_running)
    await asyncio.to_thread(lambda: redis.Redis.from_url(services.redis.url).flushall())
    conn = await asyncpg.connect(services.postgres.dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


async def wait_settled(
    load: Load, receiver: ChaosReceiver, deadline: float, poll_s: float = 0.2
) -> None:
    """Until every accepted (notification, destination) arrived, or the deadline."""
    wanted = {(p.notification_id, p.path) for p in load.posts if p.accepted}
    while time.time() < deadline:
        got = {(a.notification_id, a.path) for a in receiver.arrivals}
        if wanted <= got:
            return
        await asyncio.sleep(poll_s)


async def run_scenario(
    services: PrivateServices,
    scenario: Scenario,
    timing: Timing,
    log_root: Path,
    extra_env: dict[str, str],
) -> Result:
    began = time.time()
    result = Result(scenario)
    tag = f"chaos-{scenario.name}-{uuid.uuid4().hex[:6]}"
    database = tag.replace("-", "_")
    env = {**role_env(services, database, tag), **extra_env}
    receiver = await ChaosReceiver().start()
    cluster = Cluster(env, log_root / scenario.name, restart_delay_s=timing.kill_down_s)
    try:
        await fresh_state(services, database)
        await cluster.start()
        load = Load(cluster.api_url, receiver, tag, timing.rate_per_s, timing.ahead_s)
        stop = asyncio.Event()
        load_task = asyncio.create_task(load.run(stop))
        load_start = time.time()
        ctx = Context(
            services, cluster, timing, settings_value("supervisor", "shutdown_timeout", env)
        )
        await asyncio.sleep(timing.fault_at_s)
        fault = await scenario.inject(ctx)
        result.notes += ctx.notes
        await asyncio.sleep(timing.tail_s)
        stop.set()
        await load_task
        last_post = max((p.sent_at for p in load.posts), default=time.time())
        deadline = last_post + timing.settle_s
        if fault is not None and scenario.heal_bound_s is not None:
            deadline = max(deadline, fault.end + scenario.heal_bound_s)
        await wait_settled(load, receiver, deadline)
        watch_until = time.time() + timing.quiet_s
        if fault is not None and scenario.watch_claims:
            claim_ttl = settings_value("delivery", "claim_ttl", env)
            watch_until = max(watch_until, fault.start + claim_ttl + 10)
        await asyncio.sleep(max(0.0, min(watch_until, deadline) - time.time()))
        exits = list(cluster.exits)
        result.teardown_exits = [vars(e) for e in await cluster.stop(ctx.shutdown_timeout_s + 10)]
        result.summary = summarize(load.posts, receiver.arrivals, fault, exits)
        result.broken = broken_promises(result.summary, heal_bound_s=scenario.heal_bound_s)
        if load.dropped:
            result.notes.append(f"{load.dropped} POSTs not sent: 1024 already waiting")
        if fault is not None:
            result.fault = {
                "start_s": round(fault.start - load_start, 2),
                "end_s": round(fault.end - load_start, 2),
            }
            for name, p in cluster.roles.items():
                if p.ready_at and p.incarnation > 1 and p.started_at >= fault.start:
                    result.ready_after_restart_s[name] = round(p.ready_at - p.started_at, 2)
    except Exception as exc:  # one scenario's harness failure must not sink the others
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        cluster.kill_all()
        await receiver.stop()
    result.took_s = time.time() - began
    return result


def machine() -> dict[str, str | int | None]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "model": model, "python": platform.python_version()}


def git_state() -> dict[str, str | int]:
    if pinned := snapshot_of():
        return {"commit": pinned, "uncommitted_files": 0, "source": "snapshot"}
    changed = [line for line in git("status", "--porcelain").splitlines() if line]
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_files": len(changed),
        "source": "working tree",
    }


def results_path(started: datetime, quick: bool) -> Path:
    """Where a run's JSON goes unless `--json` says: this checkout's results."""
    return RESULTS / f"chaos-{started:%Y%m%d-%H%M%S}{'-quick' if quick else ''}.json"


def with_results_path(argv: list[str]) -> list[str]:
    """`argv` with a `--json` into this checkout's results when it names none (a snapshot's
    own folder is gone when the run ends)."""
    if "--json" in argv or any(a.startswith("--json=") for a in argv):
        return argv
    return [*argv, "--json", str(results_path(datetime.now(UTC), "--quick" in argv))]


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: list[Result]) -> str:
    head = [
        "scenario", "accepted", "refused", "delivered", "missing", "dup (same id, in flight)",
        "early", "first new s", "longest silence s", "late p99 s", "202 p99 s", "exits",
        "verdict",
    ]  # fmt: skip
    rows = [head]
    for r in results:
        s = r.summary
        if s is None:
            rows.append([r.scenario.name, *["-"] * 11, f"harness error: {r.error}"])
            continue
        exits = ", ".join(f"{e['name']}:{e['code']}" for e in s.exits) or "0"
        rows.append(
            [
                r.scenario.name,
                str(s.accepted),
                str(s.refused),
                str(s.delivered),
                str(s.missing),
                f"{s.duplicates} ({s.duplicates_same_webhook_id}, {s.duplicates_in_flight})",
                str(s.early),
                _s(s.recovery_s),
                _s(s.longest_silence_s),
                _s(s.lateness_p99_s),
                _s(s.accept_p99_s),
                exits,
                "ok" if not r.broken else "; ".join(r.broken),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


async def run(
    names: list[str],
    timing: Timing,
    *,
    extra_env: dict[str, str] | None = None,
    log_root: Path | None = None,
    echo: Callable[[str], None] = print,
) -> list[Result]:
    """Runs the named scenarios one after another on one set of private services."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    log_root = log_root or Path(f"/tmp/notifi-chaos-{stamp}")
    results = []
    with PrivateServices() as services:
        for name in names:
            result = await run_scenario(
                services, SCENARIOS[name], timing, log_root, extra_env or {}
            )
            verdict = "ok" if not result.broken else "; ".join(result.broken)
            echo(f"  {name}: {result.error or verdict} ({result.took_s:.0f} s)")
            results.append(result)
    return results


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter load and bounds")
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="run only these (repeat)"
    )
    parser.add_argument("--rate", type=float, help="POSTs per second (default 120)")
    overrides.add_argument(parser)
    parser.add_argument("--commit", help="run a snapshot of this commit, not the working tree")
    parser.add_argument("--json", type=Path, help="where to write the results (default: "
                        "bench/results/chaos-<date>.json)")  # fmt: skip
    return parser.parse_args(argv)


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    timing = QUICK if args.quick else FULL
    if args.rate:
        timing = replace(timing, rate_per_s=args.rate)
    extra_env = dict(args.env)
    names = args.scenario or list(SCENARIOS)
    started = datetime.now(UTC)
    info = machine()
    git = git_state()
    print(f"notifi chaos, {started:%Y-%m-%d %H:%M:%S} UTC")
    print(f"machine: {info['nproc']} cores, {info['model']}; python {info['python']}")
    print(
        f"commit {git['commit'][:12]} ({git['source']}, {git['uncommitted_files']} uncommitted"
        " files);"
        f" --instance-id: {'passed' if takes_instance_id() else 'not supported, not passed'}"
    )
    print(
        f"load {timing.rate_per_s:.0f} POST/s (half immediate, half"
        f" {timing.ahead_s[0]:.0f}-{timing.ahead_s[1]:.0f} s ahead); fault"
        f" {timing.fault_at_s:.0f} s in; load {timing.tail_s:.0f} s past the fault; settle"
        f" <= {timing.settle_s:.0f} s" + (f"; overrides {extra_env}" if extra_env else "")
    )
    stamp = started.strftime("%Y%m%d-%H%M%S")
    log_root = Path(f"/tmp/notifi-chaos-{stamp}")
    print(f"logs: {log_root}/<scenario>/<role>-<n>.log\n")
    results = await run(names, timing, extra_env=extra_env, log_root=log_root)
    print()
    print(table(results))
    for r in results:
        for note in r.notes:
            print(f"  {r.scenario.name}: {note}")
    out = args.json or results_path(started, args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": started.isoformat(),
        "machine": info,
        "git": git,
        "instance_id_passed": takes_instance_id(),
        "timing": vars(timing),
        "env_overrides": extra_env,
        "took_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        "scenarios": [r.to_json() for r in results],
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    print(f"took {document['took_s']:.0f} s")
    return 0 if all(not r.broken and not r.error for r in results) else 1


def entry() -> int:
    args = parse_args(sys.argv[1:])
    if args.commit:
        return run_snapshot("bench.chaos", args.commit, with_results_path(sys.argv[1:]))

    async def guarded() -> int:
        # SIGTERM (make interrupted, CI timeout) unwinds like Ctrl-C, so every process and
        # private service we started is stopped on the way out.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(15, task.cancel)
        return await main(sys.argv[1:])

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


if __name__ == "__main__":
    sys.exit(entry())
