"""The dashboard in real headless Chromium (Debian's, driven by Playwright) against the real proxy: real
Redis and Postgres, the fake OpenRouter, requests made through the proxy so the rows are real.
(test_dashboard_screenshots.py reuses the helpers here for the README's screenshots.)
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.app import create_app
from proxy.settings import load_settings
from tests.conftest import ADMIN_TOKEN
from tests.support import ThreadedServer

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 900}
XSS_MODEL = "<img src=x onerror=alert(1)>"

if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


# --- the proxy and a tiny HTTP client -------------------------------------------------------------

class Proxy:
    def __init__(self, server: ThreadedServer) -> None:
        self.server = server
        self.url = server.url

    def call(self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def token(self, name: str, **fields: Any) -> dict:
        status, body = self.call("POST", "/admin/tokens", {"name": name, **fields})
        assert status == 201, body
        return body

    def chat(self, token: str, model: str, text: str = "hello", **headers: str) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        status, _ = self.call("POST", "/v1/chat/completions", body, token=token, headers=headers)
        return status

    def wait_logged(self, count: int, timeout: float = 15.0, **filters: str) -> None:
        query = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in filters.items())
        deadline = time.monotonic() + timeout
        total = None
        while time.monotonic() < deadline:
            status, body = self.call("GET", f"/admin/logs?page_size=1&{query}")
            total = body.get("total") if status == 200 else None
            if total is not None and total >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"expected {count} logged rows for {filters}, have {total}")


def start_ui_proxy(name: str, redis_url: str, database_url: str, fake_upstream_url: str,
                   tmp_path_factory: pytest.TempPathFactory) -> ThreadedServer:
    """A proxy of its own (key prefix, data dir) on the shared servers, logging rows quickly."""
    settings = load_settings(dict(
        redis_url=redis_url, database_url=database_url, upstream_url=fake_upstream_url, admin_token=ADMIN_TOKEN,
        key_prefix=name + secrets.token_hex(4), data_dir=tmp_path_factory.mktemp(name) / "data",
        openrouter_api_key="sk-or-upstream-secret", embeddings="off", log_flush_interval=0.05,
        log_format="console"), env={})
    return ThreadedServer(lambda: create_app(settings)).start()


@pytest.fixture(scope="module")
def proxy(redis_url: str, database_url: str, fake_upstream_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    server = start_ui_proxy("ui", redis_url, database_url, fake_upstream_url, tmp_path_factory)
    yield Proxy(server)
    server.stop()


@pytest.fixture(scope="module")
def browser(proxy: Proxy) -> Iterator[Any]:
    # Playwright's sync API runs an event loop while it is open, and the database fixtures use asyncio.run:
    # depending on the proxy makes those run first.
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Watch:
    """Dialogs (alert/confirm) and uncaught page errors seen while a test ran: both must stay empty."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def page(browser, proxy: Proxy, watch: Watch) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT, base_url=proxy.url, locale="en-US",
                                  timezone_id="UTC")
    context.set_default_timeout(10_000)
    pg = context.new_page()

    def on_dialog(dialog):
        watch.dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("pageerror", lambda err: watch.errors.append(str(err)))

    def on_console(msg):
        # a CSP violation is only a console message: the strict policy must never have to block anything
        if "Content Security Policy" in msg.text or "Refused to" in msg.text:
            watch.errors.append(msg.text)

    pg.on("console", on_console)
    yield pg
    context.close()
    assert watch.errors == [], watch.errors
    assert watch.dialogs == [], watch.dialogs


def sign_in(page, token: str = ADMIN_TOKEN, path: str = "/logs") -> None:
    page.goto(path)
    page.fill("#signin-token", token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".layout")).to_be_visible()


def log_rows(page):
    return page.locator("[data-testid=logs-table] tbody tr.row-link")


