"""Provider prompt caching: client breakpoints pass through, automatic breakpoints only where they help,
and provider prompt-cache savings reported apart from the response cache's."""

from __future__ import annotations

import asyncio
import copy

import orjson
import pytest

from cache.canonical import fingerprint
from proxy.app import create_app
from proxy.breakpoints import add_system_breakpoint
from proxy.keys import PRICING
from tests.feature_support import bearer, log_row, new_token, sent_upstream

LONG = "You are a meticulous assistant. " * 10  # 320 characters
EPHEMERAL = {"type": "ephemeral"}


@pytest.fixture
async def proxy(aiohttp_client, make_settings):
    return await aiohttp_client(create_app(make_settings()))


def request_with_system(marker: str, model: str, system: object = LONG) -> dict:
    return {"model": model, "messages": [{"role": "system", "content": system},
                                         {"role": "user", "content": marker}]}


async def test_client_cache_control_breakpoints_pass_through_unchanged(proxy, admin_headers, fake_upstream):
    for auto in (False, True):
        token = await new_token(proxy, admin_headers, auto_cache_breakpoints=auto, auto_cache_min_chars=10)
        marker = f"bp-client-{auto}"
        body = {"model": "anthropic/claude-sonnet-4", "messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "Rules."},
                {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
            {"role": "user", "content": [{"type": "text", "text": marker, "cache_control": EPHEMERAL}]}]}
        resp = await proxy.post("/v1/chat/completions", json=body, headers=bearer(token))
        assert resp.status == 200
        assert (await sent_upstream(fake_upstream, marker))[-1]["json"] == body


@pytest.mark.parametrize("model", ["anthropic/claude-sonnet-4", "google/gemini-2.5-flash"])
async def test_long_system_prompt_gets_a_breakpoint_for_supported_models(proxy, admin_headers, fake_upstream, model):
    token = await new_token(proxy, admin_headers, auto_cache_breakpoints=True, auto_cache_min_chars=300)
    marker = f"bp-auto-{model}"
    resp = await proxy.post("/v1/chat/completions", json=request_with_system(marker, model), headers=bearer(token))
    assert resp.status == 200
    sent = (await sent_upstream(fake_upstream, marker))[-1]["json"]
    assert sent["messages"][0] == {"role": "system",
                                   "content": [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]}
    assert sent["messages"][1] == {"role": "user", "content": marker}
    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    assert row["routing"]["auto_cache_breakpoint"] == "system"


async def test_breakpoint_goes_on_the_last_text_part_of_the_last_leading_system_message(proxy, admin_headers,
                                                                                        fake_upstream):
    token = await new_token(proxy, admin_headers, auto_cache_breakpoints=True, auto_cache_min_chars=300)
    body = {"model": "anthropic/claude-3.5-sonnet", "messages": [
        {"role": "system", "content": "Part one. " * 20},
        {"role": "developer", "content": [{"type": "text", "text": "Part two. " * 20},
                                          {"type": "text", "text": "End."}]},
        {"role": "user", "content": "bp-parts"}]}
    assert (await proxy.post("/v1/chat/completions", json=body, headers=bearer(token))).status == 200
    sent = (await sent_upstream(fake_upstream, "bp-parts"))[-1]["json"]
    expected = copy.deepcopy(body)
    expected["messages"][1]["content"][1]["cache_control"] = EPHEMERAL
    assert sent == expected


@pytest.mark.parametrize("case", ["unsupported_model", "short_prompt", "setting_off", "no_system"])
async def test_other_requests_are_forwarded_byte_identical(proxy, admin_headers, fake_upstream, case):
    auto = case != "setting_off"
    token = await new_token(proxy, admin_headers, auto_cache_breakpoints=auto, auto_cache_min_chars=300)
    marker = f"bp-same-{case}"
    model = "openai/gpt-4o-mini" if case == "unsupported_model" else "anthropic/claude-sonnet-4"
    body = request_with_system(marker, model, "Short." if case == "short_prompt" else LONG)
    if case == "no_system":
        body["messages"] = body["messages"][1:]
    raw = orjson.dumps(body, option=orjson.OPT_INDENT_2)  # an unusual layout shows any re-serialisation
    resp = await proxy.post("/v1/chat/completions", data=raw,
                            headers=bearer(token, **{"Content-Type": "application/json"}))
    assert resp.status == 200
    got = (await sent_upstream(fake_upstream, marker))[-1]
    assert got["json"] == body and int(got["headers"]["content-length"]) == len(raw)


def test_breakpoints_do_not_change_the_response_cache_key():
    body = request_with_system("same key?", "anthropic/claude-sonnet-4")
    before = fingerprint("/v1/chat/completions", copy.deepcopy(body))
    assert add_system_breakpoint(body, "chat/completions", 100)
    after = fingerprint("/v1/chat/completions", body)
    assert before is not None and after is not None and before.exact_key == after.exact_key


async def _until(predicate, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)


async def test_provider_prompt_cache_savings_are_reported_apart(proxy, admin_headers):
    token = await new_token(proxy, admin_headers)
    body = request_with_system("bp-savings", "anthropic/claude-3.5-sonnet")
    resp = await proxy.post("/v1/chat/completions", json=body, headers=bearer(token, **{"X-Fake-Cached-Tokens": "50"}))
    assert resp.status == 200
    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    assert row["cache_read_tokens"] == 50

    async def stats():
        if not len(proxy.app[PRICING]):  # the pricing table loads from the fake's /models in the background
            return None
        r = await proxy.get("/admin/analytics/cache", params={"token_id": token["id"]}, headers=admin_headers)
        data = await r.json()
        return data if data["provider_prompt_cache"]["cache_read_tokens"] == 50 else None

    data = await _until(stats)
    provider = data["provider_prompt_cache"]
    # claude-3.5-sonnet in the fake catalogue: prompt $3/M, cache read $0.30/M
    assert provider["savings"] == pytest.approx(50 * (0.000003 - 0.0000003))
    assert provider["by_model"][0]["model"] == "anthropic/claude-3.5-sonnet" and provider["by_model"][0]["priced"]
    assert data["saved_cost"] == 0  # the response cache saved nothing: reported separately
    mine = await (await proxy.get("/api/tokens/cache-stats", headers=bearer(token))).json()
    assert mine["provider_prompt_cache"]["savings"] == pytest.approx(provider["savings"])
