"""Shared fixtures: a database of the test run's own on the real Postgres, a Redis key prefix
of its own on the real Redis, and settings that point at them."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from notifi import settings as settings_module
from notifi.store import Store, ensure_database, migrate

ROOT = Path(__file__).resolve().parent.parent
PG_BASE = os.environ.get("NOTIFI_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("NOTIFI_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def database_name() -> Iterator[str]:
    """One database for the whole run, dropped at the end; runs never collide."""
    name = f"notifi_test_{uuid.uuid4().hex[:10]}"
    yield name
    import asyncio

    async def drop() -> None:
        conn = await asyncpg.connect(f"{PG_BASE}/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def dsn(database_name: str) -> str:
    return f"{PG_BASE}/{database_name}"


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[Store]:
    """The migrated test database, emptied before each test."""
    await ensure_database(dsn)
    s = await Store.open(dsn, min_size=1, max_size=5)
    async with s.pool.acquire() as conn:
        await migrate(conn)
        await conn.execute(
            "TRUNCATE notifications, deliveries, delivery_attempts, outbox, destinations"
            " RESTART IDENTITY"
        )
    yield s
    await s.close()


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    return f"notifi-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings_env(dsn: str, key_prefix: str) -> dict[str, str]:
    """Environment overrides that point a Notifi process at the test services."""
    return {
        "NOTIFI_POSTGRES__DSN": dsn,
        "NOTIFI_REDIS__URL": REDIS_URL,
        "NOTIFI_REDIS__KEY_PREFIX": key_prefix,
        "NOTIFI_DELIVERY__ALLOWED_NETWORKS": '["127.0.0.0/8", "::1/128"]',
        "NOTIFI_LOG__FORMAT": "json",
    }


def load_settings(env: dict[str, str] | None = None) -> settings_module.Settings:
    return settings_module.load(ROOT / "settings.toml", env=env or {})