def filter_logs(page, **fields: str) -> None:
    form = page.locator("[data-testid=filters]")
    for name, value in fields.items():
        control = form.locator(f"[name={name}]")
        if control.evaluate("el => el.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    form.locator("button[type=submit]").click()


def unique_model(tag: str) -> str:
    return f"ui-test/{tag}-{secrets.token_hex(3)}"


# --- tests -------------------------------------------------------------------------------------------

def test_sign_in_uses_an_httponly_cookie_and_keeps_no_token_in_the_browser(page, proxy):
    page.goto("/logs")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.fill("#signin-token", "sk-orc-0123456789abcdef-wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".signin-error")).to_have_text("That token was not accepted.")

    page.fill("#signin-token", ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Request Logs")).to_be_visible()
    expect(page.locator("[data-testid=who]")).to_have_text("Administrator")

    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["orcache_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict" and session["path"] == "/"
    assert ADMIN_TOKEN not in session["value"]
    stored = page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie])")
    assert ADMIN_TOKEN not in stored and "sk-orc" not in stored and "orcache_session" not in stored
    assert page.locator("#signin-token").count() == 0, "the token field is gone once signed in"

    # the session survives a reload, and every admin page is in the sidebar with the current one marked
    page.reload()
    nav = page.get_by_role("navigation", name="Main navigation")
    expect(nav.get_by_role("link")).to_have_text(["01Logs", "02Usage", "03Tokens", "04Cache"])
    expect(nav.locator("[aria-current=page]")).to_have_text("01Logs")
    nav.get_by_role("link", name="Tokens").click()
    expect(page).to_have_url(re.compile(r"/tokens$"))
    expect(nav.locator("[aria-current=page]")).to_have_text("03Tokens")

    # a session that ends server-side sends the page back to the sign-in screen on its next call
    nav.get_by_role("link", name="Logs").click()
    expect(page.get_by_role("heading", name="Request Logs")).to_be_visible()
    page.wait_for_load_state("networkidle")
    page.context.clear_cookies()
    page.get_by_test_id("refresh").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator(".signin-error")).to_have_text("Your session ended. Sign in again.")
    sign_in(page)

    page.get_by_test_id("sign-out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert "orcache_session" not in {c["name"] for c in page.context.cookies()}
    status, _ = proxy.call("GET", "/auth/session", token="")
    assert status == 401


def test_rows_appear_paginate_filter_and_open_details(page, proxy):
    tok = proxy.token("pager-bot")
    model, other = unique_model("pager"), unique_model("other")
    for i in range(23):
        assert proxy.chat(tok["token"], model, f"question {i}") == 200
    assert proxy.chat(tok["token"], other, "the odd one") == 200
    assert proxy.chat(tok["token"], "fake/error-500", "boom") == 500
    proxy.wait_logged(23, model=model)
    proxy.wait_logged(1, model=other)

    sign_in(page)
    filter_logs(page, model=model)
    rows = log_rows(page)
    expect(rows).to_have_count(20)
    expect(page.get_by_test_id("pager-info")).to_have_text("Page 1 of 2 · 23 rows")
    expect(page).to_have_url(re.compile(r"model=ui-test"))
    first = rows.first
    expect(first.locator(".col-model")).to_have_text(model)
    expect(first.locator(".col-method")).to_have_text("POST")
    expect(first.locator(".col-path")).to_have_text("/v1/chat/completions")
    expect(first.locator(".status")).to_have_class(re.compile("status-ok"))
    expect(first.locator(".col-duration")).to_have_text(re.compile(r"\d+(\.\d+)? m?s"))
    expect(first.locator(".tok-total")).to_have_text(re.compile(r"^\d+$"))
    expect(first.locator(".tok-split")).to_have_text(re.compile(r"^in \d+ / out \d+$"))

    page_one = rows.locator(".col-time").all_text_contents()
    page.get_by_role("button", name="Next").click()
    expect(rows).to_have_count(3)
    expect(page.get_by_test_id("pager-info")).to_have_text("Page 2 of 2 · 23 rows")
    # Next follows the keyset cursor, kept in the URL so a reload shows the same rows
    expect(page).to_have_url(re.compile(r"page=2&cursor=[\w-]+"))
    page.reload()
    expect(rows).to_have_count(3)
    expect(page.get_by_test_id("pager-info")).to_have_text("Page 2 of 2 · 23 rows")
    page.get_by_role("button", name="Prev").click()
    expect(rows).to_have_count(20)
    expect(page).not_to_have_url(re.compile(r"cursor=|page="))
    assert rows.locator(".col-time").all_text_contents() == page_one

    # status code filter, with the status colour for errors
    filter_logs(page, model="", status_code="500")
    expect(rows.first.locator(".status")).to_have_text("500")
    expect(rows.first.locator(".status")).to_have_class(re.compile("status-bad"))
    assert all(s == "500" for s in rows.locator(".status").all_text_contents())

    # token filter (the select lists the tokens) combined with the model
    filter_logs(page, status_code="", token=tok["id"], model=other)
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".col-model")).to_have_text(other)
    filter_logs(page, model="no/such-model")
    expect(page.locator("[data-testid=logs-table] tbody tr.empty")).to_have_text("No requests match.")
    page.get_by_role("button", name="Reset").click()
    expect(page.locator("[name=model]")).to_have_value("")

    # details side panel: click opens it with every field, Escape closes it, Enter opens it from the keyboard
    filter_logs(page, model=other)
    rows.first.click()
    details = page.get_by_test_id("details")
    expect(details).to_be_visible()
    expect(details.get_by_role("heading", name="Request details")).to_be_visible()
    status, row = proxy.call("GET", "/admin/logs?page_size=1&model=" + urllib.request.quote(other))
    full = proxy.call("GET", "/admin/logs/" + row["items"][0]["request_id"])[1]
    for field in full:
        expect(details.locator(f"dd[data-field='{field}']")).to_have_count(1)
    expect(details.locator("dd[data-field=model]")).to_have_text(other)
    expect(details.locator("dd[data-field=request_id]")).to_have_text(full["request_id"])
    expect(details.locator("dd[data-field=token_name]")).to_have_text("pager-bot")
    page.keyboard.press("Escape")
    expect(details).to_have_count(0)
    expect(rows.first).to_be_focused()  # focus goes back to the row
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("details")).to_be_visible()
    page.get_by_test_id("details-close").click()
    expect(page.get_by_test_id("details")).to_have_count(0)


