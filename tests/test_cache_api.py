"""Admin endpoints of the cache, over HTTP, with the real admin authentication and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from cache import keys
from cache.api import routes
from cache.response_cache import ResponseCache
from proxy.app import create_app
from proxy.auth import TokenAuthenticator
from proxy.keys import AUTH, RESPONSE_CACHE, SETTINGS
from proxy.middleware import request_middleware
from tests.feature_support import bearer, chat, new_token, sent_upstream
from tests.test_cache_support import answer, chat_fp, make_settings_for, make_token

ADMIN = "sk-orc-admin-cache-test-" + "y" * 20
A = make_token("a" * 16)
B = make_token("b" * 16)


@pytest.fixture
async def setup(redis_url: str, key_prefix: str,
                aiohttp_client: Any) -> AsyncIterator[tuple[TestClient, ResponseCache]]:
    redis = Redis.from_url(redis_url)
    settings = make_settings_for(key_prefix, admin_token=ADMIN)
    cache = ResponseCache(redis, settings)
    assert await cache.setup()
    app = web.Application(middlewares=[request_middleware])
    app[SETTINGS] = settings
    app[AUTH] = TokenAuthenticator(redis, settings)
    app[RESPONSE_CACHE] = cache
    app.add_routes(routes)
    client = await aiohttp_client(app)
    yield client, cache
    await cache.close()
    await redis.ft(keys.index_name(key_prefix)).dropindex(delete_documents=True)
    await redis.aclose()


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


async def test_admin_endpoints_need_the_admin_token(setup: tuple[TestClient, ResponseCache]) -> None:
    client, _ = setup
    for method, path in (("GET", "/admin/cache/stats"), ("DELETE", f"/admin/cache/tokens/{A.id}"),
                         ("DELETE", "/admin/cache/entries/" + "0" * 32)):
        resp = await client.request(method, path)
        assert resp.status == 401, path
        body = await resp.json()
        assert body["error"]["type"] == "authentication_error"
        resp = await client.request(method, path, headers={"Authorization": "Bearer sk-orc-wrong"})
        assert resp.status == 401


async def test_stats_purge_and_delete_over_http(setup: tuple[TestClient, ResponseCache]) -> None:
    client, cache = setup
    for q in ("one", "two"):
        assert await cache.store(A, chat_fp(q), None, answer(q), 600)
    assert await cache.store(B, chat_fp("one"), None, answer("b"), 600)

    resp = await client.get("/admin/cache/stats", headers=admin())
    assert resp.status == 200
    body = await resp.json()
    by_scope = {row["scope"]: row for row in body["scopes"]}
    assert by_scope[A.cache_scope]["entries"] == 2 and by_scope[A.cache_scope]["token_id"] == A.id
    assert by_scope[B.cache_scope]["entries"] == 1
    assert by_scope[A.cache_scope]["bytes"] > by_scope[B.cache_scope]["bytes"] > 0  # summed from the rows
    assert body["counters"]["stores"] == 3

    entry = (await cache.lookup(B, chat_fp("one"))).entry
    assert entry is not None
    resp = await client.delete(f"/admin/cache/entries/{entry.id}", headers=admin())
    assert resp.status == 200 and await resp.json() == {"deleted": 1}
    resp = await client.delete(f"/admin/cache/entries/{entry.id}", headers=admin())
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "entry_not_found"

    resp = await client.delete(f"/admin/cache/tokens/{A.id}", headers=admin())
    assert resp.status == 200 and await resp.json() == {"deleted": 2}
    assert (await cache.lookup(A, chat_fp("one"))).status == "miss"
    body = await (await client.get("/admin/cache/stats", headers=admin())).json()
    assert body["scopes"] == []


async def test_purge_a_shared_scope(setup: tuple[TestClient, ResponseCache]) -> None:
    client, cache = setup
    team = make_token("c" * 16, shared="team")
    assert await cache.store(team, chat_fp("q"), None, answer("t"), 600)
    resp = await client.delete("/admin/cache/scopes/shared:team", headers=admin())
    assert resp.status == 200 and await resp.json() == {"deleted": 1}
    resp = await client.delete("/admin/cache/scopes/team", headers=admin())
    assert resp.status == 400


async def test_an_answer_names_its_entry_and_deleting_that_entry_evicts_it(aiohttp_client: Any, make_settings: Any,
                                                                           admin_headers: dict[str, str],
                                                                           fake_upstream: Any) -> None:
    proxy = await aiohttp_client(create_app(make_settings()))
    token = await new_token(proxy, admin_headers, cache_mode="exact")
    body = chat("which entry answered me")

    async def ask(**headers: str) -> Any:
        resp = await proxy.post("/v1/chat/completions", json=body, headers=bearer(token, **headers))
        assert resp.status == 200
        return resp

    unstored = await ask(**{"Cache-Control": "no-store"})
    assert unstored.headers["X-Cache"] == "BYPASS" and "X-Cache-Entry" not in unstored.headers
    first = await ask()
    assert first.headers["X-Cache"] == "MISS"
    entry_id = first.headers["X-Cache-Entry"]
    deadline = asyncio.get_running_loop().time() + 5
    while (hit := await ask()).headers["X-Cache"] != "HIT-EXACT":  # stored off the response path
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert hit.headers["X-Cache-Entry"] == entry_id
    streamed = await proxy.post("/v1/chat/completions", json={**body, "stream": True}, headers=bearer(token))
    await streamed.read()
    assert streamed.headers["X-Cache"] == "HIT-EXACT" and streamed.headers["X-Cache-Entry"] == entry_id

    resp = await proxy.delete(f"/admin/cache/entries/{entry_id}", headers=admin_headers)
    assert resp.status == 200 and await resp.json() == {"deleted": 1}
    again = await ask()
    assert again.headers["X-Cache"] == "MISS" and again.headers["X-Cache-Entry"] == entry_id
    assert len(await sent_upstream(fake_upstream, "which entry answered me")) == 3
