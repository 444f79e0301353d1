"""Settings: the file's defaults, environment overrides as TOML values, flags, and errors that
name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

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