def test_tokens_tooltip_shows_the_breakdown_without_zeros(page, proxy):
    tok = proxy.token("tooltip-bot")
    model = unique_model("tooltip")
    assert proxy.chat(tok["token"], "openai/gpt-4o-mini", "plain call " + model) == 200
    assert proxy.chat(tok["token"], model, "cached call", **{"X-Fake-Cached-Tokens": "3"}) == 200
    proxy.wait_logged(1, model=model)
    sign_in(page)
    filter_logs(page, model=model)
    row = log_rows(page).first
    expect(row.locator("[data-mark=cached]")).to_have_count(1)  # the cache indicator
    row.locator("[data-testid=tokens]").hover()
    tip = page.locator("#tooltip")
    expect(tip).to_be_visible()
    labels = tip.locator(".tt-label").all_text_contents()
    assert labels[:2] == ["Input", "Output"] and "Cached" in labels and "Cache Read" in labels
    assert "Reasoning" not in labels and "Cache Write" not in labels  # zeros are hidden
    assert all(int(v.replace(",", "")) > 0 for v in tip.locator(".tt-value").all_text_contents())
    page.mouse.move(5, 5)
    expect(tip).to_be_hidden()

    # the same tooltip on keyboard focus
    filter_logs(page, model="openai/gpt-4o-mini", token=tok["id"])
    plain = log_rows(page).first
    expect(plain.locator("[data-mark]")).to_have_count(0)  # no cached tokens, no hit: no marks
    plain.locator("[data-testid=tokens]").focus()
    expect(tip).to_be_visible()
    assert tip.locator(".tt-label").all_text_contents() == ["Input", "Output"]
    assert plain.locator("[data-testid=tokens]").get_attribute("aria-describedby") == "tooltip"


