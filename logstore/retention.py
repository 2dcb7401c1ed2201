"""Retention: delete request rows older than N days in small batches, so no statement holds locks for long.

The cut-off is the start of a UTC day (today minus N days): rows are kept for N full days plus today, and
the daily rollup loses exactly the days whose rows are gone, so totals taken from it stay right.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta

import asyncpg
import structlog

__all__ = ["RETENTION_LOCK_ID", "purge_expired", "retention_cutoff"]

log = structlog.get_logger(__name__)

RETENTION_LOCK_ID = 0x6F7263726574  # "orcret": one worker at a time

_DELETE_BATCH = """
WITH doomed AS (
    SELECT id FROM request_logs WHERE created_at < $1 ORDER BY created_at LIMIT $2
), gone AS (
    DELETE FROM request_logs r USING doomed WHERE r.id = doomed.id RETURNING 1
)
SELECT count(*) FROM gone
"""


def retention_cutoff(days: int, now: datetime | None = None) -> tuple[date, datetime]:
    now = now or datetime.now(UTC)
    day = now.astimezone(UTC).date() - timedelta(days=days)
    return day, datetime.combine(day, time(), tzinfo=UTC)


async def purge_expired(pool: asyncpg.Pool, days: int, *, batch_size: int = 5000, pause: float = 0.05,
                        now: datetime | None = None) -> int:
    """Delete rows older than ``days`` days (and their rollup days); returns the number of rows deleted.

    Each batch is its own short transaction; another worker already purging makes this a no-op.
    """
    if days <= 0:
        return 0
    cutoff_day, cutoff = retention_cutoff(days, now)
    deleted = 0
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_ID):
            return 0
        try:
            while True:
                n = await conn.fetchval(_DELETE_BATCH, cutoff, batch_size)
                deleted += n
                if n < batch_size:
                    break
                await asyncio.sleep(pause)  # let autovacuum and other writers breathe
            await conn.execute("DELETE FROM usage_daily WHERE day < $1", cutoff_day)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_ID)
    if deleted:
        log.info("retention_purged", rows=deleted, before=cutoff.isoformat())
    return deleted
