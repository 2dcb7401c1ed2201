"""The fake OpenRouter upstream behaves like OpenRouter, deterministically, and injects the faults it promises."""

from __future__ import annotations

import asyncio
import base64
import struct
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient

from scripts.fake_openrouter import (
    FAKE_STATE,
    MODELS,
    compute_cost,
    count_tokens,
    create_fake_app,
    start_fake_upstream,
)

# aiohttp_client is created in the session loop (asyncio_default_fixture_loop_scope), so tests run there too.
pytestmark = pytest.mark.asyncio(loop_scope="session")

AUTH = {"Authorization": "Bearer sk-or-test"}
CHAT = "/api/v1/chat/completions"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_fake_app())


def chat_body(text: Any = "hello there world", model: str = "openai/gpt-4o-mini", **params: Any) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **params}


async def post_chat(client: TestClient, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    resp = await client.post(CHAT, json=body, headers={**AUTH, **(headers or {})})
    return resp.status, await resp.json()


async def read_sse(resp: aiohttp.ClientResponse) -> tuple[list[bytes], list[dict], bool]:
    """(raw lines, parsed data chunks, saw [DONE])."""
    lines, chunks, done = [], [], False
    async for line in resp.content:
        lines.append(line)
        if line.startswith(b"data: "):
            payload = line[6:].strip()
            if payload == b"[DONE]":
                done = True
            else:
                chunks.append(orjson.loads(payload))
    return lines, chunks, done


def pricing(model_id: str) -> dict[str, str]:
    return next(m["pricing"] for m in MODELS if m["id"] == model_id)


# --- chat content --------------------------------------------------------------------------------------


async def test_chat_answer_is_a_deterministic_echo_of_the_last_user_message(client: TestClient) -> None:
    body = {"model": "openai/gpt-4o-mini", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "question"}]},
    ]}
    resp = await client.post(CHAT, json=body, headers=AUTH)
    first = await resp.json()
    _, second = await post_chat(client, body)

    assert resp.status == 200
    assert resp.headers["x-generation-id"] == first["id"]
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(resp.headers)
    assert first["id"].startswith("gen-") and first["id"] != second["id"]
    assert first["object"] == "chat.completion"
    assert first["model"] == "openai/gpt-4o-mini"
    assert first["provider"] == "OpenAI"
    assert first["system_fingerprint"]
    choice = first["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Echo from openai/gpt-4o-mini: second question",
                                 "refusal": None, "reasoning": None}
    assert choice["finish_reason"] == choice["native_finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert second["choices"] == first["choices"] and second["usage"] == first["usage"]


async def test_usage_counts_tokens_and_prices_them_from_the_models_catalogue(client: TestClient) -> None:
    status, out = await post_chat(client, chat_body("one two three four five six", model="openai/gpt-4o"))
    models = await (await client.get("/api/v1/models")).json()
    price = next(m["pricing"] for m in models["data"] if m["id"] == "openai/gpt-4o")

    usage = out["usage"]
    assert status == 200
    assert usage["prompt_tokens"] == count_tokens("one two three four five six") == 8
    assert usage["completion_tokens"] == count_tokens(out["choices"][0]["message"]["content"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    expected = (usage["prompt_tokens"] * Decimal(price["prompt"])
                + usage["completion_tokens"] * Decimal(price["completion"]))
    assert usage["cost"] == pytest.approx(float(expected), rel=1e-9)
    assert usage["is_byok"] is False
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert "upstream_inference_cost" in usage["cost_details"]


async def test_openrouter_auto_is_served_by_a_concrete_model(client: TestClient) -> None:
    _, out = await post_chat(client, chat_body(model="openrouter/auto"))
    assert out["model"] == "openai/gpt-4o-mini"


async def test_unknown_models_are_answered_for_free(client: TestClient) -> None:
    status, out = await post_chat(client, chat_body(model="bench/anything-goes"))
    assert status == 200
    assert out["choices"][0]["message"]["content"] == "Echo from bench/anything-goes: hello there world"
    assert out["provider"] == "FakeProvider"
    assert out["usage"]["cost"] == 0


async def test_n_gives_n_choices_and_small_max_tokens_truncates(client: TestClient) -> None:
    _, many = await post_chat(client, chat_body(n=3))
    _, short = await post_chat(client, chat_body("a long question with many words in it", max_tokens=3))

    assert [c["index"] for c in many["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in many["choices"]}) == 3
    assert many["usage"]["completion_tokens"] == sum(count_tokens(c["message"]["content"]) for c in many["choices"])
    choice = short["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "Echo from"
    assert short["usage"]["completion_tokens"] <= 3


async def test_invalid_requests_get_400(client: TestClient) -> None:
    assert (await post_chat(client, {"model": "fake/echo", "messages": []}))[0] == 400
    assert (await post_chat(client, {"messages": [{"role": "user", "content": "hi"}]}))[0] == 400
    resp = await client.post(CHAT, data=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert "message" in (await resp.json())["error"]


# --- usage formats -------------------------------------------------------------------------------------


async def test_cached_tokens_header_is_reported_and_discounted(client: TestClient) -> None:
    body = chat_body("one two three four five six", model="anthropic/claude-3.5-sonnet")
    _, plain = await post_chat(client, body)
    _, cached = await post_chat(client, body, {"X-Fake-Cached-Tokens": "6"})

    usage = cached["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 6
    assert usage["cost"] < plain["usage"]["cost"]
    assert usage["cost"] == pytest.approx(
        compute_cost("anthropic/claude-3.5-sonnet", usage["prompt_tokens"], usage["completion_tokens"], 6))
    p = pricing("anthropic/claude-3.5-sonnet")
    expected = (2 * Decimal(p["prompt"]) + 6 * Decimal(p["input_cache_read"])
                + usage["completion_tokens"] * Decimal(p["completion"]))
    assert usage["cost"] == pytest.approx(float(expected), rel=1e-9)


async def test_anthropic_usage_format(client: TestClient) -> None:
    _, out = await post_chat(client, chat_body("one two three four five six"),
                             {"X-Fake-Usage-Format": "anthropic", "X-Fake-Cached-Tokens": "3"})
    usage = out["usage"]
    assert {"input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"} <= set(usage)
    assert "total_tokens" not in usage and "prompt_tokens" not in usage
    assert usage["cache_read_input_tokens"] == 3
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == count_tokens("one two three four five six")


async def test_no_cost_header_omits_cost(client: TestClient) -> None:
    _, out = await post_chat(client, chat_body(), {"X-Fake-No-Cost": "1"})
    assert "cost" not in out["usage"] and "cost_details" not in out["usage"]
    assert out["usage"]["total_tokens"] > 0


# --- streaming -----------------------------------------------------------------------------------------


async def test_stream_sends_openrouter_sse_without_usage_unless_asked(client: TestClient) -> None:
    text = "please repeat this fairly long sentence back to me"
    _, plain = await post_chat(client, chat_body(text))
    resp = await client.post(CHAT, json=chat_body(text, stream=True), headers=AUTH)
    lines, chunks, done = await read_sse(resp)

    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert lines[0] == b": OPENROUTER PROCESSING\n"
    assert done and lines[-2] == b"data: [DONE]\n"
    assert len(chunks) > 3
    assert {(c["id"], c["created"], c["model"], c["provider"]) for c in chunks} == {
        (resp.headers["x-generation-id"], chunks[0]["created"], "openai/gpt-4o-mini", "OpenAI")}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == \
        plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


async def test_stream_include_usage_adds_a_final_usage_chunk(client: TestClient) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    _, chunks, done = await read_sse(await client.post(CHAT, json=body, headers=AUTH))

    assert done
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == 4 and usage["completion_tokens"] > 0 and usage["cost"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_stream_usage_chunk_follows_usage_headers(client: TestClient) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    headers = {**AUTH, "X-Fake-Usage-Format": "anthropic", "X-Fake-No-Cost": "1", "X-Fake-No-Comment": "1"}
    lines, chunks, _ = await read_sse(await client.post(CHAT, json=body, headers=headers))
    assert lines[0].startswith(b"data: ")
    assert set(chunks[-1]["usage"]) == {"input_tokens", "output_tokens", "cache_creation_input_tokens",
                                        "cache_read_input_tokens"}


async def test_stream_chunks_are_delivered_incrementally(client: TestClient) -> None:
    body = chat_body("one two three four five six seven eight nine ten", stream=True)
    resp = await client.post(CHAT, json=body, headers={**AUTH, "X-Fake-Chunk-Delay-Ms": "60"})
    arrivals = []
    async for line in resp.content:
        if line.startswith(b"data: "):
            arrivals.append(time.monotonic())
    # Six chunks before [DONE]: the first arrived long before the stream ended.
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] >= 0.06 * (len(arrivals) - 2) * 0.8


async def test_stream_error_after_drops_the_connection(client: TestClient) -> None:
    body = chat_body("one two three four five six seven eight nine ten", stream=True)
    resp = await client.post(CHAT, json=body, headers={**AUTH, "X-Fake-Stream-Error-After": "2"})
    data = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async for line in resp.content:
            if line.startswith(b"data: "):
                data.append(line)
    assert len(data) == 2
    assert all(b"[DONE]" not in line for line in data)


# --- tools and reasoning -------------------------------------------------------------------------------


async def test_tool_call_when_asked_to_use_the_tool(client: TestClient) -> None:
    _, out = await post_chat(client, chat_body("Please use the tool for Paris", tools=[WEATHER_TOOL]))
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {
        "city": "Please use the tool for Paris", "days": 1, "unit": "celsius"}


async def test_tool_choice_required_or_named_forces_a_call_and_none_prevents_it(client: TestClient) -> None:
    other = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    tools = [WEATHER_TOOL, other]
    _, required = await post_chat(client, chat_body(tools=tools, tool_choice="required"))
    _, named = await post_chat(client, chat_body(
        tools=tools, tool_choice={"type": "function", "function": {"name": "lookup"}}))
    _, auto = await post_chat(client, chat_body(tools=tools))
    _, none = await post_chat(client, chat_body("use the tool", tools=tools, tool_choice="none"))

    assert required["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert named["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert auto["choices"][0]["finish_reason"] == none["choices"][0]["finish_reason"] == "stop"


async def test_tool_result_is_answered_in_text(client: TestClient) -> None:
    _, first = await post_chat(client, chat_body("use the tool", tools=[WEATHER_TOOL]))
    call = first["choices"][0]["message"]["tool_calls"][0]
    body = {"model": "openai/gpt-4o-mini", "tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "use the tool"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]}
    _, out = await post_chat(client, body)
    assert out["choices"][0]["message"]["content"] == "Echo from openai/gpt-4o-mini: tool said sunny"


async def test_streamed_tool_call_deltas_reassemble(client: TestClient) -> None:
    _, plain = await post_chat(client, chat_body("use the tool", tools=[WEATHER_TOOL]))
    body = chat_body("use the tool", tools=[WEATHER_TOOL], stream=True)
    _, chunks, done = await read_sse(await client.post(CHAT, json=body, headers=AUTH))

    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert done and all(tc["index"] == 0 for tc in calls)
    assert calls[0]["id"] and calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(tc["function"]["arguments"] for tc in calls)
    assert arguments == plain["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert len(calls) > 2
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_reasoning_by_request_or_by_model(client: TestClient) -> None:
    _, asked = await post_chat(client, chat_body(reasoning={"effort": "high"}))
    _, by_model = await post_chat(client, chat_body(model="deepseek/deepseek-r1"))
    _, by_name = await post_chat(client, chat_body(model="acme/big-thinking"))
    _, hidden = await post_chat(client, chat_body(model="deepseek/deepseek-r1", reasoning={"exclude": True}))
    _, plain = await post_chat(client, chat_body())

    for out in (asked, by_model, by_name):
        assert out["choices"][0]["message"]["reasoning"]
        assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    assert hidden["choices"][0]["message"]["reasoning"] is None
    assert hidden["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    assert plain["choices"][0]["message"]["reasoning"] is None
    assert plain["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_streamed_reasoning_comes_before_content(client: TestClient) -> None:
    _, plain = await post_chat(client, chat_body(model="deepseek/deepseek-r1"))
    body = chat_body(model="deepseek/deepseek-r1", stream=True)
    _, chunks, _ = await read_sse(await client.post(CHAT, json=body, headers=AUTH))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    reasoning = "".join(d.get("reasoning") or "" for d in deltas)
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert reasoning == plain["choices"][0]["message"]["reasoning"]
    assert all(not d.get("reasoning") for d in deltas[first_content:])


# --- faults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "model", "status"), [
    ({"X-Fake-Status": "429"}, "openai/gpt-4o-mini", 429),
    ({"X-Fake-Status": "500"}, "openai/gpt-4o-mini", 500),
    ({"X-Fake-Status": "502"}, "openai/gpt-4o-mini", 502),
    ({"X-Fake-Status": "503"}, "openai/gpt-4o-mini", 503),
    ({"X-Fake-Status": "400"}, "openai/gpt-4o-mini", 400),
    ({}, "fake/error-429", 429),
    ({}, "fake/error-500", 500),
    ({}, "fake/error-502", 502),
    ({"X-Fake-Status": "503"}, "fake/error-429", 503),
])
async def test_injected_status_returns_openrouter_error(client: TestClient, headers: dict, model: str,
                                                        status: int) -> None:
    resp = await client.post(CHAT, json=chat_body(model=model), headers={**AUTH, **headers})
    body = await resp.json()
    assert resp.status == status
    assert body["error"]["code"] == status
    assert body["error"]["message"]
    assert "provider_name" in body["error"]["metadata"]
    assert "x-generation-id" in resp.headers
    if status == 429:
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["X-RateLimit-Remaining"] == "0"


async def test_latency_header_delays_the_answer(client: TestClient) -> None:
    start = time.monotonic()
    status, _ = await post_chat(client, chat_body(), {"X-Fake-Latency-Ms": "200"})
    assert status == 200
    assert time.monotonic() - start >= 0.19


async def test_app_level_latency(aiohttp_client: Any) -> None:
    slow = await aiohttp_client(create_fake_app(latency_ms=150))
    start = time.monotonic()
    status, _ = await post_chat(slow, chat_body())
    assert status == 200 and time.monotonic() - start >= 0.14


@pytest.mark.parametrize(("headers", "model"), [({"X-Fake-Timeout": "1"}, "fake/echo"), ({}, "fake/timeout")])
async def test_timeout_never_answers_in_time(client: TestClient, headers: dict, model: str) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await client.post(CHAT, json=chat_body(model=model), headers={**AUTH, **headers},
                          timeout=aiohttp.ClientTimeout(total=0.3))


async def test_timeout_header_zero_overrides_the_model(client: TestClient) -> None:
    status, _ = await post_chat(client, chat_body(model="fake/timeout"), {"X-Fake-Timeout": "0"})
    assert status == 200


@pytest.mark.parametrize(("headers", "model"), [({"X-Fake-Malformed": "1"}, "fake/echo"), ({}, "fake/malformed")])
async def test_malformed_body_is_not_json(client: TestClient, headers: dict, model: str) -> None:
    resp = await client.post(CHAT, json=chat_body(model=model), headers={**AUTH, **headers})
    assert resp.status == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(await resp.read())


# --- auth, routing, catalogue --------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}])
async def test_missing_bearer_token_is_401(client: TestClient, headers: dict) -> None:
    resp = await client.post(CHAT, json=chat_body(), headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == 401


async def test_unknown_path_is_404_json(client: TestClient) -> None:
    resp = await client.get("/api/v1/nope", headers=AUTH)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == 404


async def test_v1_prefix_serves_the_same_api(client: TestClient) -> None:
    resp = await client.post("/v1/chat/completions", json=chat_body(), headers=AUTH)
    assert resp.status == 200


async def test_models_catalogue_has_openrouter_pricing(client: TestClient) -> None:
    resp = await client.get("/api/v1/models")
    data = {m["id"]: m for m in (await resp.json())["data"]}

    assert resp.status == 200
    assert {"openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-3.5-sonnet", "anthropic/claude-sonnet-4",
            "google/gemini-2.5-flash", "meta-llama/llama-3.1-8b-instruct", "deepseek/deepseek-r1",
            "fake/echo"} <= set(data)
    assert data["openai/gpt-4o-mini"]["canonical_slug"] == "openai/gpt-4o-mini-2024-07-18"
    price_keys = {"prompt", "completion", "request", "image", "web_search", "internal_reasoning",
                  "input_cache_read", "input_cache_write"}
    for model in data.values():
        assert set(model["pricing"]) == price_keys
        assert all(isinstance(v, str) and Decimal(v) >= 0 for v in model["pricing"].values())
        assert {"context_length", "top_provider", "architecture", "supported_parameters"} <= set(model)
    assert all(Decimal(v) == 0 for v in data["fake/echo"]["pricing"].values())
    assert "reasoning" in data["deepseek/deepseek-r1"]["supported_parameters"]


async def test_generation_record_matches_the_completion(client: TestClient) -> None:
    _, out = await post_chat(client, chat_body("one two three four five six", model="openai/gpt-4o"),
                             {"X-Fake-Cached-Tokens": "4"})
    resp = await client.get("/api/v1/generation", params={"id": out["id"]}, headers=AUTH)
    record = (await resp.json())["data"]
    missing = await client.get("/api/v1/generation", params={"id": "gen-nope"}, headers=AUTH)

    assert resp.status == 200
    assert record["id"] == out["id"] and record["model"] == "openai/gpt-4o"
    assert record["provider_name"] == "OpenAI"
    assert record["tokens_prompt"] == out["usage"]["prompt_tokens"]
    assert record["tokens_completion"] == out["usage"]["completion_tokens"]
    assert record["native_tokens_cached"] == 4
    assert record["total_cost"] == pytest.approx(out["usage"]["cost"])
    assert record["cache_discount"] > 0
    assert {"byok_usage_inference", "endpoint_id", "streamed"} <= set(record)
    assert missing.status == 404


# --- other endpoints -----------------------------------------------------------------------------------


async def test_embeddings_are_deterministic_normalised_and_sized(client: TestClient) -> None:
    body = {"model": "openai/text-embedding-3-small", "input": ["the cat sat on the mat", "the cat sat on a mat",
                                                                 "quarterly revenue grew strongly"]}
    resp = await client.post("/api/v1/embeddings", json=body, headers=AUTH)
    out = await resp.json()
    again = await (await client.post("/api/v1/embeddings", json=body, headers=AUTH)).json()
    small = await (await client.post("/api/v1/embeddings", json={**body, "dimensions": 64}, headers=AUTH)).json()
    packed = await (await client.post("/api/v1/embeddings", json={**body, "encoding_format": "base64"},
                                      headers=AUTH)).json()

    vecs = [d["embedding"] for d in out["data"]]
    assert resp.status == 200 and out["object"] == "list"
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    assert all(len(v) == 384 for v in vecs)
    assert all(abs(sum(x * x for x in v) - 1) < 1e-9 for v in vecs)
    assert [d["embedding"] for d in again["data"]] == vecs
    assert len(small["data"][0]["embedding"]) == 64

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    decoded = struct.unpack("<384f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(vecs[0], abs=1e-6)
    assert out["usage"]["prompt_tokens"] == out["usage"]["total_tokens"] > 0
    assert out["usage"]["cost"] > 0


async def test_legacy_completions(client: TestClient) -> None:
    resp = await client.post("/api/v1/completions", json={"model": "fake/echo", "prompt": "say hi"}, headers=AUTH)
    out = await resp.json()
    assert out["object"] == "text_completion"
    assert out["choices"][0]["text"] == "Echo from fake/echo: say hi"
    assert out["usage"]["prompt_tokens"] == count_tokens("say hi")


async def test_responses_api_minimal_shape(client: TestClient) -> None:
    body = {"model": "openai/gpt-4o-mini", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "hello responses"}]}]}
    resp = await client.post("/api/v1/responses", json=body, headers=AUTH)
    out = await resp.json()
    assert resp.status == 200
    assert out["object"] == "response" and out["status"] == "completed"
    assert out["output"][-1]["content"][0]["text"] == "Echo from openai/gpt-4o-mini: hello responses"
    assert out["usage"]["total_tokens"] == out["usage"]["input_tokens"] + out["usage"]["output_tokens"]


# --- recording -----------------------------------------------------------------------------------------


async def test_requests_are_recorded_counted_and_reset(client: TestClient) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    await read_sse(await client.post(CHAT, json=body, headers={**AUTH, "HTTP-Referer": "https://x.test",
                                                               "X-Title": "orcache"}))
    await client.get("/api/v1/models")

    recorded = await (await client.get("/_fake/requests")).json()
    stats = await (await client.get("/_fake/stats")).json()
    first = recorded[0]
    assert [r["path"] for r in recorded] == [CHAT, "/api/v1/models"]
    assert first["method"] == "POST"
    assert first["headers"]["authorization"] == "Bearer sk-or-test"
    assert first["headers"]["http-referer"] == "https://x.test"
    assert first["headers"]["x-title"] == "orcache"
    assert first["json"]["stream_options"] == {"include_usage": True}
    assert stats["by_path"] == {CHAT: 1, "/api/v1/models": 1} and stats["total"] == 2
    assert client.app is not None and len(client.app[FAKE_STATE].requests) == 2

    assert (await client.post("/_fake/reset")).status == 200
    assert await (await client.get("/_fake/requests")).json() == []
    assert (await (await client.get("/_fake/stats")).json())["total"] == 0


async def test_recording_is_bounded(aiohttp_client: Any) -> None:
    small = await aiohttp_client(create_fake_app(max_recorded=3))
    for _ in range(5):
        await small.get("/api/v1/models")
    assert len(await (await small.get("/_fake/requests")).json()) == 3


# --- real port, real SDK, real CLI ---------------------------------------------------------------------


@pytest.fixture
async def upstream_url() -> Any:
    runner, url = await start_fake_upstream()
    yield url
    await runner.cleanup()


async def test_openai_sdk_streaming_and_non_streaming(upstream_url: str) -> None:
    assert upstream_url.startswith("http://127.0.0.1:") and upstream_url.endswith("/api/v1")
    sdk = openai.AsyncOpenAI(base_url=upstream_url, api_key="x", max_retries=0)
    try:
        messages = [{"role": "user", "content": "hello from the sdk"}]
        done = await sdk.chat.completions.create(model="anthropic/claude-sonnet-4", messages=messages)
        stream = await sdk.chat.completions.create(model="anthropic/claude-sonnet-4", messages=messages,
                                                   stream=True, stream_options={"include_usage": True})
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if chunk.usage:
                usage = chunk.usage
        emb = await sdk.embeddings.create(model="openai/text-embedding-3-small", input="hello")
        events = [e async for e in await sdk.responses.create(model="fake/echo", input="hi", stream=True)]
        with pytest.raises(openai.RateLimitError):
            await sdk.chat.completions.create(model="fake/error-429", messages=messages)
    finally:
        await sdk.close()

    content = "Echo from anthropic/claude-sonnet-4: hello from the sdk"
    assert done.choices[0].message.content == content
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.total_tokens > 0
    assert "".join(parts) == content
    assert usage is not None and usage.completion_tokens == done.usage.completion_tokens
    assert len(emb.data[0].embedding) == 384
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Echo from fake/echo: hi"
    assert events[-1].type == "response.completed"


async def test_cli_prints_its_url_and_serves() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scripts.fake_openrouter", "--host", "127.0.0.1", "--port", "0",
        stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("fake OpenRouter listening on http://127.0.0.1:") and line.endswith("/api/v1")
        async with aiohttp.ClientSession() as session, session.get(line.rsplit(" ", 1)[1] + "/models") as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