def test_proxy_cache_hits_have_their_own_marks(page, proxy):
    exact = proxy.token("exact-bot", cache_mode="exact")
    model = unique_model("hits")
    for _ in range(6):  # the first call fills the cache; the store may land a moment after the answer
        assert proxy.chat(exact["token"], model, "same question every time") == 200
        status, body = proxy.call("GET", "/admin/logs?cache=exact&model=" + urllib.request.quote(model))
        if body["total"]:
            break
        time.sleep(0.3)
    proxy.wait_logged(1, model=model, cache="exact")
    sign_in(page)
    filter_logs(page, model=model, cache="exact")
    row = log_rows(page).first
    expect(row.locator("[data-mark=exact]")).to_have_text("EXACT")
    row.locator("[data-testid=tokens]").hover()
    expect(page.locator("#tooltip .tt-note")).to_have_text("Exact proxy cache hit")


def test_xss_model_name_is_rendered_as_text(page, proxy, watch):
    tok = proxy.token("xss-bot")
    assert proxy.chat(tok["token"], XSS_MODEL, "hi") == 200
    proxy.wait_logged(1, model=XSS_MODEL)
    sign_in(page)
    filter_logs(page, model=XSS_MODEL)
    cell = log_rows(page).first.locator(".col-model")
    expect(cell).to_have_text(XSS_MODEL)
    assert page.locator("main img, .drawer img").count() == 0
    log_rows(page).first.click()
    expect(page.locator("[data-testid=details] dd[data-field=model]")).to_have_text(XSS_MODEL)
    page.keyboard.press("Escape")
    for path in ("/usage", "/cache"):
        page.goto(path)
        expect(page.get_by_text(XSS_MODEL, exact=True).first).to_be_visible()
        assert page.locator("main img").count() == 0
    assert page.evaluate("() => document.querySelectorAll('img').length") == 0
    page.wait_for_timeout(300)
    assert watch.dialogs == []  # the onerror handler never ran


def test_switching_to_chinese_translates_labels_and_survives_reload(page, proxy):
    tok = proxy.token("zh-bot")
    model = unique_model("zh")
    assert proxy.chat(tok["token"], model, "你好") == 200
    proxy.wait_logged(1, model=model)
    sign_in(page)
    page.get_by_test_id("lang").select_option("zh")
    expect(page.get_by_role("heading", name="请求日志")).to_be_visible()
    headers = page.locator("[data-testid=logs-table] thead th").all_text_contents()
    assert headers == ["时间", "方法", "路径", "模型", "令牌数", "状态", "耗时"]
    nav = page.get_by_role("navigation", name="主导航")
    expect(nav.get_by_role("link")).to_have_text(["01日志", "02用量", "03令牌", "04缓存"])
    assert page.evaluate("() => localStorage.getItem('orcache.lang')") == "zh"
    assert page.evaluate("() => document.documentElement.lang") == "zh-CN"

    page.reload()
    expect(page.get_by_role("heading", name="请求日志")).to_be_visible()
    expect(page.get_by_test_id("lang")).to_have_value("zh")
    filter_logs(page, model=model)
    log_rows(page).first.locator("[data-testid=tokens]").hover()
    labels = page.locator("#tooltip .tt-label").all_text_contents()
    assert labels == ["输入", "输出"]
    page.mouse.move(5, 5)
    for path, title in (("/usage", "用量日志"), ("/tokens", "令牌"), ("/cache", "缓存")):
        page.goto(path)
        expect(page.locator("h1")).to_have_text(title)

    # every key exists in both dictionaries (checked in the browser, on the module it really loads)
    missing = page.evaluate("""async () => {
        const { DICTIONARIES } = await import('/static/i18n.js');
        const en = Object.keys(DICTIONARIES.en), zh = Object.keys(DICTIONARIES.zh);
        return en.filter(k => !zh.includes(k)).concat(zh.filter(k => !en.includes(k)));
    }""")
    assert missing == []
    page.get_by_test_id("lang").select_option("en")
    expect(page.locator("h1")).to_have_text("Cache")


