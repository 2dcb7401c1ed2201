"""Schema migrations: ordered .sql files applied once each, under an advisory lock.

Files are named ``NNNN_description.sql``; the part before the first underscore is the version recorded in
``schema_migrations``. Everything pending is applied in one transaction that first takes
``pg_advisory_xact_lock``, so several workers starting together apply each file exactly once and the others
wait, then find nothing to do.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import structlog

__all__ = ["MIGRATIONS_DIR", "MIGRATION_LOCK_ID", "migrate", "pending_migrations"]

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# any constant bigint works; this one spells "orcmig" in ASCII
MIGRATION_LOCK_ID = 0x6F72636D6967

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def _migration_files(directory: Path) -> list[tuple[str, Path]]:
    files = []
    for path in sorted(directory.glob("*.sql")):
        version = path.stem.split("_", 1)[0]
        if not version.isdigit():
            raise ValueError(f"migration file {path.name} must start with a number, e.g. 0002_add_x.sql")
        files.append((version, path))
    versions = [v for v, _ in files]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return files


async def pending_migrations(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Names of the files not yet applied (for diagnostics; ``migrate`` is what applies them)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = set()
    if exists:
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [p.name for v, p in _migration_files(directory) if v not in applied]


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration in order; returns the names of the files applied."""
    files = _migration_files(directory)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(_CREATE_TABLE)
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, path in files:
            if version in applied:
                continue
            await conn.execute(path.read_text(encoding="utf-8"))
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, path.name)
            applied_now.append(path.name)
    if applied_now:
        log.info("migrations_applied", files=applied_now)
    return applied_now
