"""Screenshots of every dashboard page for the README, and a layout check at laptop widths.

A fresh database gets two weeks of history written straight into Postgres (the raw table, then the daily
rollup rebuilt from it, as after a bulk load), then today's traffic goes through the real proxy. With
ORCACHE_SCREENSHOTS=1 the pictures are written to docs/screenshots/ (1440x900), otherwise to a temporary
directory, so a normal test run checks the pages render without touching the repository.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from logstore.queries import rebuild_rollup
from proxy.keys import PG_POOL
from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, Proxy, log_rows, sign_in, start_ui_proxy

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

# model -> (provider, permaslug, USD per prompt token, USD per completion token)
MODELS = {
    "openai/gpt-4o-mini": ("OpenAI", "openai/gpt-4o-mini-2024-07-18", 0.15e-6, 0.6e-6),
    "anthropic/claude-sonnet-4": ("Anthropic", "anthropic/claude-4-sonnet-20250522", 3e-6, 15e-6),
    "google/gemini-2.5-flash": ("Google", "google/gemini-2.5-flash", 0.3e-6, 2.5e-6),
    "deepseek/deepseek-r1": ("DeepSeek", "deepseek/deepseek-r1", 0.4e-6, 2e-6),
    "openai/gpt-4o": ("OpenAI", "openai/gpt-4o", 2.5e-6, 10e-6),
}
TOKENS = (("research-agent", "semantic"), ("ci-runner", "exact"), ("eval-harness", "semantic"),
          ("notebook", "off"))
HISTORY_COLUMNS = (
    "request_id", "created_at", "token_id", "token_name", "upstream_id", "method", "path", "status_code", "success",
    "error", "duration_ms", "ttfb_ms", "model_requested", "model", "model_permaslug", "provider", "generation_id",
    "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cache_read_tokens", "reasoning_tokens",
    "cost", "cache_status", "similarity", "saved_cost", "saved_prompt_tokens", "saved_completion_tokens", "run_id",
    "iteration",
)


def history_rows(tokens: dict[str, dict], now: datetime) -> list[tuple[Any, ...]]:
    """Fourteen days of plausible traffic: hit rates that climb as the caches warm up, a few errors,
    and a nightly evaluation run whose later iterations are mostly served from the cache."""
    rng = random.Random(7)
    rows: list[tuple[Any, ...]] = []
    start = (now - timedelta(days=14)).replace(hour=0, minute=0, second=0, microsecond=0)
    for day in range(14):
        warm = day / 13
        for n in range(rng.randint(40, 70)):
            name, mode = rng.choice(TOKENS)
            model = rng.choice(list(MODELS))
            provider, slug, p_in, p_out = MODELS[model]
            created = start + timedelta(days=day, seconds=rng.randint(8 * 3600, 20 * 3600))
            prompt, completion = rng.randint(40, 900), rng.randint(20, 600)
            reasoning = rng.randint(0, completion // 2) if model in ("deepseek/deepseek-r1",) else 0
            cached = rng.choice([0, 0, 0, prompt // 2]) if model.startswith("anthropic") else 0
            cost = prompt * p_in + completion * p_out
            status, error, cache, similarity = 200, None, "off" if mode == "off" else "miss", None
            roll = rng.random()
            if roll < 0.03:
                status, error = rng.choice([(429, "Rate limit exceeded"), (502, "upstream connection reset")])
            elif mode != "off" and roll < 0.12 + 0.35 * warm:
                cache = "exact"
            elif mode == "semantic" and roll < 0.2 + 0.5 * warm:
                cache, similarity = "semantic", round(rng.uniform(0.86, 0.99), 3)
            hit = cache in ("exact", "semantic")
            rows.append((
                f"req_hist_{day:02d}_{n:03d}", created, tokens[name]["id"], name, "default", "POST",
                "/v1/chat/completions", status, status == 200, error,
                rng.uniform(2, 12) if hit else rng.uniform(300, 4200), None, model, model, slug, provider,
                None if hit else f"gen-{secrets.token_hex(6)}",
                0 if hit else prompt, 0 if hit else completion, 0 if hit else prompt + completion,
                0 if hit else cached, 0 if hit else cached, 0 if hit else reasoning,
                0.0 if hit or status != 200 else cost, cache, similarity, cost if hit else None,
                prompt if hit else 0, completion if hit else 0, None, None,
            ))
    # a nightly evaluation run repeated five times: the cache takes over from the second iteration
    eval_token = tokens["eval-harness"]
    for iteration in range(1, 6):
        for q in range(12):
            model = "anthropic/claude-sonnet-4"
            provider, slug, p_in, p_out = MODELS[model]
            cost = 600 * p_in + 300 * p_out
            hit_rate = 0.0 if iteration == 1 else min(0.95, 0.45 + 0.15 * iteration)
            cache = "miss"
            if rng.random() < hit_rate:
                cache = "exact" if q % 3 else "semantic"
            hit = cache != "miss"
            rows.append((
                f"req_eval_{iteration}_{q:02d}", now - timedelta(hours=6 - iteration, minutes=q),
                eval_token["id"], "eval-harness", "default", "POST", "/v1/chat/completions", 200, True, None,
                5.0 if hit else 1800.0, None, model, model, slug, provider, None,
                0 if hit else 600, 0 if hit else 300, 0 if hit else 900, 0, 0, 0, 0.0 if hit else cost, cache,
                0.93 if cache == "semantic" else None, cost if hit else None, 600 if hit else 0, 300 if hit else 0,
                "nightly-eval", iteration,
            ))
    return rows


async def seed_history(pool, rows: list[tuple[Any, ...]]) -> None:
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("request_logs", records=rows, columns=HISTORY_COLUMNS)
        await rebuild_rollup(conn)


@pytest.fixture(scope="module")
def demo(redis_url: str, database_url: str, fake_upstream_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, dict[str, dict]]]:
    server = start_ui_proxy("shots", redis_url, database_url, fake_upstream_url, tmp_path_factory)
    proxy = Proxy(server)
    tokens = {name: proxy.token(name, cache_mode=mode, **({"similarity_threshold": 0.85} if mode == "semantic" else {}))
              for name, mode in TOKENS}
    assert server.app is not None
    server.call(seed_history(server.app[PG_POOL], history_rows(tokens, datetime.now(UTC))))

    # today's traffic, through the proxy
    live_since = datetime.now(UTC).isoformat()
    questions = ["What is the capital of France?", "Summarise Hamlet in two lines.", "Write a haiku about caches.",
                 "Explain HNSW in one paragraph.", "List three sorting algorithms."]
    models = list(MODELS)
    for i, q in enumerate(questions):
        for j, name in enumerate(("ci-runner", "notebook", "research-agent")):
            extra = {"X-Fake-Cached-Tokens": "6"} if name == "notebook" and i % 2 == 0 else {}
            proxy.chat(tokens[name]["token"], models[(i + j) % len(models)], q, **extra)
    proxy.chat(tokens["notebook"]["token"], "fake/error-429", "are we rate limited?")
    for i, q in enumerate(questions[:4]):  # the exact-cache token asks again: hits
        proxy.chat(tokens["ci-runner"]["token"], models[i % len(models)], q)
    proxy.wait_logged(20, start_time=live_since)
    yield proxy, tokens
    server.stop()


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("ORCACHE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def page(demo) -> Iterator[Any]:
    proxy, _ = demo
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport=VIEWPORT, base_url=proxy.url, locale="en-US", timezone_id="UTC")
        context.set_default_timeout(10_000)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda err: errors.append(str(err)))
        yield pg
        browser.close()
        assert errors == []


def shot(page, path: Path) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(200)  # let the drawer and dialogs settle
    page.screenshot(path=str(path), animations="disabled")


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def test_screenshots_of_every_page(page, demo, shots_dir):
    proxy, tokens = demo
    page.goto("/logs")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, shots_dir / "signin.png")
    sign_in(page)

    # logs, with the tokens tooltip open on a row that has provider-cached tokens
    expect(log_rows(page)).to_have_count(20)
    cached = page.locator("[data-testid=logs-table] tr.row-link:has([data-mark=cached])").first
    cached.locator("[data-testid=tokens]").hover()
    expect(page.locator("#tooltip")).to_be_visible()
    shot(page, shots_dir / "logs.png")
    page.mouse.move(5, 5)

    row = page.locator("[data-testid=logs-table] tr.row-link",
                       has=page.locator(".col-model", has_text="anthropic/claude-sonnet-4"),
                       has_not=page.locator("[data-mark=exact]")).first
    row.click()
    expect(page.locator("[data-testid=details] dd[data-field=generation_id]")).to_be_visible()
    shot(page, shots_dir / "logs-details.png")
    page.keyboard.press("Escape")

    page.get_by_test_id("lang").select_option("zh")
    expect(page.get_by_role("heading", name="请求日志")).to_be_visible()
    expect(log_rows(page)).to_have_count(20)
    page.evaluate("() => document.activeElement.blur()")
    shot(page, shots_dir / "logs-zh.png")
    page.get_by_test_id("lang").select_option("en")

    page.goto("/usage")
    expect(page.get_by_test_id("usage-chart").locator("rect.bar")).to_have_count(15)
    expect(page.locator("[data-testid=usage-table] tbody tr")).to_have_count(20)
    shot(page, shots_dir / "usage.png")
    page.locator("[data-testid=usage-table] tbody tr").first.get_by_test_id("usage-details").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    shot(page, shots_dir / "usage-details.png")
    page.keyboard.press("Escape")

    page.goto("/tokens")
    expect(page.locator("[data-testid=tokens-table] tbody tr")).to_have_count(len(TOKENS))
    page.get_by_test_id("token-name").fill("support-bot")
    page.get_by_test_id("mode-semantic").first.check()
    shot(page, shots_dir / "tokens.png")

    page.goto("/cache?run_id=nightly-eval")
    expect(page.get_by_test_id("evolution-table").locator("tbody tr")).to_have_count(5)
    expect(page.get_by_test_id("hit-rate-chart").locator("polyline")).to_have_count(2)
    shot(page, shots_dir / "cache.png")
    page.get_by_test_id("top-savings").evaluate("el => el.closest('.panel').scrollIntoView()")
    shot(page, shots_dir / "cache-evolution.png")

    for name in ("signin", "logs", "logs-details", "logs-zh", "usage", "usage-details", "tokens", "cache",
                 "cache-evolution"):
        assert (shots_dir / f"{name}.png").stat().st_size > 20_000, name


@pytest.mark.parametrize("width", [1280, 1440])
def test_pages_fit_a_laptop_screen(page, width):
    page.set_viewport_size({"width": width, "height": 800})
    try:
        for path in ("/logs", "/usage", "/tokens", "/cache"):
            page.goto(path)
            expect(page.locator(".layout")).to_be_visible()
            page.wait_for_load_state("networkidle")
            assert no_horizontal_scroll(page), f"{path} scrolls sideways at {width}px"
            # the data table itself fits too, without its own scrollbar
            wraps = page.evaluate("() => [...document.querySelectorAll('.table-wrap')]"
                                  ".map(w => w.scrollWidth - w.clientWidth)")
            assert all(extra <= 1 for extra in wraps), (path, width, wraps)
    finally:
        page.set_viewport_size(VIEWPORT)
