"""The supervision tree hands each actor the settings that govern it (a setting that never
reaches its actor is a setting that does nothing)."""

from __future__ import annotations

from ipaddress import ip_address
from types import SimpleNamespace

import pytest

from actors.http import HttpServer
from actors.sweeper import Sweeper
from actors.tree import children
from notifi.api.app import CONTEXT
from notifi.bus import MemoryBus, topic_names
from notifi.plan import ROLES, Plan, held_connections
from tests.conftest import load_settings


def _process(roles: set[str], env: dict[str, str], routers: int = 1) -> SimpleNamespace:
    settings = load_settings(env)
    plan = Plan(
        roles=frozenset(roles),
        router_consumers=routers,
        delivery_workers=1,
        pollers=2,
        partitions=(0, 1023),
        instance_id="test-0",
    )
    return SimpleNamespace(
        settings=settings,
        plan=plan,
        store=SimpleNamespace(pool=None, holding=lambda: SimpleNamespace(pool=None)),
        bus=MemoryBus(),
        topics=topic_names(settings.kafka.topic_prefix),
        api_http=None,
        marks=None,
        token="t0",
    )


async def _ready() -> dict[str, bool]:
    return {}


def test_api_settings_reach_the_server_and_the_validator() -> None:
    env = {
        "NOTIFI_API__MAX_DATA_DEPTH": "7",
        "NOTIFI_API__BODY_TIMEOUT": "3.5",
        "NOTIFI_API__HEADER_TIMEOUT": "2.5",
        "NOTIFI_DELIVERY__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "NOTIFI_DELIVERY__ROTATION_OVERLAP": "600",
        "NOTIFI_API__MAX_STORED_DESTINATIONS": "12",
    }
    specs = {spec.id: spec for spec in children(_process({"api"}, env), _ready)}
    server = specs["api"].factory()
    assert isinstance(server, HttpServer)
    assert server._header_timeout_s == 2.5
    ctx = server._make_app()[CONTEXT]
    assert ctx.body_timeout_s == 3.5
    assert ctx.validator.limits.max_data_depth == 7
    # Stored destinations: the address policy at create, the overlap of a rotation.
    assert ctx.rotation_overlap_s == 600
    assert ctx.max_stored_destinations == 12
    assert ctx.address_policy.is_allowed(ip_address("127.0.0.1"))


def test_the_metrics_server_of_other_roles_has_the_header_timeout() -> None:
    env = {"NOTIFI_BUS__KIND": "kafka", "NOTIFI_API__HEADER_TIMEOUT": "4"}
    specs = {spec.id: spec for spec in children(_process({"router"}, env), _ready)}
    assert specs["metrics-server"].factory()._header_timeout_s == 4


def test_the_poller_role_runs_one_sweeper_over_its_whole_range() -> None:
    env = {"NOTIFI_BUS__KIND": "kafka", "NOTIFI_RETENTION__INTERVAL": "9"}
    specs = [spec for spec in children(_process({"poller"}, env), _ready)]
    ids = [spec.id for spec in specs]
    assert ids.count("sweeper") == 1 and {"poller-0", "poller-1", "backstop"} <= set(ids)
    sweeper = next(spec for spec in specs if spec.id == "sweeper").factory()
    assert isinstance(sweeper, Sweeper)
    assert (sweeper.lo, sweeper.hi, sweeper._interval_s) == (0, 1023, 9)


@pytest.mark.parametrize(
    "roles, routers",
    [(set(ROLES), 1), ({"api"}, 1), ({"router"}, 3), ({"delivery"}, 1), ({"poller"}, 1)],
)
def test_the_tree_holds_as_many_connections_as_the_settings_check_counts(
    roles: set[str], routers: int
) -> None:
    """`notifi.plan.held_connections` sizes the pool check; the tree is what holds them."""
    kind = "memory" if roles == set(ROLES) else "kafka"
    process = _process(roles, {"NOTIFI_BUS__KIND": kind}, routers)
    process.claims, process.http = SimpleNamespace(), None  # the delivery role's, unused here
    held: list[SimpleNamespace] = []
    process.store.holding = lambda: held.append(SimpleNamespace(pool=None)) or held[-1]
    children(process, _ready)
    assert len(held) == held_connections(process.plan)
