"""Usage extraction, pricing and record -> row conversion (no database needed)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from logstore.pricing import PricingTable
from logstore.record import CallRecord
from logstore.rows import COLUMNS, record_to_row, row_from_spool_line, row_to_spool_line
from logstore.usage import Usage, extract_usage, merge_stream_usage

MODELS = [
    {"id": "openai/gpt-4o", "canonical_slug": "openai/gpt-4o-2024-08-06",
     "pricing": {"prompt": "0.0000025", "completion": "0.00001", "input_cache_read": "0.00000125",
                 "input_cache_write": "0", "internal_reasoning": "0", "request": "0"}},
    {"id": "anthropic/claude-3.5-sonnet", "canonical_slug": "anthropic/claude-3.5-sonnet-20241022",
     "pricing": {"prompt": "0.000003", "completion": "0.000015", "input_cache_read": "0.0000003",
                 "input_cache_write": "0.00000375"}},
    {"id": "x/reasoner", "pricing": {"prompt": "0.000001", "completion": "0.000002",
                                     "internal_reasoning": "0.000004", "request": "0.01"}},
    {"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}},
]


def row_dict(row: tuple) -> dict:
    return dict(zip(COLUMNS, row))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record(**kw) -> CallRecord:
    base = dict(request_id="r1", created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), method="POST",
                path="/v1/chat/completions", status=200, cache_status="miss", model_requested="openai/gpt-4o")
    base.update(kw)
    return CallRecord(**base)


# --- extraction ----------------------------------------------------------------------------------------

def test_openai_usage_with_details_and_cost():
    u = extract_usage({
        "prompt_tokens": 194, "completion_tokens": 20, "total_tokens": 214, "cost": 0.95,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 7},
    })
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (194, 20, 214)
    assert (u.cached_tokens, u.cache_read_tokens, u.cache_creation_tokens, u.reasoning_tokens) == (64, 64, 0, 7)
    assert u.cost == 0.95 and u.byok_cost is None and u.present


def test_openai_usage_missing_details_keeps_basic_tokens():
    u = extract_usage({"prompt_tokens": 10, "completion_tokens": 5})
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (10, 5, 15)
    assert (u.cached_tokens, u.cache_creation_tokens, u.cache_read_tokens, u.reasoning_tokens) == (0, 0, 0, 0)
    assert u.cost is None


def test_openrouter_byok_cost_comes_from_upstream_inference_cost():
    u = extract_usage({"prompt_tokens": 1, "completion_tokens": 1, "cost": 0.001, "is_byok": True,
                       "cost_details": {"upstream_inference_cost": 0.02}})
    assert u.cost == 0.001 and u.byok_cost == 0.02


def test_stream_final_usage_chunk():
    # the last SSE data line of an OpenAI-style stream with stream_options.include_usage
    chunk = orjson.loads(b'{"id":"gen-1","object":"chat.completion.chunk","choices":[],'
                         b'"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,'
                         b'"prompt_tokens_details":{"cached_tokens":2},"cost":0.0005}}')
    acc = None
    for event in ({"id": "gen-1", "choices": [{"delta": {"content": "hi"}}]}, chunk):
        acc = merge_stream_usage(acc, event)
    u = extract_usage(acc)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens) == (12, 34, 46, 2)
    assert u.cost == 0.0005
    # the chunk itself can be handed over too
    assert extract_usage(chunk) == u


def test_anthropic_usage():
    u = extract_usage({"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 30,
                       "cache_read_input_tokens": 200})
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (100, 50, 150)
    assert (u.cached_tokens, u.cache_read_tokens, u.cache_creation_tokens) == (200, 200, 30)
    assert u.prompt_includes_cache is False and u.uncached_prompt_tokens == 100


def test_anthropic_usage_missing_cache_fields():
    u = extract_usage({"input_tokens": 7, "output_tokens": 3})
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens, u.cache_creation_tokens) == \
        (7, 3, 10, 0, 0)


def test_anthropic_stream_events_merge():
    acc = None
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "usage": {
            "input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 10,
            "cache_creation_input_tokens": 0}}},
        {"type": "content_block_delta", "delta": {"text": "Hello"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}},
    ]
    for e in events:
        acc = merge_stream_usage(acc, e)
    u = extract_usage(acc)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cache_read_tokens) == (25, 15, 40, 10)


def test_responses_api_usage():
    u = extract_usage({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 25,
                       "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 35})
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens, u.reasoning_tokens) == \
        (10, 25, 35, 4, 5)
    assert u.prompt_includes_cache


@pytest.mark.parametrize("value", [None, {}, "junk", {"prompt_tokens": "x", "completion_tokens": None}])
def test_absent_or_junk_usage_is_zero(value):
    u = extract_usage(value)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (0, 0, 0)


# --- pricing -----------------------------------------------------------------------------------------

def test_cost_from_pricing_openai_shape_bills_cached_tokens_at_read_price():
    table = PricingTable(MODELS)
    u = extract_usage({"prompt_tokens": 1000, "completion_tokens": 100,
                       "prompt_tokens_details": {"cached_tokens": 400}})
    expected = 600 * 0.0000025 + 400 * 0.00000125 + 100 * 0.00001
    assert table.cost("openai/gpt-4o", u) == pytest.approx(expected)


def test_cost_from_pricing_anthropic_shape_bills_cache_reads_and_writes():
    table = PricingTable(MODELS)
    u = extract_usage({"input_tokens": 100, "output_tokens": 10, "cache_creation_input_tokens": 1000,
                       "cache_read_input_tokens": 2000})
    expected = 100 * 0.000003 + 2000 * 0.0000003 + 1000 * 0.00000375 + 10 * 0.000015
    assert table.cost("anthropic/claude-3.5-sonnet", u) == pytest.approx(expected)


def test_cost_from_pricing_reasoning_and_request_price():
    table = PricingTable(MODELS)
    u = Usage(prompt_tokens=10, completion_tokens=100, reasoning_tokens=60, present=True)
    expected = 10 * 0.000001 + 40 * 0.000002 + 60 * 0.000004 + 0.01
    assert table.cost("x/reasoner", u) == pytest.approx(expected)


def test_unknown_model_has_no_price_and_variable_prices_count_as_zero():
    table = PricingTable(MODELS)
    u = Usage(prompt_tokens=10, completion_tokens=10, present=True)
    assert table.cost("nobody/knows", u) is None
    assert table.cost("openrouter/auto", u) == 0.0
    assert table.permaslug("openai/gpt-4o") == "openai/gpt-4o-2024-08-06"
    assert table.permaslug("openai/gpt-4o-2024-08-06") == "openai/gpt-4o-2024-08-06"  # served name
    assert table.cost("openai/gpt-4o:floor", u) == table.cost("openai/gpt-4o", u)


@pytest.mark.asyncio(loop_scope="session")
async def test_pricing_refresh_reads_upstream_models_with_the_api_key():
    seen = {}

    async def models(request: web.Request) -> web.Response:
        seen["auth"] = request.headers.get("Authorization")
        return web.json_response({"data": MODELS})

    app = web.Application()
    app.router.add_get("/api/v1/models", models)
    async with TestServer(app, host="127.0.0.1") as server:
        import aiohttp

        table = PricingTable()
        async with aiohttp.ClientSession() as session:
            n = await table.refresh(session, str(server.make_url("/api/v1")), "sk-or-secret")
    assert n == len(MODELS) and seen["auth"] == "Bearer sk-or-secret"
    assert table.get("openai/gpt-4o").completion == 0.00001


# --- rows --------------------------------------------------------------------------------------------

def test_row_cost_comes_from_pricing_when_usage_has_none():
    table = PricingTable(MODELS)
    row = row_dict(record_to_row(record(usage={"prompt_tokens": 100, "completion_tokens": 10},
                                        response_model="openai/gpt-4o"), pricing=table))
    assert row["cost"] == pytest.approx(100 * 0.0000025 + 10 * 0.00001)
    assert row["model"] == "openai/gpt-4o" and row["model_permaslug"] == "openai/gpt-4o-2024-08-06"
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (100, 10, 110)


def test_row_keeps_upstream_cost_over_pricing():
    row = row_dict(record_to_row(record(usage={"prompt_tokens": 100, "completion_tokens": 10, "cost": 0.5}),
                                 pricing=PricingTable(MODELS)))
    assert row["cost"] == 0.5


def test_row_for_cache_hit_costs_nothing_and_records_savings():
    table = PricingTable(MODELS)
    hit = record(cache_status="semantic", similarity=0.93, usage={"prompt_tokens": 100, "completion_tokens": 10},
                 saved_usage={"prompt_tokens": 100, "completion_tokens": 10})
    row = row_dict(record_to_row(hit, pricing=table))
    assert row["cost"] == 0.0 and row["prompt_tokens"] == 0 and row["total_tokens"] == 0
    assert row["saved_cost"] == pytest.approx(100 * 0.0000025 + 10 * 0.00001)
    assert (row["saved_prompt_tokens"], row["saved_completion_tokens"]) == (100, 10)
    assert row["similarity"] == 0.93
    explicit = row_dict(record_to_row(record(cache_status="exact", saved_cost=0.25,
                                             saved_usage={"prompt_tokens": 5, "completion_tokens": 5})))
    assert explicit["saved_cost"] == 0.25 and explicit["cost"] == 0.0


def test_row_prompt_hashes_preview_and_bodies():
    request_json = {"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {}}]},
    ]}
    rec = record(request_json=request_json, response_preview="x" * 500)
    row = row_dict(record_to_row(rec, preview_chars=50))
    assert row["system_prompt_hash"] == sha("Be brief.")
    assert row["user_prompt_hash"] == sha("second")
    assert row["response_preview"] == "x" * 50
    assert row["request_body"] is None and row["response_body"] is None
    full = row_dict(record_to_row(rec, preview_chars=50, store_bodies=True))
    assert orjson.loads(orjson.dumps(full["request_body"])) == request_json
    assert full["response_body"] == "x" * 500
    anthropic = row_dict(record_to_row(record(request_json={"system": [{"type": "text", "text": "S"}],
                                                            "messages": [{"role": "user", "content": "U"}]})))
    assert (anthropic["system_prompt_hash"], anthropic["user_prompt_hash"]) == (sha("S"), sha("U"))
    none = row_dict(record_to_row(record(request_json=None)))
    assert none["system_prompt_hash"] is None and none["user_prompt_hash"] is None


def test_row_tags_metadata_and_status():
    rec = record(status=502, error="upstream went away\x00", tags={
        "project_id": "p1", "X-Orcache-Agent-Type": "planner", "iteration": "3", "run_id": "run-1",
    }, metadata={"k": "v\x00w"}, attempts=[{"model": "a", "status": 502}])
    row = row_dict(record_to_row(rec))
    assert row["success"] is False and row["status_code"] == 502 and row["error"] == "upstream went away"
    assert (row["project_id"], row["agent_type"], row["iteration"], row["run_id"]) == ("p1", "planner", 3, "run-1")
    assert orjson.loads(orjson.dumps(row["metadata"])) == {"k": "vw"}
    assert orjson.loads(orjson.dumps(row["routing"])) == [{"model": "a", "status": 502}]
    assert row["cost"] == 0.0  # failed, nothing billed
    odd = row_dict(record_to_row(record(cache_status="weird", tags={"iteration": "x"}, status=200)))
    assert odd["cache_status"] == "bypass" and odd["iteration"] is None and odd["success"] is True


def test_spool_line_round_trip():
    rec = record(usage={"prompt_tokens": 1, "completion_tokens": 2}, metadata={"a": [1, 2]},
                 request_json={"messages": []}, response_preview="p")
    row = record_to_row(rec, store_bodies=True)
    back = row_from_spool_line(row_to_spool_line(row))
    assert len(back) == len(COLUMNS)
    got, want = row_dict(back), row_dict(row)
    assert got["created_at"] == want["created_at"]
    for name in COLUMNS:
        assert orjson.dumps(got[name]) == orjson.dumps(want[name]), name