def test_auto_refresh_is_remembered_and_refreshes_the_table(page, proxy):
    tok = proxy.token("refresh-bot")
    model = unique_model("refresh")
    assert proxy.chat(tok["token"], model, "first") == 200
    proxy.wait_logged(1, model=model)
    sign_in(page)
    filter_logs(page, model=model)
    expect(log_rows(page)).to_have_count(1)
    page.get_by_test_id("auto-refresh").select_option("10")
    assert page.evaluate("() => localStorage.getItem('orcache.logs.autoRefresh')") == "10"

    page.reload()  # the interval and the filters come back
    expect(page.get_by_test_id("auto-refresh")).to_have_value("10")
    expect(page.locator("[name=model]")).to_have_value(model)
    expect(log_rows(page)).to_have_count(1)
    loaded_at = time.monotonic()
    assert proxy.chat(tok["token"], model, "second") == 200
    proxy.wait_logged(2, model=model)
    # nobody clicks refresh: the 10 s timer picks the new row up, keeping the filter
    expect(log_rows(page)).to_have_count(2, timeout=15_000)
    assert time.monotonic() - loaded_at > 5, "refreshed by the timer, not by the initial load"
    assert set(log_rows(page).locator(".col-model").all_text_contents()) == {model}

    page.get_by_test_id("auto-refresh").select_option("0")
    page.reload()
    expect(page.get_by_test_id("auto-refresh")).to_have_value("0")
    assert proxy.chat(tok["token"], model, "third") == 200
    proxy.wait_logged(3, model=model)
    page.get_by_test_id("refresh").click()  # the manual button always works
    expect(log_rows(page)).to_have_count(3)


def test_create_semantic_token_use_it_then_revoke_it(page, proxy):
    sign_in(page, path="/tokens")
    expect(page.get_by_role("heading", name="Tokens", exact=True)).to_be_visible()
    name = "ui-semantic-" + secrets.token_hex(3)
    page.get_by_test_id("token-name").fill(name)

    threshold_box = page.get_by_test_id("threshold-box").first
    expect(threshold_box).to_be_hidden()
    page.get_by_test_id("mode-exact").first.check()
    expect(page.get_by_test_id("mode-help").first).to_contain_text("needs no threshold")
    expect(threshold_box).to_be_hidden()
    page.get_by_test_id("mode-semantic").first.check()
    expect(threshold_box).to_be_visible()
    expect(page.get_by_test_id("threshold").first).to_have_value("50")
    expect(page.locator(".cache-controls").first).to_contain_text(
        "if the similarity between queries is greater than 0.7 (70%), the cached result is reused")
    page.get_by_test_id("create-token").click()

    secret_panel = page.get_by_test_id("secret-panel")
    expect(secret_panel).to_be_visible()
    expect(secret_panel).to_contain_text("shown only once")
    secret = page.get_by_test_id("new-secret").input_value()
    assert secret.startswith("sk-orc-")
    page.get_by_test_id("copy-secret").click()
    expect(secret_panel).to_contain_text("Copied.")

    status, listing = proxy.call("GET", "/admin/tokens")
    created = next(t for t in listing["items"] if t["name"] == name)
    assert created["cache_mode"] == "semantic" and created["similarity_threshold"] == 0.5
    row = page.locator(f"tr[data-token-id='{created['id']}']")
    expect(row.locator("td").nth(2)).to_have_text("Semantic")
    expect(row.get_by_test_id("threshold-cell")).to_have_text("50%")
    expect(row.get_by_test_id("token-status")).to_have_text("Active")

    # the new token works through the proxy
    assert proxy.chat(secret, "openai/gpt-4o-mini", "hello from the new token") == 200
    status, me = proxy.call("GET", "/api/tokens/me", token=secret)
    assert status == 200 and me["cache_mode"] == "semantic"

    # edit the cache settings: threshold to 70%
    row.get_by_test_id("edit-token").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_test_id("threshold")).to_have_value("50")
    dialog.get_by_test_id("threshold").fill("70")
    dialog.get_by_test_id("save-token").click()
    expect(row.get_by_test_id("threshold-cell")).to_have_text("70%")
    assert proxy.call("GET", f"/admin/tokens/{created['id']}")[1]["similarity_threshold"] == 0.7

    # revoke, with a confirmation that can be cancelled
    row.get_by_test_id("revoke-token").click()
    page.get_by_test_id("confirm-cancel").click()
    expect(row.get_by_test_id("token-status")).to_have_text("Active")
    row.get_by_test_id("revoke-token").click()
    expect(page.get_by_role("dialog")).to_contain_text(name)
    page.get_by_test_id("confirm-ok").click()
    expect(row.get_by_test_id("token-status")).to_have_text("Revoked")
    deadline = time.monotonic() + 5
    while proxy.chat(secret, "openai/gpt-4o-mini", "still there?") != 401:
        assert time.monotonic() < deadline, "a revoked token keeps working"
        time.sleep(0.1)
    status, body = proxy.call("GET", "/api/tokens/me", token=secret)
    assert status == 401 and body["error"]["code"] == "revoked_api_key"


