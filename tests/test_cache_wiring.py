"""cache_ctx / embedder_ctx in an app, and the OpenAI-compatible remote embedder against the fake upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from cache import keys
from cache.embeddings import EMBEDDER, LocalEmbedder, RemoteEmbedder, embedder_ctx
from cache.response_cache import ResponseCache, cache_ctx
from proxy.keys import REDIS, RESPONSE_CACHE, SETTINGS, UPSTREAM
from tests.test_cache_support import answer, chat_fp, make_settings_for, make_token


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.execute_command("FT.DROPINDEX", keys.index_name(key_prefix), "DD")
    await client.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def app_with(redis: Redis, session: aiohttp.ClientSession, *contexts: Any,
             **settings: Any) -> web.Application:
    app = web.Application()
    app[SETTINGS] = make_settings_for(**settings)
    app[REDIS] = redis
    app[UPSTREAM] = session
    app.cleanup_ctx.extend(contexts)
    return app


async def test_cache_ctx_exact_only_when_embeddings_are_off(redis: Redis, session: aiohttp.ClientSession,
                                                            key_prefix: str, aiohttp_client: Any) -> None:
    app = app_with(redis, session, cache_ctx, key_prefix=key_prefix, embeddings="off")
    await aiohttp_client(app)
    cache = app[RESPONSE_CACHE]
    assert isinstance(cache, ResponseCache) and cache.embedder is None and not cache.semantic_ready
    token = make_token(mode="semantic")
    fp = chat_fp("hello?")
    assert await cache.store(token, fp, None, answer("hi"), 60)
    assert (await cache.lookup(token, fp)).status == "exact"


async def test_embedder_ctx_registers_the_embedder_cache_ctx_uses(
        redis: Redis, session: aiohttp.ClientSession, key_prefix: str, aiohttp_client: Any) -> None:
    app = app_with(redis, session, embedder_ctx, cache_ctx, key_prefix=key_prefix, embeddings="local")
    await aiohttp_client(app)
    embedder = app[EMBEDDER]
    assert isinstance(embedder, LocalEmbedder) and app[RESPONSE_CACHE].embedder is embedder
    assert await embedder.wait_ready(180)
    assert app[RESPONSE_CACHE].semantic_ready


async def test_remote_embedder_learns_its_size_and_serves_semantic_hits(
        redis: Redis, session: aiohttp.ClientSession, key_prefix: str, fake_upstream_url: str,
        aiohttp_client: Any) -> None:
    app = app_with(redis, session, cache_ctx, key_prefix=key_prefix, embeddings=fake_upstream_url,
                   embeddings_model="openai/text-embedding-3-small", embeddings_api_key="sk-test")
    await aiohttp_client(app)
    cache = app[RESPONSE_CACHE]
    embedder = cache.embedder
    assert isinstance(embedder, RemoteEmbedder)
    assert await embedder.wait_ready(10) and embedder.dims == 384

    vectors = await asyncio.gather(*(embedder.embed(f"text {i}") for i in range(5)))
    assert all(len(v) == 384 * 4 for v in vectors)

    token = make_token(mode="semantic", threshold=0.5)
    first = chat_fp("What is the capital of France?")
    lookup = await cache.lookup(token, first)  # creates the index now that the size is known
    assert lookup.status == "miss" and lookup.vector is not None and cache.semantic_ready
    assert await cache.store(token, first, lookup, answer("Paris."), 60)
    hit = await cache.lookup(token, chat_fp("what is the capital of france"))
    assert hit.status == "semantic" and hit.entry is not None
