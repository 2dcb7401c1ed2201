"""The Postgres pool: created once, migrated at start-up, closed last-but-one (the log writer drains first).

The pool is created with ``min_size=0``, so creating it never needs the server: when Postgres is down at
start-up the proxy still starts, logs a warning and keeps retrying the migrations in the background, while
the log writer spools to disk. Once the server answers, connections are made on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import orjson
import structlog
from aiohttp import web

from logstore.migrate import migrate
from proxy.keys import PG_POOL, SETTINGS

__all__ = ["PG_READY", "create_pool", "init_connection", "postgres_ctx", "wait_until_migrated"]

log = structlog.get_logger(__name__)

# set once the schema is migrated; the log writer and the APIs work without it (they fail and retry/spool)
PG_READY = web.AppKey("pg_ready", asyncio.Event)

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 60.0
CLOSE_TIMEOUT = 10.0


def _jsonb_encode(value: object) -> bytes:
    return b"\x01" + orjson.dumps(value)  # binary jsonb: a version byte, then the text


def _jsonb_decode(data: bytes) -> object:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """JSON codecs with orjson; binary format so COPY (which is binary) can encode jsonb too."""
    await conn.set_type_codec("jsonb", schema="pg_catalog", format="binary",
                              encoder=_jsonb_encode, decoder=_jsonb_decode)
    await conn.set_type_codec("json", schema="pg_catalog", format="binary",
                              encoder=orjson.dumps, decoder=orjson.loads)


# asyncpg prepares every query; after five runs Postgres may switch a statement to a generic plan, one that
# ignores the values. For the log filters that is ruinous: "status 429 of token X" became a bitmap AND
# over a million index entries (850 ms) instead of a 0.4 ms index scan. Planning anew costs well under 1 ms.
_SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(dsn: str, *, max_size: int = 10, **kwargs: object) -> asyncpg.Pool:
    """A pool that connects lazily: this succeeds even while the server is down."""
    return await asyncpg.create_pool(
        dsn, min_size=0, max_size=max_size, init=init_connection, timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT, max_inactive_connection_lifetime=300.0,
        server_settings=_SERVER_SETTINGS, **kwargs)


async def wait_until_migrated(pool: asyncpg.Pool, *, first_delay: float = 1.0, max_delay: float = 30.0,
                              ready: asyncio.Event | None = None,
                              first_attempt: asyncio.Event | None = None) -> None:
    """Run the migrations, retrying with capped exponential backoff until the server answers."""
    delay = first_delay
    while True:
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("postgres_unavailable", error=repr(exc), retry_in=delay)
            if first_attempt is not None:
                first_attempt.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        if ready is not None:
            ready.set()
        if first_attempt is not None:
            first_attempt.set()
        log.info("postgres_ready")
        return


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    """Owns ``app[PG_POOL]``; without a database_url there is no pool and logging stays in the spool."""
    settings = app[SETTINGS]
    ready = asyncio.Event()
    app[PG_READY] = ready
    if not settings.database_url:
        log.warning("postgres_disabled", reason="no database_url")
        yield
        return
    pool = await create_pool(settings.database_url)
    app[PG_POOL] = pool
    first_attempt = asyncio.Event()
    task = asyncio.create_task(wait_until_migrated(pool, ready=ready, first_attempt=first_attempt),
                               name="pg-migrate")
    # serve with the schema in place when the server answers; when it does not, start anyway (the writer
    # spools) after the first failed attempt, while the task keeps trying
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(first_attempt.wait(), timeout=CONNECT_TIMEOUT + 1.0)
    yield
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        await asyncio.wait_for(pool.close(), timeout=CLOSE_TIMEOUT)
    except TimeoutError:
        log.warning("postgres_pool_close_timeout")
        pool.terminate()