def test_token_holder_sees_only_its_own_usage_and_cache(page, proxy):
    holder = proxy.token("holder-" + secrets.token_hex(3))
    stranger = proxy.token("stranger")
    mine, theirs = unique_model("mine"), unique_model("theirs")
    assert proxy.chat(holder["token"], mine, "my question") == 200
    assert proxy.chat(stranger["token"], theirs, "their question") == 200
    proxy.wait_logged(1, model=mine)
    proxy.wait_logged(1, model=theirs)

    sign_in(page, holder["token"], path="/logs")
    expect(page).to_have_url(re.compile(r"/usage$"))  # logs are the admin's
    nav = page.get_by_role("navigation", name="Main navigation")
    expect(nav.get_by_role("link")).to_have_text(["01Usage", "02Cache"])
    expect(page.locator("[data-testid=who]")).to_have_text(holder["name"])
    table = page.get_by_test_id("usage-table")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator("tbody tr").first).to_contain_text(mine)
    assert theirs not in page.content()
    expect(page.locator("[data-testid=filters] [name=token]")).to_have_count(0)

    page.goto("/tokens")
    expect(page).to_have_url(re.compile(r"/usage$"))
    page.goto("/cache")
    expect(page.locator("h1")).to_have_text("Cache")
    expect(page.get_by_test_id("cache-summary")).to_be_visible()
    expect(page.get_by_test_id("cache-by-model")).to_contain_text(mine)
    assert theirs not in page.content()
    expect(page.get_by_test_id("purge")).to_have_count(0)

    # and the holder's cookie does not open the admin APIs
    status = page.evaluate("async () => (await fetch('/admin/logs')).status")
    assert status == 401


def test_usage_page_has_a_daily_chart_and_a_details_modal(page, proxy):
    tok = proxy.token("usage-bot")
    model = "anthropic/claude-sonnet-4"
    for i in range(3):
        assert proxy.chat(tok["token"], model, f"usage question number {i} please") == 200
    proxy.wait_logged(3, model=model, api_key_id=tok["id"])
    sign_in(page, path="/usage")
    expect(page.get_by_role("heading", name="Usage Logs")).to_be_visible()
    headers = page.locator("[data-testid=usage-table] thead th").all_text_contents()
    assert headers[:8] == ["Date", "Model", "Provider", "Requests", "Prompt Tokens", "Completion Tokens",
                           "Reasoning Tokens", "Usage"]
    chart = page.get_by_test_id("usage-chart")
    expect(chart.locator("svg.chart")).to_be_visible()
    assert chart.locator("rect.bar").count() >= 7  # one per day
    expect(chart.locator("polyline.line")).to_have_count(1)

    page.locator("[data-testid=filters] [name=token]").select_option(tok["id"])
    page.locator("[data-testid=filters]").get_by_role("button", name="Apply").click()
    rows = page.locator("[data-testid=usage-table] tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(model)
    expect(rows.first.locator("td").nth(2)).to_have_text("Anthropic")
    expect(rows.first.locator("td").nth(3)).to_have_text("3")
    expect(rows.first.locator("td").nth(7)).to_have_text(re.compile(r"^\$0\.\d+$"))
    rows.first.get_by_test_id("usage-details").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    for field in ("date", "model", "model_permaslug", "provider_name", "endpoint_id", "requests", "prompt_tokens",
                  "completion_tokens", "reasoning_tokens", "usage", "byok_usage_inference"):
        expect(dialog.locator(f"dd[data-field={field}]")).to_have_count(1)
    expect(dialog.locator("dd[data-field=model_permaslug]")).to_have_text("anthropic/claude-4-sonnet-20250522")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)


