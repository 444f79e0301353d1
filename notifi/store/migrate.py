"""Schema migrations: plain SQL files applied in order, once, under an advisory lock."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number shared by every Notifi process; two migrators never run at once.
_LOCK_ID = 0x4E6F74696669

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` when it does not exist (a fresh machine)."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        name = unquote(urlsplit(dsn).path.lstrip("/"))
        admin = await asyncpg.connect(dsn, database="postgres")
        try:
            quoted = name.replace('"', '""')
            await admin.execute(f'CREATE DATABASE "{quoted}"')
            log.info("database_created", database=name)
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            pass  # another process created it first
        finally:
            await admin.close()
    else:
        await conn.close()


async def prepare_database(dsn: str) -> list[str]:
    """Brings the database named in `dsn` to the current schema: creates it when it does not
    exist, then applies the pending migrations on one connection of its own. Returns the
    names applied. What both `supervisor.py migrate` and every process's start-up run."""
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not applied yet; returns their names."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(_CREATE_LEDGER)
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            log.info("migration_applied", migration=path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied
