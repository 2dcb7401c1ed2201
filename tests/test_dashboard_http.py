"""The dashboard's HTTP side: pages and assets with their security and cache headers, the browser session
endpoints (HttpOnly cookie, Redis-backed, revocable), and static checks on the JS it ships."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.app import create_app
from proxy.auth import SESSION_COOKIE
from proxy.rediskeys import session_key
from proxy.tokens import hash_secret
from proxy.ui import CONTENT_SECURITY_POLICY
from tests.conftest import ADMIN_TOKEN

UI_DIR = Path(__file__).resolve().parent.parent / "ui_static"


@pytest.fixture
async def proxy(aiohttp_client, make_settings):
    return await aiohttp_client(create_app(make_settings(session_ttl_seconds=600)))


async def new_token(client, **fields) -> dict:
    resp = await client.post("/admin/tokens", json={"name": "ui", **fields},
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status == 201, await resp.text()
    return await resp.json()


def set_cookie_header(resp) -> str:
    headers = [v for k, v in resp.raw_headers if k.decode().lower() == "set-cookie"]
    assert len(headers) == 1, headers
    return headers[0].decode()


@pytest.mark.parametrize("path", ["/logs", "/usage", "/tokens", "/cache"])
async def test_pages_are_html_with_strict_csp(proxy, path):
    resp = await proxy.get(path)
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-cache"
    html = await resp.text()
    assert '<script type="module" src="/static/shell.js">' in html
    assert "<script>" not in html and "style=" not in html  # nothing inline for the CSP to block


async def test_root_redirects_to_logs(proxy):
    resp = await proxy.get("/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/logs"


@pytest.mark.parametrize(("name", "content_type"), [
    ("shell.js", "text/javascript"), ("i18n.js", "text/javascript"), ("logs.js", "text/javascript"),
    ("app.css", "text/css"), ("favicon.svg", "image/svg+xml"),
])
async def test_static_assets_are_typed_and_cacheable(proxy, name, content_type):
    resp = await proxy.get(f"/static/{name}")
    assert resp.status == 200
    assert resp.content_type == content_type
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert (UI_DIR / name).read_bytes() == await resp.read()
    etag = resp.headers.get("ETag")
    assert etag, "assets can be revalidated cheaply after max-age"
    again = await proxy.get(f"/static/{name}", headers={"If-None-Match": etag})
    assert again.status == 304


@pytest.mark.parametrize("path", ["/static/..%2Fproxy%2Fapp.py", "/static/nope.js", "/static/index.html",
                                  "/static/.hidden.js", "/static/x/../../pyproject.toml"])
async def test_static_serves_only_dashboard_assets(proxy, path):
    resp = await proxy.get(path)
    assert resp.status == 404
    assert "error" in await resp.json()


async def test_admin_sign_in_sets_httponly_strict_cookie_backed_by_redis(proxy, make_settings, redis_sync_client):
    resp = await proxy.post("/auth/session", json={"token": ADMIN_TOKEN})
    assert resp.status == 200
    assert await resp.json() == {"kind": "admin", "token_id": None, "name": "admin"}
    cookie = set_cookie_header(resp)
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure
    session_id = resp.cookies[SESSION_COOKIE].value
    assert ADMIN_TOKEN not in cookie and len(session_id) >= 40

    # Redis keeps the SHA-256 of the session id, never the id or the token
    key = session_key(make_settings().key_prefix, hash_secret(session_id))
    assert redis_sync_client.hgetall(key)["kind"] == "admin"
    assert 0 < redis_sync_client.ttl(key) <= 600

    me = await proxy.get("/auth/session")  # the test client's cookie jar sends the cookie
    assert me.status == 200 and (await me.json())["kind"] == "admin"
    assert me.headers["Cache-Control"] == "no-store"
    tokens = await proxy.get("/admin/tokens")
    assert tokens.status == 200, "the cookie authorises the admin API"

    out = await proxy.delete("/auth/session")
    assert out.status == 200
    assert f"{SESSION_COOKIE}=\"\"" in set_cookie_header(out) or "Max-Age=0" in set_cookie_header(out)
    assert redis_sync_client.exists(key) == 0
    # the old cookie value is worthless now, even if a client kept it
    proxy.session.cookie_jar.update_cookies({SESSION_COOKIE: session_id})
    assert (await proxy.get("/auth/session")).status == 401
    assert (await proxy.get("/admin/tokens")).status == 401


async def test_wrong_or_missing_token_is_refused_openai_style(proxy):
    bad = await proxy.post("/auth/session", json={"token": "sk-orc-0123456789abcdef-nope"})
    assert bad.status == 401
    body = await bad.json()
    assert body["error"]["type"] == "authentication_error" and body["error"]["message"]
    assert SESSION_COOKIE not in bad.cookies
    assert (await proxy.post("/auth/session", json={"token": "not even close"})).status == 401
    missing = await proxy.post("/auth/session", json={})
    assert missing.status == 400 and (await missing.json())["error"]["param"] == "token"
    assert (await proxy.post("/auth/session", data=b"[1]")).status == 400
    assert (await proxy.get("/auth/session")).status == 401


async def test_token_holder_session_sees_only_its_own_data(proxy):
    mine = await new_token(proxy, name="holder")
    other = await new_token(proxy, name="someone-else")
    resp = await proxy.post("/auth/session", json={"token": mine["token"]})
    assert resp.status == 200
    assert await resp.json() == {"kind": "token", "token_id": mine["id"], "name": "holder"}
    me = await (await proxy.get("/auth/session")).json()
    assert me["kind"] == "token" and me["token_id"] == mine["id"] and me["cache_mode"] == "off"

    assert (await proxy.get("/admin/tokens")).status == 401
    assert (await proxy.get("/admin/logs")).status == 401
    usage = await proxy.get("/api/tokens/usage-logs")
    assert usage.status == 200 and (await usage.json())["token_id"] == mine["id"]
    assert (await proxy.get("/api/tokens/usage-logs", params={"token_id": other["id"]})).status == 403
    assert (await proxy.get("/api/tokens/cache-stats")).status == 200


async def test_revoking_a_token_ends_its_browser_session(proxy):
    token = await new_token(proxy)
    assert (await proxy.post("/auth/session", json={"token": token["token"]})).status == 200
    assert (await proxy.get("/auth/session")).status == 200
    revoke = await proxy.delete(f"/admin/tokens/{token['id']}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert revoke.status == 200
    assert (await proxy.get("/auth/session")).status == 401
    # and a revoked token cannot start a new session
    assert (await proxy.post("/auth/session", json={"token": token["token"]})).status == 401


async def test_signing_in_again_replaces_the_old_session(proxy, make_settings, redis_sync_client):
    first = await proxy.post("/auth/session", json={"token": ADMIN_TOKEN})
    old_id = first.cookies[SESSION_COOKIE].value
    prefix = make_settings().key_prefix
    assert redis_sync_client.exists(session_key(prefix, hash_secret(old_id)))
    second = await proxy.post("/auth/session", json={"token": ADMIN_TOKEN})
    new_id = second.cookies[SESSION_COOKIE].value
    assert new_id != old_id
    assert not redis_sync_client.exists(session_key(prefix, hash_secret(old_id)))
    assert redis_sync_client.exists(session_key(prefix, hash_secret(new_id)))


# --- static checks on the shipped JS ----------------------------------------------------------------

def _dictionary(source: str, name: str) -> dict[str, str]:
    block = source.split(f"const {name} = {{", 1)[1].split("\n};", 1)[0]
    return dict(re.findall(r'^\s*"([^"]+)":\s*"((?:[^"\\]|\\.)*)",?$', block, flags=re.M))


def test_every_label_exists_in_english_and_chinese():
    source = (UI_DIR / "i18n.js").read_text()
    en, zh = _dictionary(source, "en"), _dictionary(source, "zh")
    assert len(en) > 150
    assert set(en) == set(zh), sorted(set(en) ^ set(zh))
    assert all(zh.values()), "no empty translations"
    used = set()
    for js in UI_DIR.glob("*.js"):
        used |= set(re.findall(r'\bt\("([a-z0-9_]+\.[a-z0-9_.]+)"', js.read_text()))
    assert used and used <= set(en), sorted(used - set(en))
    # the labels the product names exactly
    tokens = ["input", "output", "cached", "cache_write", "cache_read", "reasoning"]
    assert [en[f"tok.{k}"] for k in tokens] == ["Input", "Output", "Cached", "Cache Write", "Cache Read",
                                                 "Reasoning"]
    assert [zh[f"tok.{k}"] for k in tokens] == ["输入", "输出", "缓存命中", "缓存写入", "缓存读取", "推理"]
    assert (en["page.logs"], zh["page.logs"]) == ("Request Logs", "请求日志")
    assert (en["col.duration"], zh["col.duration"]) == ("Duration", "耗时")
    assert (en["page.usage"], en["page.tokens"], en["page.cache"]) == ("Usage Logs", "Tokens", "Cache")


def test_no_js_builds_html_from_strings():
    for js in UI_DIR.glob("*.js"):
        text = js.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, f"{js.name} uses {sink}"
        assert "localStorage.setItem" not in text or js.name in {"i18n.js", "widgets.js"}, js.name