def test_cache_page_shows_hits_evolution_and_purges_a_token(page, proxy):
    tok = proxy.token("cache-bot-" + secrets.token_hex(3), cache_mode="exact")
    model = "openai/gpt-4o"
    run = "run-" + secrets.token_hex(3)
    for iteration in (1, 2, 3):
        for q in ("What is the capital of France?", "Name three sorting algorithms.", "Define entropy."):
            hdr = {"X-Orcache-Run-Id": run, "X-Orcache-Iteration": str(iteration)}
            assert proxy.chat(tok["token"], model, q, **hdr) == 200
        time.sleep(0.3)  # let the stores land before the next iteration repeats the questions
    proxy.wait_logged(9, api_key_id=tok["id"])
    proxy.wait_logged(1, api_key_id=tok["id"], cache="exact")

    sign_in(page, path="/cache")
    expect(page.locator("h1")).to_have_text("Cache")
    summary = page.get_by_test_id("cache-summary")
    expect(summary).to_contain_text("Hit rate")
    assert int(summary.locator(".stat").nth(1).locator(".stat-value").inner_text()) >= 1
    expect(page.get_by_test_id("hit-rate-chart").locator("polyline")).to_have_count(2)  # exact and semantic
    expect(page.get_by_test_id("cache-by-model")).to_contain_text(model)
    expect(page.get_by_test_id("top-savings")).to_contain_text(tok["name"])
    expect(page.get_by_test_id("top-savings").locator("[data-mark=exact]").first).to_be_visible()

    page.get_by_test_id("run-id").fill(run)
    page.get_by_role("button", name="Show").click()
    evo = page.get_by_test_id("evolution-table")
    expect(evo.locator("tbody tr")).to_have_count(3)
    assert evo.locator("tbody tr td:first-child").all_text_contents() == ["1", "2", "3"]
    assert evo.locator("tbody tr").first.locator("td").nth(4).inner_text() == "0.0%"
    expect(page).to_have_url(re.compile(f"run_id={run}"))

    scope = page.locator(f"[data-testid=cache-scopes] tr[data-scope='token:{tok['id']}']")
    expect(scope).to_be_visible()
    assert int(scope.locator("td").nth(2).inner_text()) >= 1
    scope.get_by_test_id("purge").click()
    expect(page.get_by_role("dialog")).to_contain_text(tok["name"])
    page.get_by_test_id("confirm-ok").click()
    expect(page.locator(".toast")).to_contain_text("Purged")
    expect(scope.locator("td").nth(2)).to_have_text("0")
    stats = proxy.call("GET", "/admin/cache/stats")[1]
    assert not any(s.get("token_id") == tok["id"] and s["entries"] for s in stats["scopes"])


def test_keyboard_reaches_navigation_and_rows(page, proxy):
    tok = proxy.token("kbd-bot")
    model = unique_model("kbd")
    assert proxy.chat(tok["token"], model, "keys") == 200
    proxy.wait_logged(1, model=model)
    sign_in(page, path=f"/logs?model={urllib.request.quote(model)}")
    page.reload()  # start from a fresh document: focus at its top
    expect(log_rows(page)).to_have_count(1)
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Logs")).to_be_focused()
    # focus styles are visible (an outline) on keyboard focus
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    log_rows(page).first.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("details")).to_be_visible()
    expect(page.get_by_test_id("details-close")).to_be_focused()
