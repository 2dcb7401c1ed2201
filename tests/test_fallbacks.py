"""Model routing: OpenRouter's routing fields pass through, proxy-side retries and fallbacks against the
fake upstream's error modes, and every attempt on the log row."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from cache.canonical import fingerprint
from proxy.app import create_app
from tests.feature_support import bearer, chat, log_row, new_token, sent_upstream
from tests.support import free_port

FALLBACK = "openai/gpt-4o-mini"
ROUTING = {"models": ["openai/gpt-4o-mini", "openai/gpt-4o"], "route": "fallback", "transforms": ["middle-out"],
           "provider": {"order": ["OpenAI"], "allow_fallbacks": False}}


@pytest.fixture
async def proxy(aiohttp_client, make_settings):
    return await aiohttp_client(create_app(make_settings()))


def statuses(row: dict) -> list[tuple[str, int]]:
    return [(a["model"], a["status"]) for a in row["routing"]["attempts"]]


async def test_openrouter_routing_fields_pass_through_and_count_in_the_cache_key(proxy, admin_headers,
                                                                                  fake_upstream):
    token = await new_token(proxy, admin_headers, cache_mode="exact")
    body = {**chat("route-pass"), **ROUTING}
    resp = await proxy.post("/v1/chat/completions", json=body, headers=bearer(token))
    assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    assert (await sent_upstream(fake_upstream, "route-pass"))[-1]["json"] == body
    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    assert row["routing"]["strategy"] == "openrouter" and row["routing"]["models"] == ROUTING["models"]

    for name, value in (("provider", {"order": ["Azure"]}), ("route", None), ("transforms", []),
                        ("models", ["openai/gpt-4o"])):
        other = {**body, name: value}
        assert fingerprint("/v1/chat/completions", other).exact_key != fingerprint("/v1/chat/completions",
                                                                                   body).exact_key
        again = await proxy.post("/v1/chat/completions", json=other, headers=bearer(token))
        assert again.headers["X-Cache"] == "MISS", name


async def test_fallback_after_500_records_every_attempt(proxy, admin_headers, fake_upstream):
    token = await new_token(proxy, admin_headers, fallback_models=FALLBACK)
    assert token["fallback_models"] == [FALLBACK]
    resp = await proxy.post("/v1/chat/completions", json=chat("fb-500", "fake/error-500"), headers=bearer(token))
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    assert data["model"] == FALLBACK and data["choices"][0]["message"]["content"].endswith("fb-500")
    assert [r["json"]["model"] for r in await sent_upstream(fake_upstream, "fb-500")] == [
        "fake/error-500", "fake/error-500", FALLBACK]
    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    routing = row["routing"]
    assert statuses(row) == [("fake/error-500", 500), ("fake/error-500", 500), (FALLBACK, 200)]
    assert routing["strategy"] == "proxy_fallback" and routing["fallback_used"] is True
    assert routing["final_model"] == FALLBACK and routing["models"] == ["fake/error-500", FALLBACK]
    assert all(isinstance(a["ms"], float) for a in routing["attempts"])
    assert routing["attempts"][0]["error"] == "HTTP 500" and routing["attempts"][-1]["error"] is None
    assert row["model_requested"] == "fake/error-500" and row["model"] == FALLBACK and row["status_code"] == 200


async def test_fallback_after_timeout(aiohttp_client, make_settings, admin_headers):
    client = await aiohttp_client(create_app(make_settings(upstream_read_timeout=0.3)))
    token = await new_token(client, admin_headers, fallback_models=FALLBACK)
    resp = await client.post("/v1/chat/completions", json=chat("fb-timeout", "fake/timeout"), headers=bearer(token))
    assert resp.status == 200
    row = await log_row(client, admin_headers, resp.headers["X-Request-Id"])
    assert statuses(row) == [("fake/timeout", 504), ("fake/timeout", 504), (FALLBACK, 200)]
    assert row["routing"]["attempts"][0]["error"] == "The upstream did not answer in time."
    assert row["routing"]["attempts"][0]["ms"] >= 250


async def test_fallback_after_429_waits_for_retry_after(proxy, admin_headers, fake_upstream):
    token = await new_token(proxy, admin_headers)  # the list comes from the request header this time
    started = time.monotonic()
    resp = await proxy.post("/v1/chat/completions", json=chat("fb-429", "fake/error-429"),
                            headers=bearer(token, **{"X-Orcache-Fallback-Models": f"{FALLBACK}, openai/gpt-4o"}))
    elapsed = time.monotonic() - started
    assert resp.status == 200
    assert elapsed >= 1.0, "the retry waited for the upstream's Retry-After: 1"
    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    assert statuses(row) == [("fake/error-429", 429), ("fake/error-429", 429), (FALLBACK, 200)]
    assert row["routing"]["models"] == ["fake/error-429", FALLBACK, "openai/gpt-4o"]
    assert all("x-orcache-fallback-models" not in r["headers"] for r in await sent_upstream(fake_upstream, "fb-429"))


async def test_retry_after_beyond_the_cap_moves_on_at_once(aiohttp_client, make_settings, admin_headers):
    client = await aiohttp_client(create_app(make_settings(fallback_retry_after_cap_seconds=0.5)))
    token = await new_token(client, admin_headers, fallback_models=FALLBACK)
    started = time.monotonic()
    resp = await client.post("/v1/chat/completions", json=chat("fb-cap", "fake/error-429"), headers=bearer(token))
    assert resp.status == 200 and time.monotonic() - started < 0.9
    row = await log_row(client, admin_headers, resp.headers["X-Request-Id"])
    assert statuses(row) == [("fake/error-429", 429), (FALLBACK, 200)]


async def test_no_fallback_once_the_stream_has_started(proxy, admin_headers, fake_upstream):
    token = await new_token(proxy, admin_headers, fallback_models="openai/gpt-4o")
    body = {**chat("fb-midstream"), "stream": True}
    resp = await proxy.post("/v1/chat/completions", json=body,
                            headers=bearer(token, **{"X-Fake-Stream-Error-After": "2"}))
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    raw = (await resp.read()).decode()
    events = [orjson.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
    assert events[0]["choices"] and "error" in events[-1], "partial answer, then the error in-band"
    assert len(await sent_upstream(fake_upstream, "fb-midstream")) == 1, "no second attempt after the first byte"
    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    assert statuses(row) == [(FALLBACK, 200)] and row["routing"]["fallback_used"] is False
    assert row["error"]


async def test_streaming_falls_back_before_the_first_byte(proxy, admin_headers, fake_upstream):
    token = await new_token(proxy, admin_headers, fallback_models=FALLBACK)
    resp = await proxy.post("/v1/chat/completions", json={**chat("fb-stream", "fake/error-503"), "stream": True},
                            headers=bearer(token))
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    raw = (await resp.read()).decode()
    text = "".join(orjson.loads(e[6:])["choices"][0]["delta"].get("content") or ""
                   for e in raw.split("\n\n") if e.startswith("data: {"))
    assert text == f"Echo from {FALLBACK}: fb-stream" and raw.rstrip().endswith("data: [DONE]")
    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    assert statuses(row) == [("fake/error-503", 503), ("fake/error-503", 503), (FALLBACK, 200)]
    assert row["streamed"] and row["completion_tokens"] > 0


async def test_when_every_attempt_fails_the_last_answer_is_returned(proxy, admin_headers):
    token = await new_token(proxy, admin_headers, fallback_models="fake/error-502")
    resp = await proxy.post("/v1/chat/completions", json=chat("fb-all", "fake/error-500"), headers=bearer(token))
    assert resp.status == 502 and "error" in await resp.json()
    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    assert [s for _, s in statuses(row)] == [500, 500, 502, 502]
    assert row["routing"]["fallback_used"] is False and row["routing"]["final_model"] is None


async def test_connection_failures_are_retried_then_502(proxy, admin_headers):
    dead = f"http://127.0.0.1:{free_port()}/api/v1"
    token = await new_token(proxy, admin_headers, fallback_models="openai/gpt-4o", upstream=dead)
    resp = await proxy.post("/v1/chat/completions", json=chat("fb-dead"), headers=bearer(token))
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "upstream_unreachable"
    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    assert [s for _, s in statuses(row)] == [502, 502, 502, 502]


async def test_the_budget_bounds_all_attempts(aiohttp_client, make_settings, admin_headers):
    client = await aiohttp_client(create_app(make_settings(upstream_read_timeout=5.0)))
    token = await new_token(client, admin_headers, fallback_models=FALLBACK, fallback_budget_seconds=0.4)
    started = time.monotonic()
    resp = await client.post("/v1/chat/completions", json=chat("fb-budget", "fake/timeout"), headers=bearer(token))
    assert resp.status == 504 and time.monotonic() - started < 2.0
    row = await log_row(client, admin_headers, resp.headers["X-Request-Id"])
    assert statuses(row) == [("fake/timeout", 504)]


async def test_header_none_turns_fallbacks_off_and_a_bad_header_is_400(proxy, admin_headers):
    token = await new_token(proxy, admin_headers, fallback_models=FALLBACK)
    off = await proxy.post("/v1/chat/completions", json=chat("fb-off", "fake/error-500"),
                           headers=bearer(token, **{"X-Orcache-Fallback-Models": "none"}))
    assert off.status == 500
    bad = await proxy.post("/v1/chat/completions", json=chat("fb-bad"),
                           headers=bearer(token, **{"X-Orcache-Fallback-Models": "not a model"}))
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "X-Orcache-Fallback-Models"


async def test_a_fallback_answer_is_not_cached_as_the_requested_model(proxy, admin_headers):
    token = await new_token(proxy, admin_headers, fallback_models=FALLBACK, cache_mode="exact")
    first = await proxy.post("/v1/chat/completions", json=chat("fb-cache", "fake/error-500"), headers=bearer(token))
    assert first.status == 200 and first.headers["X-Cache"] == "MISS"
    await asyncio.sleep(0.3)
    second = await proxy.post("/v1/chat/completions", json=chat("fb-cache", "fake/error-500"), headers=bearer(token))
    assert second.status == 200 and second.headers["X-Cache"] == "MISS"


@pytest.mark.parametrize("fields, param", [
    ({"fallback_models": "a/b, not valid"}, "fallback_models"),
    ({"fallback_models": ["x/y"] * 9}, "fallback_models"),
    ({"fallback_budget_seconds": 0}, "fallback_budget_seconds"),
])
async def test_fallback_settings_are_validated(proxy, admin_headers, fields, param):
    resp = await proxy.post("/admin/tokens", json={"name": "v", **fields}, headers=admin_headers)
    assert resp.status == 400 and (await resp.json())["error"]["param"] == param
