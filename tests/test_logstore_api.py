"""The logs, usage and analytics APIs against real Postgres (seeded rows) and real Redis (auth)."""

from __future__ import annotations

import math
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from redis.asyncio import Redis

from logstore.api import routes
from logstore.pricing import PricingTable
from logstore.record import CallRecord
from logstore.rows import COLUMNS, record_to_row
from logstore.writer import insert_rows
from proxy.auth import TokenAuthenticator
from proxy.keys import AUTH, PG_POOL, REDIS, SETTINGS
from proxy.middleware import request_middleware
from proxy.settings import Settings
from proxy.tokens import Token, TokenStore
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.asyncio(loop_scope="session")

PRICING = PricingTable([
    {"id": "openai/gpt-4o", "canonical_slug": "openai/gpt-4o-2024-08-06",
     "pricing": {"prompt": "0.0000025", "completion": "0.00001"}},
    {"id": "anthropic/claude-3.5-sonnet", "canonical_slug": "anthropic/claude-3.5-sonnet-20241022",
     "pricing": {"prompt": "0.000003", "completion": "0.000015"}},
])
MODELS = [("openai/gpt-4o", "OpenAI"), ("anthropic/claude-3.5-sonnet", "Anthropic"), ("meta/llama", "Groq")]
# hours ago, chosen away from the 1/7/30-day edges so relative ranges cannot flip during the test
HOURS = [0.05, 0.5, 2, 5, 9, 14, 30, 40, 60, 80, 100, 130, 150, 190, 210, 300, 400, 500, 650, 690, 800, 900]
N = 64


@dataclass
class World:
    alice: Token
    alice_secret: str
    bob: Token
    bob_secret: str
    rows: list[dict[str, Any]]
    now: datetime
    prefix: str


