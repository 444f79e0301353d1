"""Settings: `settings.toml`, overridden by NOTIFI_<SECTION>__<KEY> variables, then by flags.

The TOML file is the one source of defaults; the dataclasses below give the values types,
and a wrong or missing value stops start-up with a message naming the setting.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "settings.toml"
ENV_PREFIX = "NOTIFI_"


class SettingsError(Exception):
    """A setting is missing or has a value Notifi cannot use."""


@dataclasses.dataclass(frozen=True, slots=True)
class Api:
    host: str
    port: int
    max_body_bytes: int
    max_destinations: int
    max_title_chars: int
    max_body_chars: int
    max_data_bytes: int
    max_page_size: int
    default_page_size: int
    accept_batch: int
    accept_linger_ms: float
    accept_linger_batch: int
    max_bulk: int
    max_bulk_body_bytes: int
    idempotency_retention: float
    rate_limit: float
    rate_burst: int
    max_data_depth: int = 32  # levels of objects and arrays in a notification's data
    max_stored_destinations: int = 10_000  # stored destinations per client (a topic's fan-out)
    header_timeout: float = 10.0  # seconds a request's line and headers may take to arrive
    body_timeout: float = 30.0  # seconds a request's body may take to arrive


@dataclasses.dataclass(frozen=True, slots=True)
class Metrics:
    host: str
    port: int


@dataclasses.dataclass(frozen=True, slots=True)
class Postgres:
    dsn: str
    pool_min: int
    pool_max: int
    command_timeout: float


@dataclasses.dataclass(frozen=True, slots=True)
class Redis:
    url: str
    key_prefix: str
    socket_timeout: float


@dataclasses.dataclass(frozen=True, slots=True)
class Bus:
    kind: str


@dataclasses.dataclass(frozen=True, slots=True)
class Kafka:
    bootstrap_servers: str
    topic_prefix: str
    enable_idempotence: bool
    partitions: int
    replication_factor: int
    session_timeout_ms: int
    heartbeat_interval_ms: int
    fetch_max_records: int
    static_membership: bool = True  # static group members when the process has an instance id
    publish_timeout: float = 5.0  # seconds a publish may take before BusError
    fetch_max_wait_ms: int = 500  # longest the broker holds an empty fetch
    linger_ms: int = 0  # how long the producer waits to fill a batch (0: at once)


@dataclasses.dataclass(frozen=True, slots=True)
class Router:
    consumers: int


@dataclasses.dataclass(frozen=True, slots=True)
class Poller:
    partitions: int
    interval: float
    batch: int
    pollers: int
    backstop_interval: float
    backstop_grace: float
    lookahead: float


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    workers: int
    timeout: float
    retry_schedule: list[float]
    retry_jitter: float
    allowed_networks: list[str]
    claim_ttl: float
    delivered_ttl: float
    max_connections: int
    max_connections_per_host: int
    max_in_flight_per_host: int
    breaker_threshold: int
    breaker_cooldown: float
    breaker_max_cooldown: float
    record_batch: int
    record_linger_ms: float
    mailbox: int
    rotation_overlap: float
    disable_after: float


@dataclasses.dataclass(frozen=True, slots=True)
class Retention:
    delivered: float
    failed: float
    interval: float
    batch: int


@dataclasses.dataclass(frozen=True, slots=True)
class Smtp:
    host: str
    port: int
    sender: str
    starttls: bool
    username: str
    password: str


@dataclasses.dataclass(frozen=True, slots=True)
class Log:
    format: str
    level: str


@dataclasses.dataclass(frozen=True, slots=True)
class Auth:
    mode: str
    clients: list[dict[str, Any]]
    team_domain: str
    audience: str
    jwks_url: str


@dataclasses.dataclass(frozen=True, slots=True)
class SupervisorSettings:
    max_restarts: int
    restart_period: float
    shutdown_timeout: float
    drain_delay: float


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    api: Api
    metrics: Metrics
    postgres: Postgres
    redis: Redis
    bus: Bus
    kafka: Kafka
    router: Router
    poller: Poller
    delivery: Delivery
    retention: Retention
    smtp: Smtp
    log: Log
    auth: Auth
    supervisor: SupervisorSettings
    destinations: dict[str, dict[str, Any]]


# Rules beyond the type: (section, key) -> (check, what a good value looks like).
# How long a batcher may wait to fill a batch.
_LINGER = (lambda v: 0 <= v <= 1000, "between 0 and 1000 milliseconds")

_RULES: dict[tuple[str, str], tuple[typing.Callable[[Any], bool], str]] = {
    ("api", "port"): (lambda v: 0 <= v <= 65535, "a port number 0-65535"),
    # orjson refuses deeper than 254 levels when the stored data is encoded again
    ("api", "max_data_depth"): (lambda v: 1 <= v <= 200, "between 1 and 200"),
    ("metrics", "port"): (lambda v: 0 <= v <= 65535, "a port number 0-65535"),
    ("bus", "kind"): (lambda v: v in ("memory", "kafka"), '"memory" or "kafka"'),
    ("log", "format"): (lambda v: v in ("json", "console"), '"json" or "console"'),
    ("log", "level"): (
        lambda v: v in ("debug", "info", "warning", "error"),
        "debug, info, warning or error",
    ),
    ("auth", "mode"): (
        lambda v: v in ("none", "tokens", "cloudflare"),
        "none, tokens or cloudflare",
    ),
    ("poller", "partitions"): (lambda v: 1 <= v <= 1_000_000, "between 1 and 1000000"),
    ("delivery", "retry_schedule"): (
        lambda v: all(d >= 0 for d in v),
        "a list of non-negative delays in seconds",
    ),
    ("delivery", "retry_jitter"): (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("delivery", "allowed_networks"): (lambda v: all(_is_cidr(c) for c in v), "a list of CIDRs"),
    ("api", "default_page_size"): (lambda v: v >= 1, "at least 1"),
    # A notification's deliveries are numbered in a smallint: listed ones plus a topic's.
    ("api", "max_destinations"): (lambda v: 1 <= v <= 1000, "between 1 and 1000"),
    ("api", "max_stored_destinations"): (lambda v: 1 <= v <= 30_000, "between 1 and 30000"),
    ("api", "rate_limit"): (lambda v: v >= 0, "0 (no limit) or more requests per second"),
    ("supervisor", "drain_delay"): (lambda v: v >= 0, "0 or more seconds"),
    ("kafka", "linger_ms"): _LINGER,
    ("api", "accept_linger_ms"): _LINGER,
    ("delivery", "record_linger_ms"): _LINGER,
    ("poller", "lookahead"): (lambda v: 0 <= v <= 300, "between 0 and 300 seconds"),
    ("retention", "delivered"): (lambda v: v >= 0, "0 (keep forever) or more seconds"),
    ("retention", "failed"): (lambda v: v >= 0, "0 (keep forever) or more seconds"),
    ("delivery", "rotation_overlap"): (lambda v: v >= 0, "0 (no overlap) or more seconds"),
    ("delivery", "disable_after"): (lambda v: v >= 0, "0 (never by time) or more seconds"),
}

# Counts, sizes and durations that must be positive.
_POSITIVE = {
    "max_body_bytes",
    "max_destinations",
    "max_title_chars",
    "max_body_chars",
    "max_data_bytes",
    "max_data_depth",
    "header_timeout",
    "body_timeout",
    "max_page_size",
    "accept_batch",
    "accept_linger_batch",
    "max_bulk",
    "max_bulk_body_bytes",
    "idempotency_retention",
    "rate_burst",
    "pool_min",
    "pool_max",
    "command_timeout",
    "partitions",
    "replication_factor",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "fetch_max_records",
    "consumers",
    "interval",
    "batch",
    "pollers",
    "backstop_interval",
    "workers",
    "timeout",
    "claim_ttl",
    "delivered_ttl",
    "max_connections",
    "max_connections_per_host",
    "max_in_flight_per_host",
    "breaker_threshold",
    "breaker_cooldown",
    "breaker_max_cooldown",
    "record_batch",
    "mailbox",
    "restart_period",
    "shutdown_timeout",
    "socket_timeout",
}


def _is_cidr(value: Any) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError):
        return False
    return True


def load(
    path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the settings file, apply environment variables, then `overrides` ("section.key")."""
    path = Path(path or os.environ.get("NOTIFI_SETTINGS") or DEFAULT_PATH)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from None
    for name, value in _env_overrides(os.environ if env is None else env):
        _assign(raw, name, value)
    for name, value in (overrides or {}).items():
        _assign(raw, name, value)
    return _build(raw)


