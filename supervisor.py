"""Notifi's process entry point: reads flags and settings, builds the supervision tree for the
chosen roles, runs it, and exits 0 after a clean drain, non-zero when the tree gave up.

    python supervisor.py --roles all
    python supervisor.py --roles poller --replica-index 1 --replica-count 4
    python supervisor.py migrate
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import socket
import sys

import asyncpg
import structlog
import uvloop
from aiokafka.errors import KafkaError

from actors.tree import children
from notifi import logs, metrics
from notifi.bus import BusError
from notifi.partitions import Range, replica_range
from notifi.plan import ROLES, Plan, check
from notifi.process import Process
from notifi.runtime import Supervisor
from notifi.settings import Settings, SettingsError, load
from notifi.store.migrate import prepare_database

log = structlog.get_logger("supervisor")

EXIT_GAVE_UP = 1
EXIT_BAD_SETTINGS = 2
EXIT_START_FAILED = 3


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="supervisor.py", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=["run", "migrate"], default="run")
    parser.add_argument("--settings", help="settings file (default: settings.toml)")
    parser.add_argument(
        "--roles", default="all", help="all, or a comma list of: " + ",".join(ROLES)
    )
    parser.add_argument("--router-consumers", type=int, help="router consumer actors")
    parser.add_argument("--delivery-workers", type=int, help="delivery worker actors")
    parser.add_argument("--pollers", type=int, help="poller actors (the range is split)")
    parser.add_argument("--partitions", help="partition-key range to poll, LO-HI (inclusive)")
    parser.add_argument("--replica-index", type=int, help="this poller replica's index")
    parser.add_argument("--replica-count", type=int, help="how many poller replicas there are")
    parser.add_argument("--api-port", type=int, help="overrides api.port")
    parser.add_argument("--metrics-port", type=int, help="overrides metrics.port")
    parser.add_argument(
        "--instance-id",
        default=os.environ.get("HOSTNAME") or socket.gethostname(),
        help="this container's stable id (default: $HOSTNAME, else the machine's hostname)",
    )
    return parser.parse_args(argv)


def _positive(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if value < 1:
        raise SettingsError(f"--{name} must be at least 1, got {value}")
    return value


def partition_range(args: argparse.Namespace, partitions: int) -> Range:
    if args.partitions and (args.replica_index is not None or args.replica_count is not None):
        raise SettingsError("give --partitions or --replica-index/--replica-count, not both")
    if args.partitions:
        try:
            lo, hi = (int(p) for p in args.partitions.split("-"))
        except ValueError:
            raise SettingsError(f"--partitions must be LO-HI, got {args.partitions!r}") from None
        if not 0 <= lo <= hi < partitions:
            raise SettingsError(f"--partitions must lie within 0-{partitions - 1}, got {lo}-{hi}")
        return lo, hi
    if args.replica_index is None and args.replica_count is None:
        return 0, partitions - 1
    if args.replica_index is None or args.replica_count is None:
        raise SettingsError("--replica-index and --replica-count go together")
    if not 0 <= args.replica_index < args.replica_count <= partitions:
        raise SettingsError("--replica-index must be in [0, --replica-count)")
    return replica_range(args.replica_index, args.replica_count, partitions)


def build(argv: list[str]) -> tuple[argparse.Namespace, Settings, Plan]:
    args = parse_args(argv)
    overrides = {}
    if args.api_port is not None:
        overrides["api.port"] = args.api_port
    if args.metrics_port is not None:
        overrides["metrics.port"] = args.metrics_port
    settings = load(args.settings, overrides=overrides)
    roles = set(ROLES) if args.roles == "all" else {r.strip() for r in args.roles.split(",")}
    unknown = roles - set(ROLES)
    if unknown or not roles:
        raise SettingsError(f"--roles takes all or a comma list of {', '.join(ROLES)}")
    plan = Plan(
        roles=frozenset(roles),
        router_consumers=_positive(
            "router-consumers", args.router_consumers, settings.router.consumers
        ),
        delivery_workers=_positive(
            "delivery-workers", args.delivery_workers, settings.delivery.workers
        ),
        pollers=_positive("pollers", args.pollers, settings.poller.pollers),
        partitions=partition_range(args, settings.poller.partitions),
        instance_id=args.instance_id.strip(),
    )
    if not plan.instance_id:
        raise SettingsError("--instance-id must not be empty")
    check(settings, plan)
    return args, settings, plan


async def run_migrations(settings: Settings) -> int:
    applied = await prepare_database(settings.postgres.dsn)
    log.info("migrations_done", applied=applied)
    return 0


async def serve(settings: Settings, plan: Plan) -> int:
    process = Process(settings, plan)
    try:
        await process.open()
    except (OSError, asyncpg.PostgresError, BusError, KafkaError) as exc:
        log.error("start_failed", error=repr(exc), hint="is Postgres (or Kafka) reachable?")
        await process.close()
        return EXIT_START_FAILED
    supervisor: Supervisor | None = None
    try:

        async def ready() -> dict[str, bool]:
            return await process.readiness(
                lambda: supervisor is not None and supervisor.all_running()
            )

        supervisor = Supervisor(
            children(process, ready),
            max_restarts=settings.supervisor.max_restarts,
            period_s=settings.supervisor.restart_period,
            on_crash=lambda child, _exc: metrics.actor_restarts.inc({"actor": child}),
        )
        loop = asyncio.get_running_loop()

        def drain(signame: str) -> None:
            if process.draining:
                supervisor.stop()  # a second signal: no more waiting
                return
            log.info("draining", signal=signame, delay_s=settings.supervisor.drain_delay)
            process.draining = True  # readiness fails first, so load balancers move away
            loop.call_later(settings.supervisor.drain_delay, supervisor.stop)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, drain, sig.name)
        log.info(
            "started",
            roles=sorted(plan.roles),
            partitions=plan.partitions,
            token=process.token,
            instance_id=plan.instance_id,
        )
        outcome = await supervisor.run()
    finally:
        await process.close()
    if not outcome.ok:
        log.error("supervisor_gave_up", reason=outcome.reason)
        return EXIT_GAVE_UP
    log.info("stopped")
    return 0


def tune_gc() -> None:
    """Garbage collection for a long-running service: what start-up made (modules, settings) is
    frozen out of every later collection, and the young generation is collected after 20,000
    net allocations instead of 700, since nearly all a request or a job allocates dies by its
    reference count. At a steady 1,000/s the process spent 150-400 ms of each 15 s in 100-280
    collections, with pauses up to 45-60 ms (a full one); with this, 5-13 ms in one."""
    gc.collect()  # start-up's own garbage first: frozen, it would never be freed
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def main(argv: list[str] | None = None) -> int:
    try:
        args, settings, plan = build(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        logs.configure()
        print(f"notifi: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    logs.configure(settings.log.format, settings.log.level)
    tune_gc()
    # uvloop: the same CPU per webhook at a steady 1,000/s, and more single POSTs a second once
    # the process is busy (embedded, eight interleaved pairs on 2026-12-07: faster in seven, +3
    # to +19 %; README, Benchmark). A timer may fire up to a millisecond early: every wait for a
    # due time checks the wall clock again after it (never early).
    if args.command == "migrate":
        return uvloop.run(run_migrations(settings))
    return uvloop.run(serve(settings, plan))


if __name__ == "__main__":
    sys.exit(main())
