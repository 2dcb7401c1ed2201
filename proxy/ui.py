"""The dashboard: static pages from ``settings.ui_dir`` and the browser session endpoints.

The browser never keeps a token: ``POST /auth/session`` exchanges the admin token (or a proxy token) for a
random session id in an HttpOnly, SameSite=Strict cookie. Redis holds only the id's SHA-256
(``{prefix}:session:{sha}`` hash with ``kind`` and ``token_id``, expiring after ``session_ttl_seconds``), which
``proxy.auth.require_principal`` reads for every API call the pages make.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from proxy.admin_api import read_json_object
from proxy.auth import SESSION_COOKIE, require_principal
from proxy.errors import ProxyError, json_response
from proxy.keys import AUTH, REDIS, SETTINGS
from proxy.rediskeys import session_key
from proxy.tokens import hash_secret

__all__ = ["CONTENT_SECURITY_POLICY", "PAGES", "routes"]

routes = web.RouteTableDef()

PAGES = ("logs", "usage", "tokens", "cache")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
# no build step, so no hashed file names: a short max-age plus ETag/Last-Modified revalidation
_ASSET_CACHE = "public, max-age=300"
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}\.(?:js|css|svg|png|ico|woff2)")
_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}


def _ui_file(request: web.Request, name: str) -> Path:
    path = request.app[SETTINGS].ui_dir / name
    if not path.is_file():
        raise ProxyError(404, f"No dashboard file {name!r}.", "not_found")
    return path


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    # returned, not raised: the request middleware passes raised redirects on as deprecated return values
    return web.Response(status=302, headers={"Location": "/logs", **_COMMON_HEADERS})


async def page(request: web.Request) -> web.FileResponse:
    """Every page is the same shell; shell.js picks the page module from the path."""
    resp = web.FileResponse(_ui_file(request, "index.html"), headers={
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        **_COMMON_HEADERS,
    })
    return resp


for _name in PAGES:
    routes.get(f"/{_name}")(page)


@routes.get("/static/{name}")
async def static_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if _ASSET_NAME.fullmatch(name) is None or ".." in name:
        raise ProxyError(404, f"No dashboard file {name!r}.", "not_found")
    path = _ui_file(request, name)
    return web.FileResponse(path, headers={
        "Content-Type": _CONTENT_TYPES[path.suffix],
        "Cache-Control": _ASSET_CACHE,
        **_COMMON_HEADERS,
    })


def _session_redis_key(request: web.Request, session_id: str) -> str:
    return session_key(request.app[SETTINGS].key_prefix, hash_secret(session_id))


@routes.post("/auth/session")
async def sign_in(request: web.Request) -> web.Response:
    data = await read_json_object(request)
    secret = data.get("token")
    if not isinstance(secret, str) or not secret.strip():
        raise ProxyError(400, "Send {\"token\": \"<admin token or proxy token>\"}.", "invalid_parameter",
                         param="token")
    secret = secret.strip()
    auth = request.app[AUTH]
    if auth.is_admin_secret(secret):
        body = {"kind": "admin", "token_id": None, "name": "admin"}
    else:
        token = await auth.token_for_secret(secret)  # 401 for unknown or revoked tokens
        body = {"kind": "token", "token_id": token.id, "name": token.name}

    redis = request.app[REDIS]
    ttl = request.app[SETTINGS].session_ttl_seconds
    session_id = secrets.token_urlsafe(32)
    key = _session_redis_key(request, session_id)
    async with redis.pipeline(transaction=True) as pipe:
        old = request.cookies.get(SESSION_COOKIE)
        if old:  # signing in again replaces the old session rather than leaving it alive
            pipe.delete(_session_redis_key(request, old))
        pipe.hset(key, mapping={"kind": body["kind"], "token_id": body["token_id"] or "",
                                "created_at": datetime.now(UTC).isoformat(timespec="seconds")})
        pipe.expire(key, ttl)
        await pipe.execute()
    resp = json_response(body)
    resp.set_cookie(SESSION_COOKIE, session_id, max_age=ttl, path="/", httponly=True, samesite="Strict",
                    secure=request.secure)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@routes.get("/auth/session")
async def who_am_i(request: web.Request) -> web.Response:
    principal = await require_principal(request)
    if principal.is_admin:
        body = {"kind": "admin", "token_id": None, "name": "admin"}
    else:
        token = principal.token
        assert token is not None
        body = {"kind": "token", "token_id": token.id, "name": token.name, "cache_mode": token.cache_mode,
                "similarity_threshold": token.similarity_threshold}
    resp = json_response(body)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@routes.delete("/auth/session")
async def sign_out(request: web.Request) -> web.Response:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        await request.app[REDIS].delete(_session_redis_key(request, session_id))
    resp = json_response({"signed_out": True})
    resp.del_cookie(SESSION_COOKIE, path="/")
    resp.headers["Cache-Control"] = "no-store"
    return resp
