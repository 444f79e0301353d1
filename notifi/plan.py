"""What one process runs (its roles, replica counts and partition range) and the cross-checks
between that plan and the settings. Plain data and plain functions: nothing is constructed."""

from __future__ import annotations

from dataclasses import dataclass

from notifi.api.validation import check_named_destinations
from notifi.auth import check_settings as check_auth
from notifi.partitions import Range
from notifi.settings import Settings, SettingsError

ROLES = ("api", "router", "poller", "delivery")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, slots=True)
class Plan:
    """What this process runs: from flags, over settings."""

    roles: frozenset[str]
    router_consumers: int
    delivery_workers: int
    pollers: int
    partitions: Range  # inclusive range of partition keys this process polls
    instance_id: str  # stable per container (for Kafka static group membership)


# Pooled Postgres connections a process keeps beside the held ones, at the least: the API's
# reads, the pollers, the workers' re-checks and claims while Redis is away share them.
SPARE_CONNECTIONS = 2


def held_connections(plan: Plan) -> int:
    """Postgres connections the plan's batch writers hold for good (notifi.store.held): the
    accept writer's, each router's, the delivery consumer's and the recorder's."""
    routers = plan.router_consumers if "router" in plan.roles else 0
    return ("api" in plan.roles) + routers + 2 * ("delivery" in plan.roles)


def check(settings: Settings, plan: Plan) -> None:
    """Raises SettingsError when the settings cannot serve the plan."""
    held, pool_max = held_connections(plan), settings.postgres.pool_max
    if pool_max < held + SPARE_CONNECTIONS:
        raise SettingsError(
            f"postgres.pool_max = {pool_max} is too few for this process: its batch writers "
            f"hold {held} connections (the accept writer, each router, the delivery consumer "
            f"and the recorder), so it needs at least {held + SPARE_CONNECTIONS}"
        )
    if settings.bus.kind == "memory" and plan.roles != frozenset(ROLES):
        raise SettingsError(
            "bus.kind = memory keeps the topics inside one process, so it needs every role "
            "there (--roles all); to run roles as separate processes set bus.kind = kafka "
            "and kafka.bootstrap_servers"
        )
    if "api" not in plan.roles:
        return
    check_auth(settings.auth)
    check_named_destinations(settings.destinations)
    if settings.auth.mode == "none" and settings.api.host not in LOOPBACK_HOSTS:
        raise SettingsError(
            "auth.mode = none is allowed only while api.host is a loopback address "
            f"(got {settings.api.host!r}); choose tokens or cloudflare to listen wider"
        )