@pytest.fixture(scope="module")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def world(pool: asyncpg.Pool, redis: Redis) -> World:
    prefix = "tlog" + secrets.token_hex(3)
    store = TokenStore(redis, prefix)
    alice, alice_secret = await store.create({"name": "alice"})
    bob, bob_secret = await store.create({"name": "bob"})
    now = datetime.now(UTC)
    records = []
    for i in range(N):
        owner = (alice, alice, bob, bob, None)[i % 5]
        model, provider = MODELS[i % 3]
        status, error = 200, None
        if owner is None:
            status, error, model, provider = 401, "Missing API key", None, None
        elif i % 7 == 3:
            status, error = 502, "upstream exploded"
        elif i % 7 == 5:
            status, error = 429, "rate limited"
        cache = ("miss", "exact", "semantic", "bypass")[i % 4] if status == 200 else "bypass"
        usage = {"prompt_tokens": 100 + i, "completion_tokens": 10 + i,
                 "prompt_tokens_details": {"cached_tokens": i % 3},
                 "completion_tokens_details": {"reasoning_tokens": i % 4}}
        if model == "meta/llama":
            usage["cost"] = 0.0001 * i
        hit = cache in ("exact", "semantic")
        records.append(CallRecord(
            request_id=f"req-{i:03d}", created_at=now - timedelta(hours=HOURS[i % len(HOURS)] + i * 0.01),
            method="POST", path="/v1/chat/completions", status=status, error=error,
            token_id=owner.id if owner else None, token_name=owner.name if owner else None,
            upstream_id="or-main" if i % 2 else None, duration_ms=10.0 + i, model_requested=model,
            response_model=model, provider=provider, endpoint_id=f"ep-{provider}" if provider else None,
            usage=usage if status == 200 else None, cache_status=cache,
            similarity=0.91 if cache == "semantic" else None,
            saved_usage={"prompt_tokens": 50, "completion_tokens": 5, "cost": 0.002 * (i + 1)} if hit else None,
            tags={k: v for k, v in {
                "project_id": ("p1", "p2", None)[i % 3], "agent_type": "planner" if i % 2 == 0 else "coder",
                "run_id": "run-A" if i < 20 else None, "iteration": str(i % 4 + 1) if i < 20 else None,
                "query_id": "q-1" if i % 6 == 0 else None}.items() if v is not None},
            response_preview=f"answer {i}",
        ))
    rows = [record_to_row(r, pricing=PRICING) for r in records]
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE request_logs, usage_daily")
        assert await insert_rows(conn, rows[: N // 2]) == N // 2
        assert await insert_rows(conn, rows[N // 2:]) == N - N // 2
    return World(alice, alice_secret, bob, bob_secret, [dict(zip(COLUMNS, r)) for r in rows], now, prefix)


@pytest.fixture
async def client(aiohttp_client, pool, redis, world, redis_url, database_url):
    app = web.Application(middlewares=[request_middleware])
    app[SETTINGS] = Settings(admin_token=ADMIN_TOKEN, key_prefix=world.prefix, redis_url=redis_url,
                             database_url=database_url)
    app[REDIS] = redis
    app[PG_POOL] = pool
    # the real authenticator (admin token + token records in Redis), without its pub/sub invalidation task:
    # tokens here never change, and that task's cancellation can hang in redis-py (reported)
    app[AUTH] = TokenAuthenticator(redis, app[SETTINGS])
    app.add_routes(routes)
    return await aiohttp_client(app)


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def get(client, path: str, params: dict | None = None, headers: dict | None = None,
              status: int = 200) -> Any:
    resp = await client.get(path, params=params or {}, headers=ADMIN if headers is None else headers)
    body = await resp.json()
    assert resp.status == status, body
    return body


def newest_first(rows: list[dict[str, Any]]) -> list[str]:
    return [r["request_id"] for r in sorted(rows, key=lambda r: r["created_at"], reverse=True)]


# --- /admin/logs -----------------------------------------------------------------------------------------

async def test_logs_are_newest_first_with_exact_total(client, world) -> None:
    body = await get(client, "/admin/logs", {"page_size": 200})
    assert [i["request_id"] for i in body["items"]] == newest_first(world.rows)
    assert (body["total"], body["total_pages"], body["page"], body["total_exact"]) == (N, 1, 1, True)
    first = body["items"][0]
    assert first["created_at"].endswith("Z") and "request_body" not in first
    default = await get(client, "/admin/logs")
    assert len(default["items"]) == 20 and default["total_pages"] == math.ceil(N / 20)


H = timedelta(hours=1)
FILTERS: list[tuple[str, Callable[[World], dict[str, str]], Callable[[World, dict], bool]]] = [
    ("token", lambda w: {"api_key_id": w.alice.id}, lambda w, r: r["token_id"] == w.alice.id),
    ("upstream", lambda w: {"upstream_id": "or-main"}, lambda w, r: r["upstream_id"] == "or-main"),
    ("status_code", lambda w: {"status_code": "502"}, lambda w, r: r["status_code"] == 502),
    ("model", lambda w: {"model": "openai/gpt-4o"}, lambda w, r: r["model"] == "openai/gpt-4o"),
    ("provider", lambda w: {"provider": "Anthropic"}, lambda w, r: r["provider"] == "Anthropic"),
    ("cache", lambda w: {"cache": "exact"}, lambda w, r: r["cache_status"] == "exact"),
    ("success", lambda w: {"status": "success"}, lambda w, r: r["success"]),
    ("error", lambda w: {"status": "error"}, lambda w, r: not r["success"]),
    ("cached", lambda w: {"status": "cached"}, lambda w, r: r["cache_status"] in ("exact", "semantic")),
    ("1day", lambda w: {"range": "1day"}, lambda w, r: r["created_at"] >= w.now - 24 * H),
    ("7days", lambda w: {"range": "7days"}, lambda w, r: r["created_at"] >= w.now - 168 * H),
    ("30days", lambda w: {"range": "30days"}, lambda w, r: r["created_at"] >= w.now - 720 * H),
    ("all", lambda w: {"range": "all"}, lambda w, r: True),
    ("window", lambda w: {"start_time": (w.now - 100.5 * H).isoformat(), "end_time": (w.now - 9.5 * H).isoformat()},
     lambda w, r: w.now - 100.5 * H <= r["created_at"] <= w.now - 9.5 * H),
    ("start_only", lambda w: {"start_time": (w.now - 45 * H).strftime("%Y-%m-%dT%H:%M:%SZ")},
     lambda w, r: r["created_at"] >= (w.now - 45 * H).replace(microsecond=0)),
    ("end_only", lambda w: {"end_time": (w.now - 300.2 * H).isoformat()},
     lambda w, r: r["created_at"] <= w.now - 300.2 * H),
    ("agent_type", lambda w: {"agent_type": "planner"}, lambda w, r: r["agent_type"] == "planner"),
    ("project", lambda w: {"project_id": "p1"}, lambda w, r: r["project_id"] == "p1"),
    ("run", lambda w: {"run_id": "run-A"}, lambda w, r: r["run_id"] == "run-A"),
    ("query", lambda w: {"query_id": "q-1"}, lambda w, r: r["query_id"] == "q-1"),
    ("combined", lambda w: {"api_key_id": w.bob.id, "cache": "miss", "range": "7days"},
     lambda w, r: r["token_id"] == w.bob.id and r["cache_status"] == "miss" and r["created_at"] >= w.now - 168 * H),
    ("model_errors_window", lambda w: {"model": "meta/llama", "status": "error",
                                       "start_time": (w.now - 500.5 * H).isoformat()},
     lambda w, r: r["model"] == "meta/llama" and not r["success"] and r["created_at"] >= w.now - 500.5 * H),
    ("tag_and_window", lambda w: {"project_id": "p2", "end_time": (w.now - 20 * H).isoformat()},
     lambda w, r: r["project_id"] == "p2" and r["created_at"] <= w.now - 20 * H),
    ("nothing", lambda w: {"model": "no/such-model"}, lambda w, r: False),
]


@pytest.mark.parametrize(("name", "params", "keep"), FILTERS, ids=[f[0] for f in FILTERS])
async def test_each_filter_returns_exactly_the_matching_rows(client, world, name, params, keep) -> None:
    expected = newest_first([r for r in world.rows if keep(world, r)])
    body = await get(client, "/admin/logs", {"page_size": 200, **params(world)})
    assert [i["request_id"] for i in body["items"]] == expected
    assert body["total"] == len(expected) and body["total_exact"] is True
    assert body["total_pages"] == math.ceil(len(expected) / 200)


async def test_pagination_edges(client, world) -> None:
    everything = newest_first(world.rows)
    pages, seen = math.ceil(N / 10), []
    for page in range(1, pages + 1):
        body = await get(client, "/admin/logs", {"page": page, "page_size": 10})
        assert (body["total"], body["total_pages"], body["page"]) == (N, pages, page)
        seen += [i["request_id"] for i in body["items"]]
    assert seen == everything
    assert len(body["items"]) == N - 10 * (pages - 1)  # the last page is the remainder
    beyond = await get(client, "/admin/logs", {"page": pages + 1, "page_size": 10})
    assert beyond["items"] == [] and beyond["total"] == N and beyond["page"] == pages + 1
    far = await get(client, "/admin/logs", {"page": 9_999_999, "page_size": 200, "project_id": "p1"})
    assert far["items"] == [] and far["total"] == sum(r["project_id"] == "p1" for r in world.rows)
    empty = await get(client, "/admin/logs", {"model": "no/such-model"})
    assert (empty["items"], empty["total"], empty["total_pages"]) == ([], 0, 0)
    one = await get(client, "/admin/logs", {"page_size": 1, "page": N})
    assert [i["request_id"] for i in one["items"]] == [everything[-1]]


async def walk(client, params: dict[str, Any], start: dict) -> tuple[list[str], list[str]]:
    """Request ids seen following next_cursor from ``start`` to the end, then prev_cursor back to page 1."""
    body, down = start, [i["request_id"] for i in start["items"]]
    while body["next_cursor"]:
        body = await get(client, "/admin/logs", {**params, "cursor": body["next_cursor"], "page": body["page"] + 1})
        down += [i["request_id"] for i in body["items"]]
    up = [i["request_id"] for i in body["items"]]
    while body["prev_cursor"]:
        body = await get(client, "/admin/logs", {**params, "cursor": body["prev_cursor"], "page": body["page"] - 1})
        up = [i["request_id"] for i in body["items"]] + up
    assert body["page"] == 1
    return down, up


@pytest.mark.parametrize(("name", "params"), [
    ("all", lambda w: {}), ("token", lambda w: {"api_key_id": w.alice.id}), ("error", lambda w: {"status": "error"}),
    ("tag_and_window", lambda w: {"project_id": "p2", "end_time": (w.now - 20 * H).isoformat()})])
async def test_keyset_cursors_walk_the_same_pages_as_page_numbers(client, world, name, params) -> None:
    query = {"page_size": 7, **params(world)}
    first = await get(client, "/admin/logs", query)
    expected = [i["request_id"] for i in (await get(client, "/admin/logs", {**query, "page_size": 200}))["items"]]
    assert first["prev_cursor"] is None and (first["next_cursor"] is None) == (len(expected) <= 7)
    down, up = await walk(client, query, first)
    assert down == expected and up == expected
    # a cursor page is the page of the same number found by OFFSET, cursors included
    if len(expected) > 14:
        by_cursor = await get(client, "/admin/logs", {**query, "cursor": first["next_cursor"], "page": 2})
        by_offset = await get(client, "/admin/logs", {**query, "page": 2})
        assert by_cursor == by_offset and by_cursor["items"]


async def test_keyset_prev_page_that_comes_up_short_is_the_first_page(client, world) -> None:
    everything = newest_first(world.rows)
    second = await get(client, "/admin/logs", {"page": 2, "page_size": 5})
    assert [i["request_id"] for i in second["items"]] == everything[5:10]
    # ten newer rows are asked for, five exist: the answer is page 1 of ten, not five rows short
    back = await get(client, "/admin/logs", {"page_size": 10, "page": 2, "cursor": second["prev_cursor"]})
    assert [i["request_id"] for i in back["items"]] == everything[:10]
    assert (back["page"], back["prev_cursor"]) == (1, None) and back["next_cursor"] is not None
    last = await get(client, "/admin/logs", {"page": math.ceil(N / 5), "page_size": 5})
    assert [i["request_id"] for i in last["items"]] == everything[60:]
    assert last["next_cursor"] is None and last["prev_cursor"] is not None
    before_last = await get(client, "/admin/logs", {"page_size": 5, "page": 12, "cursor": last["prev_cursor"]})
    assert [i["request_id"] for i in before_last["items"]] == everything[55:60]
    assert before_last["page"] == 12 and before_last["next_cursor"] and before_last["prev_cursor"]


BAD = [
    # not base64; a bad direction; a time without a zone; an id that is no integer
    ("cursor", "garbage!"), ("cursor", "eHwyMDI1LTAxLTAxVDAwOjAwOjAwKzAwOjAwfDU"),
    ("cursor", "b3wyMDI1LTAxLTAxVDAwOjAwOjAwfDU"), ("cursor", "b3wyMDI1LTAxLTAxVDAwOjAwOjAwKzAwOjAwfGZpdmU"),
    ("page", "0"), ("page", "abc"), ("page_size", "0"), ("page_size", "201"), ("status_code", "abc"),
    ("status_code", "99"), ("start_time", "yesterday"), ("end_time", "2025-13-01"), ("cache", "maybe"),
    ("status", "fine"), ("range", "2days"), ("model", "m" * 300),
]


@pytest.mark.parametrize(("param", "value"), BAD)
async def test_bad_filter_values_are_400_naming_the_parameter(client, param, value) -> None:
    body = await get(client, "/admin/logs", {param: value}, status=400)
    assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"


async def test_start_after_end_is_400(client) -> None:
    body = await get(client, "/admin/logs", {"start_time": "2025-02-01T00:00:00Z",
                                             "end_time": "2025-01-01T00:00:00Z"}, status=400)
    assert body["error"]["param"] == "start_time"


@pytest.mark.parametrize("path", ["/admin/logs", "/admin/logs/req-001", "/admin/analytics/summary",
                                  "/admin/analytics/cache", "/admin/analytics/top-tokens"])
async def test_admin_endpoints_need_the_admin_token(client, world, path) -> None:
    for headers in ({}, bearer("wrong"), bearer(world.alice_secret)):
        resp = await client.get(path, headers=headers)
        assert resp.status == 401, (path, headers)
        assert (await resp.json())["error"]["type"] == "authentication_error"


async def test_log_detail_has_every_field_and_404s(client, world) -> None:
    body = await get(client, "/admin/logs/req-007")
    assert set(COLUMNS) | {"id", "cache_discount"} == set(body)
    want = next(r for r in world.rows if r["request_id"] == "req-007")
    assert body["token_id"] == want["token_id"] and body["cost"] == pytest.approx(want["cost"])
    assert body["response_preview"] == "answer 7" and body["iteration"] == want["iteration"]
    missing = await get(client, "/admin/logs/nope", status=404)
    assert missing["error"]["param"] == "request_id"


# --- /api/tokens/usage-logs ------------------------------------------------------------------------------

ACTIVITY_KEYS = {"date", "model", "model_permaslug", "endpoint_id", "provider_name", "usage",
                 "byok_usage_inference", "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens"}


def expected_activity(world: World, token_id: str | None, days: int = 30) -> dict[tuple, dict[str, float]]:
    first = world.now.date() - timedelta(days=days - 1)
    out: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in world.rows:
        if r["cache_status"] in ("exact", "semantic") or r["created_at"].date() < first:
            continue
        if token_id is not None and r["token_id"] != token_id:
            continue
        key = (r["created_at"].date().isoformat(), r["model"], r["provider"])
        out[key]["requests"] += 1
        out[key]["prompt_tokens"] += r["prompt_tokens"]
        out[key]["usage"] += r["cost"] or 0.0
    return out


def activity(body: dict) -> dict[tuple, dict[str, float]]:
    return {(d["date"], d["model"], d["provider_name"]): {"requests": d["requests"],
                                                         "prompt_tokens": d["prompt_tokens"], "usage": d["usage"]}
            for d in body["data"]}


def assert_activity(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, w in want.items():
        assert got[key]["requests"] == w["requests"] and got[key]["prompt_tokens"] == w["prompt_tokens"]
        assert got[key]["usage"] == pytest.approx(w["usage"])


async def test_usage_logs_in_openrouter_activity_shape_for_admin(client, world) -> None:
    body = await get(client, "/api/tokens/usage-logs", {"page_size": 1000})
    assert body["data"] and all(set(d) == ACTIVITY_KEYS for d in body["data"])
    assert_activity(activity(body), expected_activity(world, None))
    assert body["total"] == len(body["data"])
    only_alice = await get(client, "/api/tokens/usage-logs", {"page_size": 1000, "token_id": world.alice.id})
    assert_activity(activity(only_alice), expected_activity(world, world.alice.id))
    one_model = await get(client, "/api/tokens/usage-logs", {"page_size": 1000, "model": "openai/gpt-4o"})
    assert {d["model"] for d in one_model["data"]} == {"openai/gpt-4o"}
    paged = await get(client, "/api/tokens/usage-logs", {"page_size": 2, "page": 2})
    assert len(paged["data"]) == 2 and paged["total_pages"] == math.ceil(body["total"] / 2)


async def test_a_token_holder_sees_only_its_own_usage(client, world) -> None:
    mine = await get(client, "/api/tokens/usage-logs", {"page_size": 1000}, headers=bearer(world.alice_secret))
    assert mine["token_id"] == world.alice.id
    assert_activity(activity(mine), expected_activity(world, world.alice.id))
    bobs = await get(client, "/api/tokens/usage-logs", {"page_size": 1000}, headers=bearer(world.bob_secret))
    assert_activity(activity(bobs), expected_activity(world, world.bob.id))
    assert activity(mine) != activity(bobs)
    peek = await get(client, "/api/tokens/usage-logs", {"token_id": world.bob.id},
                     headers=bearer(world.alice_secret), status=403)
    assert peek["error"]["param"] == "token_id"
    await get(client, "/api/tokens/usage-logs", headers={}, status=401)
    stats = await get(client, "/api/tokens/cache-stats", {"range": "all"}, headers=bearer(world.alice_secret))
    alice_rows = [r for r in world.rows if r["token_id"] == world.alice.id]
    assert stats["requests"] == len(alice_rows)
    assert stats["cache_hits"] == sum(r["cache_status"] in ("exact", "semantic") for r in alice_rows)


# --- analytics -------------------------------------------------------------------------------------------

async def test_summary_and_daily_trends_match_the_raw_rows(client, world) -> None:
    rows = world.rows
    s = await get(client, "/admin/analytics/summary", {"range": "all"})
    assert s["requests"] == N and s["errors"] == sum(not r["success"] for r in rows)
    assert s["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows)
    assert s["cost"] == pytest.approx(sum(r["cost"] or 0 for r in rows))
    assert s["saved_cost"] == pytest.approx(sum(r["saved_cost"] or 0 for r in rows))
    hits = sum(r["cache_status"] in ("exact", "semantic") for r in rows)
    misses = sum(r["cache_status"] == "miss" for r in rows)
    assert s["cache_hits"] == hits and s["cache_hit_rate"] == pytest.approx(hits / (hits + misses))
    assert s["tokens"] == 2 and s["models"] == 3
    week = await get(client, "/admin/analytics/summary", {"range": "7days"})
    first = world.now.date() - timedelta(days=6)
    assert week["requests"] == sum(r["created_at"].date() >= first for r in rows)
    daily = await get(client, "/admin/analytics/daily", {"range": "30days"})
    assert len(daily["data"]) == 30  # every day, zeros included
    per_day: dict[str, int] = defaultdict(int)
    for r in rows:
        per_day[r["created_at"].date().isoformat()] += 1
    for d in daily["data"]:
        assert d["requests"] == per_day.get(d["date"], 0)


async def test_top_tokens_models_and_cache_breakdown(client, world) -> None:
    rows = world.rows
    top = (await get(client, "/admin/analytics/top-tokens", {"range": "all"}))["data"]
    cost = {t.id: sum(r["cost"] or 0 for r in rows if r["token_id"] == t.id) for t in (world.alice, world.bob)}
    assert [t["token_id"] for t in top] == sorted(cost, key=cost.get, reverse=True)
    assert {t["token_name"] for t in top} == {"alice", "bob"}
    models = (await get(client, "/admin/analytics/models", {"range": "all"}))["data"]
    assert {m["model"]: m["requests"] for m in models} == {
        m: sum(r["model"] == m for r in rows) for m in {r["model"] for r in rows}}
    cache = await get(client, "/admin/analytics/cache", {"range": "all"})
    assert cache["exact_hits"] == sum(r["cache_status"] == "exact" for r in rows)
    assert cache["semantic_hits"] == sum(r["cache_status"] == "semantic" for r in rows)
    assert cache["by_status"] == {s: sum(r["cache_status"] == s for r in rows)
                                  for s in {r["cache_status"] for r in rows}}
    assert cache["saved_tokens"] == sum(r["saved_prompt_tokens"] + r["saved_completion_tokens"] for r in rows)
    assert cache["avg_similarity"] == pytest.approx(0.91)
    assert sum(m["cache_hits"] for m in cache["by_model"]) == cache["cache_hits"]


async def test_cache_evolution_per_iteration_and_top_savings(client, world) -> None:
    body = await get(client, "/admin/analytics/cache/evolution", {"run_id": "run-A"})
    run = [r for r in world.rows if r["run_id"] == "run-A"]
    assert [d["iteration"] for d in body["data"]] == sorted({r["iteration"] for r in run})
    for d in body["data"]:
        it = [r for r in run if r["iteration"] == d["iteration"]]
        assert d["requests"] == len(it)
        assert d["cache_hits"] == sum(r["cache_status"] in ("exact", "semantic") for r in it)
    by_query = await get(client, "/admin/analytics/cache/evolution", {"query_id": "q-1"})
    assert sum(d["requests"] for d in by_query["data"]) == sum(r["query_id"] == "q-1" for r in world.rows)
    missing = await get(client, "/admin/analytics/cache/evolution", status=400)
    assert missing["error"]["param"] == "run_id"
    top = (await get(client, "/admin/analytics/cache/top-savings", {"range": "all", "limit": 5}))["data"]
    savings = sorted((r["saved_cost"] for r in world.rows if r["saved_cost"]), reverse=True)[:5]
    assert [t["saved_cost"] for t in top] == pytest.approx(savings)


async def test_log_queries_are_planned_for_their_values(pool: asyncpg.Pool) -> None:
    """A prepared statement run often must not fall back to a generic plan that ignores the filter values."""
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
