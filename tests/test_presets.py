"""Presets: CRUD by admin API and CLI, ``@preset/<slug>`` expanded before the cache and the upstream."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from proxy.app import create_app
from proxy.openapi import OPERATIONS
from tests.feature_support import bearer, chat, log_row, new_token, sent_upstream

PRESET = {"slug": "brief", "model": "openai/gpt-4o-mini", "system_prompt": "Answer in one short sentence.",
          "temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "description": "short answers"}


@pytest.fixture
async def proxy(aiohttp_client, make_settings):
    return await aiohttp_client(create_app(make_settings()))


async def test_preset_crud_round_trip(proxy, admin_headers, redis_sync_client, key_prefix):
    created = await proxy.post("/admin/presets", json=PRESET, headers=admin_headers)
    assert created.status == 201, await created.text()
    body = await created.json()
    assert body["model_alias"] == "@preset/brief" and body["temperature"] == 0.2 and body["max_tokens"] == 64
    stored = redis_sync_client.hgetall(f"{key_prefix}:preset:brief")
    assert stored["model"] == "openai/gpt-4o-mini" and stored["system_prompt"] == PRESET["system_prompt"]

    again = await proxy.post("/admin/presets", json=PRESET, headers=admin_headers)
    assert again.status == 409 and (await again.json())["error"]["param"] == "slug"

    listed = await (await proxy.get("/admin/presets", headers=admin_headers)).json()
    assert [p["slug"] for p in listed["items"]] == ["brief"] and listed["total"] == 1

    patched = await proxy.patch("/admin/presets/brief", json={"temperature": None, "max_tokens": 10},
                                headers=admin_headers)
    assert patched.status == 200
    shown = await (await proxy.get("/admin/presets/brief", headers=admin_headers)).json()
    assert shown["temperature"] is None and shown["max_tokens"] == 10 and shown["top_p"] == 0.9

    assert (await proxy.delete("/admin/presets/brief", headers=admin_headers)).status == 200
    assert (await proxy.get("/admin/presets/brief", headers=admin_headers)).status == 404
    assert (await proxy.delete("/admin/presets/brief", headers=admin_headers)).status == 404
    assert (await proxy.get("/admin/presets")).status == 401


@pytest.mark.parametrize("body, param", [
    ({"slug": "Bad Slug", "model": "openai/gpt-4o-mini"}, "slug"),
    ({"slug": "ok"}, "model"),
    ({"slug": "ok", "model": "@preset/other"}, "model"),
    ({"slug": "ok", "model": "m/x", "temperature": 3}, "temperature"),
    ({"slug": "ok", "model": "m/x", "max_tokens": 0}, "max_tokens"),
    ({"slug": "ok", "model": "m/x", "colour": "red"}, "colour"),
])
async def test_preset_validation_is_400_naming_the_field(proxy, admin_headers, body, param):
    resp = await proxy.post("/admin/presets", json=body, headers=admin_headers)
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == param


async def test_preset_expands_before_forwarding_and_request_fields_win(proxy, admin_headers, fake_upstream):
    await proxy.post("/admin/presets", json=PRESET, headers=admin_headers)
    token = await new_token(proxy, admin_headers)
    resp = await proxy.post("/v1/chat/completions", json=chat("preset-expand-1", "@preset/brief"),
                            headers=bearer(token))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["choices"][0]["message"]["content"] == "Echo from openai/gpt-4o-mini: preset-expand-1"
    sent = (await sent_upstream(fake_upstream, "preset-expand-1"))[-1]["json"]
    assert sent["model"] == "openai/gpt-4o-mini"
    assert sent["messages"] == [{"role": "system", "content": PRESET["system_prompt"]},
                                {"role": "user", "content": "preset-expand-1"}]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.2, 0.9, 64)

    own = {"model": "@preset/brief", "temperature": 0.7, "max_completion_tokens": 5,
           "messages": [{"role": "system", "content": "Mine."}, {"role": "user", "content": "preset-expand-2"}]}
    assert (await proxy.post("/v1/chat/completions", json=own, headers=bearer(token))).status == 200
    sent = (await sent_upstream(fake_upstream, "preset-expand-2"))[-1]["json"]
    assert sent["temperature"] == 0.7 and sent["top_p"] == 0.9
    assert "max_tokens" not in sent and sent["max_completion_tokens"] == 5
    assert [m["content"] for m in sent["messages"]] == ["Mine.", "preset-expand-2"]

    row = await log_row(proxy, admin_headers, resp.headers["X-Request-Id"])
    assert row["model_requested"] == "openai/gpt-4o-mini" and row["routing"]["preset"] == "brief"


async def test_unknown_preset_is_400(proxy, admin_headers, fake_upstream):
    token = await new_token(proxy, admin_headers)
    resp = await proxy.post("/v1/chat/completions", json=chat("preset-missing", "@preset/nope"),
                            headers=bearer(token))
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["code"] == "preset_not_found" and err["param"] == "model" and "nope" in err["message"]
    assert not await sent_upstream(fake_upstream, "preset-missing")


async def _x_cache(proxy, body, token, want: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await proxy.post("/v1/chat/completions", json=body, headers=bearer(token))
        assert resp.status == 200
        if resp.headers["X-Cache"] == want:
            return
        assert asyncio.get_running_loop().time() < deadline, resp.headers["X-Cache"]
        await asyncio.sleep(0.05)


async def test_expanded_preset_and_the_same_request_by_hand_share_a_cache_entry(proxy, admin_headers,
                                                                                fake_upstream):
    await proxy.post("/admin/presets", json=PRESET, headers=admin_headers)
    token = await new_token(proxy, admin_headers, cache_mode="exact")
    first = await proxy.post("/v1/chat/completions", json=chat("preset-cache", "@preset/brief"),
                             headers=bearer(token))
    assert first.headers["X-Cache"] == "MISS"
    by_hand = {"model": "openai/gpt-4o-mini", "temperature": 0.2, "top_p": 0.9, "max_tokens": 64,
               "messages": [{"role": "system", "content": PRESET["system_prompt"]},
                            {"role": "user", "content": "preset-cache"}]}
    await _x_cache(proxy, by_hand, token, "HIT-EXACT")
    await _x_cache(proxy, chat("preset-cache", "@preset/brief"), token, "HIT-EXACT")
    assert len(await sent_upstream(fake_upstream, "preset-cache")) == 1


async def test_preset_cli_round_trip(proxy, admin_headers, redis_url, key_prefix, tmp_path):
    env = {**os.environ, "REDIS_URL": redis_url, "ORCACHE_KEY_PREFIX": key_prefix, "ORCACHE_LOG_FORMAT": "console"}
    env.pop("DATABASE_URL", None)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are a careful reviewer.")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "proxy.cli", "preset", *args, "--data-dir", str(tmp_path / "d")],
                              env=env, capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).parent.parent)

    made = run("create", "review", "--model", "anthropic/claude-sonnet-4", "--system-prompt-file", str(prompt),
               "--temperature", "0.1")
    assert made.returncode == 0, made.stderr
    assert orjson.loads(made.stdout)["system_prompt"] == "You are a careful reviewer."
    assert run("create", "review", "--model", "x/y").returncode == 2
    assert run("update", "review", "--temperature", "none", "--max-tokens", "99").returncode == 0
    shown = await (await proxy.get("/admin/presets/review", headers=admin_headers)).json()
    assert shown["temperature"] is None and shown["max_tokens"] == 99
    assert [p["slug"] for p in orjson.loads(run("list").stdout)] == ["review"]
    assert orjson.loads(run("show", "review").stdout)["model"] == "anthropic/claude-sonnet-4"
    assert run("delete", "review").returncode == 0
    assert run("show", "review").returncode == 1


def test_new_endpoints_are_documented_and_routed(make_settings):
    app = create_app(make_settings())
    routed = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    documented = {(m, p) for m, p, *_ in OPERATIONS}
    mine = {("post", "/admin/presets"), ("get", "/admin/presets"), ("get", "/admin/presets/{slug}"),
            ("patch", "/admin/presets/{slug}"), ("delete", "/admin/presets/{slug}"), ("get", "/api/tokens/me/usage")}
    assert mine <= routed and mine <= documented
