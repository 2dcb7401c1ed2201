"""Shared fixtures: real embedded Redis 8 + RediSearch and PostgreSQL started once per run, the fake
OpenRouter on a real port, and the proxy built by the same create_app production uses."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis as redis_sync
from redis.asyncio import Redis

from logstore.db import create_pool
from logstore.migrate import migrate
from proxy.embedded import EmbeddedPostgres, EmbeddedRedis
from proxy.settings import Settings, load_settings
from scripts.fake_openrouter import create_fake_app
from tests.support import ThreadedServer

ADMIN_TOKEN = "sk-orc-admin-test-" + "x" * 24


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    # short path: unix socket paths are limited to ~100 characters
    path = Path(tempfile.mkdtemp(prefix="orc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(services_dir: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(services_dir / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def pg_server(services_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(services_dir / "pg").start()
    yield server
    server.stop()


def _create_database(admin_dsn: str) -> str:
    name = "t_" + secrets.token_hex(6)

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    base, _, query = admin_dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


@pytest.fixture(scope="session")
def pg_dsn(pg_server: EmbeddedPostgres) -> str:
    """The server's maintenance database DSN (create your own databases from it)."""
    return pg_server.url


@pytest.fixture(scope="module")
def database_url(pg_server: EmbeddedPostgres) -> str:
    """A fresh, empty database for this test module."""
    return _create_database(pg_server.url)


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[ThreadedServer]:
    server = ThreadedServer(create_fake_app).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_upstream_url(fake_upstream: ThreadedServer) -> str:
    return fake_upstream.url + "/api/v1"


@pytest.fixture
def key_prefix() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
def make_settings(redis_url: str, database_url: str, fake_upstream_url: str, key_prefix: str,
                  tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one proxy under test: its own key prefix and data dir, shared servers."""

    def make(**overrides: Any) -> Settings:
        base = dict(redis_url=redis_url, database_url=database_url, upstream_url=fake_upstream_url,
                    admin_token=ADMIN_TOKEN, key_prefix=key_prefix, data_dir=tmp_path / "data",
                    openrouter_api_key="sk-or-upstream-secret", embeddings="off", log_flush_interval=0.05,
                    log_format="console")
        base.update(overrides)
        return load_settings(base, env={})

    return make


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def redis_sync_client(redis_server: EmbeddedRedis) -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis(unix_socket_path=str(redis_server.socket_path), decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client of the shared Redis (a module may define its own, with another scope)."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on this module's own database, migrated."""
    pool = await create_pool(database_url, max_size=6)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield pool
    await pool.close()
