"""Per-token quotas and rate limits in Redis: settings, 429s with headers, windows that reset, exact limits
across two real worker processes, and the token holder's usage endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.app import create_app
from proxy.keys import QUOTAS
from tests.conftest import ADMIN_TOKEN
from tests.feature_support import CHAT, bearer, chat, new_token
from tests.support import free_port, http

MINUTE = 1_900_000_040.0  # 2030-03-17T17:47:20Z: 20 s into a UTC minute


@pytest.fixture
async def proxy(aiohttp_client, make_settings):
    return await aiohttp_client(create_app(make_settings()))


def at(client, ts: float) -> None:
    client.app[QUOTAS].clock = lambda: ts


async def post(client, token, body=CHAT, **headers):
    return await client.post("/v1/chat/completions", json=body, headers=bearer(token, **headers))


@pytest.mark.parametrize("fields, param", [
    ({"rpm": -1}, "rpm"),
    ({"tpm": 1.5}, "tpm"),
    ({"requests_per_month": "10"}, "requests_per_month"),
    ({"cost_per_month": True}, "cost_per_month"),
    ({"plan": "gold"}, "plan"),
    ({"auto_cache_breakpoints": "yes"}, "auto_cache_breakpoints"),
])
async def test_quota_settings_are_validated(proxy, admin_headers, fields, param):
    token = await new_token(proxy, admin_headers)
    resp = await proxy.patch(f"/admin/tokens/{token['id']}", json=fields, headers=admin_headers)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["param"] == param and param in err["message"]


async def test_quota_settings_round_trip_through_the_api(proxy, admin_headers, redis_sync_client, key_prefix):
    token = await new_token(proxy, admin_headers, plan="Free", rpm=5, cost_per_month=2.5)
    assert (token["plan"], token["rpm"], token["cost_per_month"], token.get("tpm")) == ("free", 5, 2.5, None)
    patched = await (await proxy.patch(f"/admin/tokens/{token['id']}", json={"rpm": None, "tpm": 1000},
                                       headers=admin_headers)).json()
    assert patched["rpm"] is None and patched["tpm"] == 1000
    stored = redis_sync_client.hgetall(f"{key_prefix}:token:{token['id']}")
    assert stored["tpm"] == "1000" and stored["rpm"] == "" and stored["plan"] == "free"


async def test_rpm_limit_429_headers_and_reset(proxy, admin_headers, fake_upstream):
    at(proxy, MINUTE)
    token = await new_token(proxy, admin_headers, rpm=3)
    for remaining in (2, 1, 0):
        resp = await post(proxy, token)
        assert resp.status == 200
        assert resp.headers["X-RateLimit-Limit"] == "3" and resp.headers["X-RateLimit-Remaining"] == str(remaining)
        assert resp.headers["X-RateLimit-Reset"] == str(int((MINUTE // 60 + 1) * 60 * 1000))
        assert resp.headers["X-Orcache-RateLimit-Scope"] == "rpm"
    refused = await post(proxy, token, chat("quota-refused"))
    assert refused.status == 429
    err = (await refused.json())["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded" and err["param"] == "rpm"
    assert "rpm = 3 requests per minute" in err["message"] and "2030-03-17T17:48:00Z (in 40 s)" in err["message"]
    assert refused.headers["Retry-After"] == "40" and refused.headers["X-RateLimit-Remaining"] == "0"
    async with __import__("aiohttp").ClientSession() as s, s.get(fake_upstream.url + "/_fake/requests") as r:
        assert not [x for x in await r.json() if "quota-refused" in str(x.get("json"))], "refused before forwarding"

    at(proxy, MINUTE + 40)  # the next minute
    again = await post(proxy, token)
    assert again.status == 200 and again.headers["X-RateLimit-Remaining"] == "2"


async def test_a_redis_that_forgot_the_script_gets_it_again(proxy, admin_headers, redis_sync_client):
    at(proxy, MINUTE)
    token = await new_token(proxy, admin_headers, rpm=2)
    assert (await post(proxy, token)).status == 200
    redis_sync_client.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    resp = await post(proxy, token)
    assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "0"
    assert (await post(proxy, token)).status == 429
    assert redis_sync_client.script_exists(proxy.app[QUOTAS].sha) == [True]


async def test_monthly_quota_resets_on_the_utc_calendar_month(proxy, admin_headers):
    end_of_january = datetime(2031, 1, 31, 23, 59, 30, tzinfo=UTC).timestamp()
    at(proxy, end_of_january)
    token = await new_token(proxy, admin_headers, requests_per_month=2)
    assert [(await post(proxy, token)).status for _ in range(2)] == [200, 200]
    refused = await post(proxy, token)
    assert refused.status == 429
    err = (await refused.json())["error"]
    assert err["code"] == "quota_exceeded" and err["param"] == "requests_per_month"
    assert "2031-02-01T00:00:00Z" in err["message"] and refused.headers["Retry-After"] == "30"
    assert refused.headers["X-RateLimit-Reset"] == str(int(datetime(2031, 2, 1, tzinfo=UTC).timestamp() * 1000))
    at(proxy, end_of_january + 35)  # February 1st, 00:00:05 UTC
    ok = await post(proxy, token)
    assert ok.status == 200 and ok.headers["X-RateLimit-Remaining"] == "1"


async def _until_refused(client, token, body=CHAT, timeout: float = 10.0, **headers):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await post(client, token, body, **headers)
        if resp.status == 429:
            return (await resp.json())["error"]
        assert resp.status == 200
        assert asyncio.get_running_loop().time() < deadline, "the limit never applied"
        await asyncio.sleep(0.05)


async def test_tokens_and_cost_are_counted_after_the_response(proxy, admin_headers):
    at(proxy, MINUTE)
    tpm = await new_token(proxy, admin_headers, tpm=1)
    assert (await post(proxy, tpm)).status == 200  # nothing used yet: allowed
    assert (await _until_refused(proxy, tpm))["param"] == "tpm"

    cost = await new_token(proxy, admin_headers, cost_per_month=0.000001)
    gpt4o = chat("quota-cost", "openai/gpt-4o")
    assert (await post(proxy, cost, gpt4o)).status == 200
    assert (await _until_refused(proxy, cost, gpt4o))["param"] == "cost_per_month"

    # no cost in the usage: the pricing table prices it
    priced = await new_token(proxy, admin_headers, cost_per_month=0.000001)
    assert (await post(proxy, priced, gpt4o, **{"X-Fake-No-Cost": "1"})).status == 200
    assert (await _until_refused(proxy, priced, gpt4o, **{"X-Fake-No-Cost": "1"}))["param"] == "cost_per_month"


async def test_plan_defaults_and_explicit_overrides_pick_the_binding_limit(proxy, admin_headers):
    at(proxy, MINUTE)
    free = await new_token(proxy, admin_headers, plan="free")
    resp = await post(proxy, free)
    assert resp.headers["X-Orcache-RateLimit-Scope"] == "rpm"
    assert (resp.headers["X-RateLimit-Limit"], resp.headers["X-RateLimit-Remaining"]) == ("20", "19")
    no_rpm = await new_token(proxy, admin_headers, plan="free", rpm=0)  # 0: no limit, overriding the plan
    resp = await post(proxy, no_rpm)
    assert resp.headers["X-Orcache-RateLimit-Scope"] == "requests_per_month"
    assert (resp.headers["X-RateLimit-Limit"], resp.headers["X-RateLimit-Remaining"]) == ("1000", "999")
    unlimited = await new_token(proxy, admin_headers, plan="unlimited")
    resp = await post(proxy, unlimited)
    assert "X-Orcache-RateLimit-Scope" not in resp.headers


async def test_headers_on_cache_hits_streams_and_refusals(proxy, admin_headers):
    at(proxy, MINUTE)
    token = await new_token(proxy, admin_headers, rpm=50, cache_mode="exact")
    body = chat("quota-hit")
    assert (await post(proxy, token, body)).headers["X-Cache"] == "MISS"
    for _ in range(100):
        hit = await post(proxy, token, body)
        if hit.headers["X-Cache"] == "HIT-EXACT":
            break
        await asyncio.sleep(0.05)
    assert hit.headers["X-Cache"] == "HIT-EXACT" and hit.headers["X-Orcache-RateLimit-Scope"] == "rpm"
    stream = await post(proxy, token, {**chat("quota-stream"), "stream": True})
    assert stream.content_type == "text/event-stream" and "X-RateLimit-Remaining" in stream.headers
    await stream.read()
    bad = await post(proxy, token, {"model": "@preset/missing", "messages": [{"role": "user", "content": "x"}]})
    assert bad.status == 400  # an unknown preset is refused before the quota counts it


async def test_tokens_without_limits_make_no_quota_calls(proxy, admin_headers, redis_sync_client, key_prefix):
    token = await new_token(proxy, admin_headers)

    def scripts() -> int:
        stats = redis_sync_client.info("commandstats")
        return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))

    before = scripts()
    for _ in range(5):
        resp = await post(proxy, token)
        assert resp.status == 200 and "X-Orcache-RateLimit-Scope" not in resp.headers
    assert scripts() == before
    assert not redis_sync_client.keys(f"{key_prefix}:quota:*")


async def test_usage_endpoint_for_the_token_holder(proxy, admin_headers):
    at(proxy, time.time())
    token = await new_token(proxy, admin_headers, rpm=10, requests_per_month=100, cache_mode="exact")
    body = chat("quota-usage")
    first = await post(proxy, token, body)
    usage_block = (await first.json())["usage"]
    for _ in range(100):  # the second identical call is a cache hit once the answer is stored
        if (await post(proxy, token, body)).headers["X-Cache"] == "HIT-EXACT":
            break
        await asyncio.sleep(0.05)

    async def usage() -> dict:
        resp = await proxy.get("/api/tokens/me/usage", headers=bearer(token))
        assert resp.status == 200
        return await resp.json()

    for _ in range(200):
        data = await usage()
        if data["source"]["month"] == "postgres" and data["cache_savings"]["response_cache_hits"] >= 1 \
                and data["quotas"]["tokens_per_month"]["used"] > 0:
            break
        await asyncio.sleep(0.05)
    q = data["quotas"]
    assert q["rpm"]["limit"] == 10 and q["rpm"]["used"] == q["requests_per_month"]["used"] >= 2
    assert q["rpm"]["remaining"] == 10 - q["rpm"]["used"]
    assert q["requests_per_month"]["remaining"] == 100 - q["requests_per_month"]["used"]
    assert q["tokens_per_month"] == {**q["tokens_per_month"], "limit": None, "remaining": None,
                                     "used": usage_block["total_tokens"]}
    assert data["month"] == datetime.now(UTC).strftime("%Y-%m") and data["resets_at"].endswith("T00:00:00Z")
    assert data["cost"] == pytest.approx(usage_block["cost"])
    assert data["cache_savings"]["response_cache"] == pytest.approx(usage_block["cost"])
    assert data["cache_savings"]["provider_prompt_cache"] == 0
    assert (await proxy.get("/api/tokens/me/usage")).status == 401
    other = await new_token(proxy, admin_headers)
    assert (await proxy.get("/api/tokens/me/usage", params={"token_id": other["id"]},
                            headers=bearer(token))).status == 403
    by_admin = await proxy.get("/api/tokens/me/usage", params={"token_id": other["id"]}, headers=admin_headers)
    assert by_admin.status == 200 and (await by_admin.json())["limited"] is False


async def test_token_cli_sets_and_clears_quota_flags(proxy, admin_headers, redis_url, key_prefix, tmp_path):
    token = await new_token(proxy, admin_headers)
    env = {**os.environ, "REDIS_URL": redis_url, "ORCACHE_KEY_PREFIX": key_prefix, "ORCACHE_LOG_FORMAT": "console"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "proxy.cli", "token", "update", token["id"], *args,
                               "--data-dir", str(tmp_path / "d")], env=env, capture_output=True, text=True,
                              timeout=60, cwd=Path(__file__).parent.parent)

    done = run("--rpm", "60", "--plan", "premium", "--cost-per-month", "12.5", "--fallback-models",
               "openai/gpt-4o,anthropic/claude-sonnet-4", "--auto-cache-breakpoints", "--auto-cache-min-chars", "2000")
    assert done.returncode == 0, done.stderr
    shown = await (await proxy.get(f"/admin/tokens/{token['id']}", headers=admin_headers)).json()
    assert (shown["rpm"], shown["plan"], shown["cost_per_month"], shown["auto_cache_min_chars"]) == (
        60, "premium", 12.5, 2000)
    assert shown["fallback_models"] == ["openai/gpt-4o", "anthropic/claude-sonnet-4"]
    assert shown["auto_cache_breakpoints"] is True
    assert run("--rpm", "none", "--plan", "none", "--no-auto-cache-breakpoints").returncode == 0
    shown = await (await proxy.get(f"/admin/tokens/{token['id']}", headers=admin_headers)).json()
    assert shown["rpm"] is None and shown["plan"] is None and shown["auto_cache_breakpoints"] is False
    bad = run("--plan", "gold")
    assert bad.returncode == 2 and "plan must be one of" in bad.stderr


# --- two worker processes sharing Redis -------------------------------------------------------------------

class Worker:
    def __init__(self, tmp: Path, name: str, env: dict[str, str], upstream: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.err = tmp / f"{name}.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--port", str(self.port), "--data-dir", str(tmp / name),
             "--upstream", upstream], env=env, stdout=subprocess.DEVNULL, stderr=open(self.err, "wb"),
            cwd=Path(__file__).parent.parent)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.err.read_text(errors="replace")
            try:
                if http("GET", self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("worker did not start:\n" + self.err.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.mark.slow
def test_limit_is_exact_across_two_worker_processes(tmp_path, redis_url, database_url, fake_upstream_url,
                                                    key_prefix):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCACHE_")}
    env.update(REDIS_URL=redis_url, DATABASE_URL=database_url, ORCACHE_ADMIN_TOKEN=ADMIN_TOKEN,
               ORCACHE_KEY_PREFIX=key_prefix, ORCACHE_EMBEDDINGS="off", ORCACHE_LOG_FORMAT="json",
               OPENROUTER_API_KEY="sk-or-test", PYTHONUNBUFFERED="1")
    workers = [Worker(tmp_path, f"w{i}", env, fake_upstream_url) for i in range(2)]
    try:
        for w in workers:
            w.wait_ready()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        limit = 12
        token = http("POST", workers[0].url + "/admin/tokens", json={"name": "shared", "requests_per_month": limit},
                     headers=admin).json()
        auth = {"Authorization": f"Bearer {token['token']}"}
        for w in workers:  # warm: the first request a worker sees also opens its Redis connections
            assert http("GET", w.url + "/api/tokens/me/usage", headers=auth).status_code == 200

        def call(i: int) -> tuple[int, int]:
            r = http("POST", workers[i % 2].url + "/v1/chat/completions", json=chat(f"two-workers-{i}"),
                     headers=auth)
            return i % 2, r.status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(call, range(3 * limit)))
        ok = [w for w, status in results if status == 200]
        assert len(ok) == limit, results
        assert {status for _, status in results} == {200, 429}
        assert set(ok) == {0, 1}, "both workers admitted requests"
        usage = http("GET", workers[1].url + "/api/tokens/me/usage", headers=auth).json()
        assert usage["quotas"]["requests_per_month"]["used"] == limit
        assert usage["quotas"]["requests_per_month"]["remaining"] == 0
    finally:
        for w in workers:
            w.stop()