def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, Any]]:
    found = []
    for key, text in env.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key or key == "NOTIFI_SETTINGS":
            continue
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        found.append((".".join(parts), _toml_value(text)))
    return sorted(found)


def _toml_value(text: str) -> Any:
    """An environment value as TOML where it parses as one, else as the string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _assign(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, key = dotted.split(".")
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise SettingsError(f"setting {dotted}: {section} is not a section")
    node[key] = value


def _build(raw: dict[str, Any]) -> Settings:
    hints = typing.get_type_hints(Settings)
    sections: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        value = raw.get(field.name, {})
        if not isinstance(value, dict):
            raise SettingsError(f"setting {field.name} must be a section (a TOML table)")
        if field.name == "destinations":
            sections[field.name] = _destinations(value)
        else:
            sections[field.name] = _section(field.name, hints[field.name], value)
    unknown = set(raw) - set(sections)
    if unknown:
        raise SettingsError(f"unknown setting section(s): {', '.join(sorted(unknown))}")
    return Settings(**sections)


def _section(name: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise SettingsError(f"unknown setting {name}.{sorted(unknown)[0]}")
    kwargs = {}
    for key, kind in hints.items():
        setting = f"{name}.{key}"
        if key not in values:
            raise SettingsError(f"setting {setting} is missing")
        value = _coerce(setting, kind, values[key])
        if key in _POSITIVE and value <= 0:
            raise SettingsError(f"setting {setting} must be positive, got {value!r}")
        rule = _RULES.get((name, key))
        if rule and not rule[0](value):
            raise SettingsError(f"setting {setting} must be {rule[1]}, got {value!r}")
        kwargs[key] = value
    if name == "api" and kwargs["default_page_size"] > kwargs["max_page_size"]:
        raise SettingsError("setting api.default_page_size must not exceed api.max_page_size")
    return cls(**kwargs)


def _coerce(setting: str, kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise SettingsError(f"setting {setting} must be a list, got {value!r}")
        return [_coerce(f"{setting}[{i}]", item, v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"setting {setting} must be a table, got {value!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool):
        raise SettingsError(f"setting {setting} must be an integer, got {value!r}")
    if isinstance(kind, type) and not isinstance(value, kind):
        raise SettingsError(f"setting {setting} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, kind.__name__
    )


def _destinations(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for name, spec in values.items():
        if not isinstance(spec, dict) or "type" not in spec:
            raise SettingsError(f"setting destinations.{name} must be a table with a type")
    return values
