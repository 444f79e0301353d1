"""Settings: the file's defaults, environment overrides as TOML values, flags, errors that
name the setting, and the cross-checks between the settings and a process's plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifi.plan import ROLES, Plan, check
from notifi.settings import SettingsError, load

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "settings.toml"


def test_defaults_from_the_file() -> None:
    s = load(FILE, env={})
    assert (s.api.host, s.api.port) == ("127.0.0.1", 8080)
    assert s.postgres.dsn == "postgresql://postgres@127.0.0.1:5432/notifi"
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.bus.kind == "memory"
    assert s.poller.partitions == 1024
    assert s.delivery.allowed_networks == []
    assert s.delivery.retry_schedule[0] == 5.0


def test_every_design_setting_is_accepted() -> None:
    names = [
        "api.host",
        "api.port",
        "metrics.port",
        "postgres.dsn",
        "redis.url",
        "bus.kind",
        "kafka.bootstrap_servers",
        "kafka.topic_prefix",
        "kafka.enable_idempotence",
        "poller.partitions",
        "poller.interval",
        "delivery.workers",
        "delivery.timeout",
        "delivery.retry_schedule",
        "delivery.allowed_networks",
        "delivery.claim_ttl",
        "delivery.delivered_ttl",
        "smtp.host",
        "smtp.port",
        "smtp.sender",
        "smtp.starttls",
        "smtp.username",
        "smtp.password",
        "log.format",
        "log.level",
        "auth.mode",
        "auth.clients",
        "auth.team_domain",
        "auth.audience",
        "auth.jwks_url",
    ]
    s = load(FILE, env={})
    for name in names:
        section, key = name.split(".")
        assert hasattr(getattr(s, section), key), name


def test_env_values_are_toml() -> None:
    s = load(
        FILE,
        env={
            "NOTIFI_API__PORT": "8081",
            "NOTIFI_DELIVERY__RETRY_SCHEDULE": "[1, 5, 30]",
            "NOTIFI_POSTGRES__DSN": "postgresql://x@h/db",  # not TOML: read as a string
            "NOTIFI_KAFKA__ENABLE_IDEMPOTENCE": "false",
            "OTHER": "ignored",
        },
    )
    assert s.api.port == 8081
    assert s.delivery.retry_schedule == [1.0, 5.0, 30.0]
    assert s.postgres.dsn == "postgresql://x@h/db"
    assert s.kafka.enable_idempotence is False


def test_overrides_beat_env() -> None:
    s = load(FILE, env={"NOTIFI_API__PORT": "8081"}, overrides={"api.port": 9000})
    assert s.api.port == 9000


def test_named_destinations_from_env() -> None:
    s = load(FILE, env={"NOTIFI_DESTINATIONS__OPS": '{type = "webhook", url = "https://x.io/h"}'})
    assert s.destinations["ops"]["url"] == "https://x.io/h"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"NOTIFI_API__PORT": "eighty"}, "api.port"),
        ({"NOTIFI_API__PORT": "70000"}, "api.port"),
        ({"NOTIFI_BUS__KIND": "rabbit"}, "bus.kind"),
        ({"NOTIFI_DELIVERY__WORKERS": "0"}, "delivery.workers"),
        ({"NOTIFI_DELIVERY__RETRY_SCHEDULE": "5"}, "delivery.retry_schedule"),
        ({"NOTIFI_DELIVERY__RETRY_SCHEDULE": '["a"]'}, "delivery.retry_schedule[0]"),
        ({"NOTIFI_DELIVERY__ALLOWED_NETWORKS": '["10.0.0.0/33"]'}, "delivery.allowed_networks"),
        ({"NOTIFI_API__NOPE": "1"}, "api.nope"),
        ({"NOTIFI_LOG__LEVEL": "loud"}, "log.level"),
        ({"NOTIFI_POLLER__LOOKAHEAD": "-1"}, "poller.lookahead"),
        ({"NOTIFI_POLLER__LOOKAHEAD": "301"}, "poller.lookahead"),
        ({"NOTIFI_KAFKA__LINGER_MS": "-1"}, "kafka.linger_ms"),
        ({"NOTIFI_API__ACCEPT_LINGER_MS": "-1"}, "api.accept_linger_ms"),
        ({"NOTIFI_API__ACCEPT_LINGER_BATCH": "0"}, "api.accept_linger_batch"),
        ({"NOTIFI_DELIVERY__RECORD_LINGER_MS": "1001"}, "delivery.record_linger_ms"),
        ({"NOTIFI_KAFKA__ENABLE_IDEMPOTENCE": "1"}, "kafka.enable_idempotence"),
        ({"NOTIFI_DESTINATIONS__OPS": '"https://x"'}, "destinations.ops"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names.replace("[", r"\[").replace("]", r"\]")):
        load(FILE, env=env)


def test_missing_setting_is_named(tmp_path: Path) -> None:
    text = FILE.read_text().replace('kind = "memory"', "")
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(SettingsError, match=r"bus\.kind is missing"):
        load(tmp_path / "s.toml", env={})


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load(tmp_path / "none.toml", env={})
    (tmp_path / "bad.toml").write_text("[api\nport=")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load(tmp_path / "bad.toml", env={})


def plan(*roles: str) -> Plan:
    return Plan(
        roles=frozenset(roles or ROLES),
        router_consumers=1,
        delivery_workers=1,
        pollers=1,
        partitions=(0, 1023),
        instance_id="test-0",
    )


def test_check_passes_the_defaults() -> None:
    check(load(FILE, env={}), plan())


def test_check_refuses_a_pool_that_the_held_connections_would_empty() -> None:
    # --roles all with one router holds 4 (notifi.store.held) and keeps 2 spare: 6 at least.
    check(load(FILE, env={"NOTIFI_POSTGRES__POOL_MAX": "6"}), plan())
    with pytest.raises(SettingsError, match=r"postgres\.pool_max = 5 .* at least 6"):
        check(load(FILE, env={"NOTIFI_POSTGRES__POOL_MAX": "5"}), plan())
    kafka = {"NOTIFI_BUS__KIND": "kafka", "NOTIFI_POSTGRES__POOL_MAX": "3"}
    check(load(FILE, env=kafka), plan("poller"))  # holds none
    with pytest.raises(SettingsError, match=r"at least 4"):
        check(load(FILE, env=kafka), plan("delivery"))  # the consumer's and the recorder's


@pytest.mark.parametrize("roles", [("api",), ("router", "poller", "delivery")])
def test_check_refuses_the_memory_bus_with_a_subset_of_roles(roles: tuple[str, ...]) -> None:
    with pytest.raises(SettingsError, match=r"bus\.kind = memory .*\(--roles all\)"):
        check(load(FILE, env={}), plan(*roles))


def test_check_lets_the_kafka_bus_run_a_subset_of_roles() -> None:
    check(load(FILE, env={"NOTIFI_BUS__KIND": "kafka"}), plan("router"))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_check_refuses_auth_none_off_loopback(host: str) -> None:
    settings = load(FILE, env={"NOTIFI_API__HOST": host})
    with pytest.raises(SettingsError, match=r"auth\.mode = none is allowed only"):
        check(settings, plan())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_check_allows_auth_none_on_loopback(host: str) -> None:
    check(load(FILE, env={"NOTIFI_API__HOST": host}), plan())


def test_check_of_auth_applies_only_where_the_api_runs() -> None:
    env = {
        "NOTIFI_BUS__KIND": "kafka",
        "NOTIFI_API__HOST": "0.0.0.0",
        "NOTIFI_AUTH__MODE": "tokens",
    }
    check(load(FILE, env=env), plan("delivery"))  # no api here: nothing to authenticate
    with pytest.raises(SettingsError, match=r"auth\.clients"):
        check(load(FILE, env=env), plan("api"))


def test_check_refuses_a_bad_named_destination_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "settings.toml"
    bad.write_text(
        FILE.read_text()
        + '\n[destinations.ops]\ntype = "webhook"\nurl = "https://example.com/"\n'
        + 'headers = { Host = "evil.example" }\n'
    )
    with pytest.raises(SettingsError, match=r"destinations\.ops/headers/Host"):
        check(load(bad, env={}), plan())
