"""The dashboard's parts of issue 6 in real headless Chromium: quota / fallback / breakpoint fields in the
token edit dialog, fallback attempts in the /logs details panel, provider prompt-cache savings on /cache."""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests import test_dashboard_browser as ui
from tests.test_dashboard_browser import Proxy, expect, log_rows, sign_in

pytestmark = pytest.mark.browser

# the dashboard tests' fixtures: a proxy on a real port (its own, for this module), Chromium, a page
proxy, browser, page, watch = ui.proxy, ui.browser, ui.page, ui.watch


def test_edit_dialog_sets_and_clears_quotas_fallbacks_and_breakpoints(page, proxy: Proxy):
    tok = proxy.token("ui-limits", rpm=5)
    sign_in(page, path="/tokens")
    row = page.locator(f"tr[data-token-id='{tok['id']}']")
    row.get_by_test_id("edit-token").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_test_id("limit-rpm")).to_have_value("5")
    dialog.get_by_test_id("limit-plan").select_option("premium")
    dialog.get_by_test_id("limit-rpm").fill("")
    dialog.get_by_test_id("limit-cost_per_month").fill("2.5")
    dialog.get_by_test_id("fallback-models").fill("openai/gpt-4o, anthropic/claude-sonnet-4")
    dialog.get_by_test_id("auto-cache").check()
    dialog.get_by_test_id("save-token").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    saved = proxy.call("GET", f"/admin/tokens/{tok['id']}")[1]
    assert saved["plan"] == "premium" and saved["rpm"] is None and saved["cost_per_month"] == 2.5
    assert saved["fallback_models"] == ["openai/gpt-4o", "anthropic/claude-sonnet-4"]
    assert saved["auto_cache_breakpoints"] is True and saved["cache_mode"] == "off"

    row.get_by_test_id("edit-token").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_test_id("limit-plan")).to_have_value("premium")
    dialog.get_by_test_id("limit-tpm").fill("-3")
    dialog.get_by_test_id("save-token").click()
    expect(dialog.locator(".form-error")).to_contain_text("tpm")  # the server's 400 names the field
    dialog.get_by_test_id("limit-tpm").fill("")
    dialog.get_by_test_id("fallback-models").fill("")
    dialog.get_by_test_id("save-token").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert proxy.call("GET", f"/admin/tokens/{tok['id']}")[1]["fallback_models"] is None


def test_log_details_list_every_fallback_attempt(page, proxy: Proxy):
    tok = proxy.token("ui-fallback", fallback_models="openai/gpt-4o-mini")
    assert proxy.chat(tok["token"], "fake/error-500", "ui fallback") == 200
    proxy.wait_logged(1, api_key_id=tok["id"])
    sign_in(page)
    page.locator("[data-testid=filters] [name=token]").select_option(tok["id"])
    page.locator("[data-testid=filters] button[type=submit]").click()
    expect(log_rows(page)).to_have_count(1)
    log_rows(page).first.click()
    attempts = page.get_by_test_id("details").get_by_test_id("routing-attempts").locator("li")
    expect(attempts).to_have_count(3)
    expect(attempts.nth(0)).to_contain_text("fake/error-500 → 500")
    expect(attempts.nth(2)).to_contain_text("openai/gpt-4o-mini → 200")
    expect(page.locator("dd[data-field=routing] pre")).to_contain_text('"fallback_used": true')


def test_cache_page_shows_provider_prompt_cache_savings(page, proxy: Proxy):
    tok = proxy.token("ui-provider-cache")
    assert proxy.chat(tok["token"], "anthropic/claude-3.5-sonnet", "ui provider cache",
                      **{"X-Fake-Cached-Tokens": "2"}) == 200
    proxy.wait_logged(1, api_key_id=tok["id"])
    sign_in(page, path="/cache")
    summary = page.get_by_test_id("cache-summary")
    expect(summary).to_contain_text("Provider prompt cache")
    expect(summary).to_contain_text(re.compile(r"\d+ cached prompt tokens"))
    status, data = proxy.call("GET", "/admin/analytics/cache?token_id=" + urllib.request.quote(tok["id"]))
    assert status == 200 and data["provider_prompt_cache"]["cache_read_tokens"] == 2
