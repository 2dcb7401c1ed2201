"""Admin API for proxy tokens: create, list, show, change cache settings, revoke."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.auth import require_admin, require_token
from proxy.errors import ProxyError, json_response
from proxy.keys import AUTH, REDIS, SETTINGS
from proxy.tokens import CACHE_HELP, TokenStore, TokenValidationError

__all__ = ["routes", "read_json_object"]

routes = web.RouteTableDef()


async def read_json_object(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as exc:
        raise ProxyError(400, f"Request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise ProxyError(400, "Request body must be a JSON object.", "invalid_json")
    return data


def _store(request: web.Request) -> TokenStore:
    return TokenStore(request.app[REDIS], request.app[SETTINGS].key_prefix)


def _invalid(exc: TokenValidationError) -> ProxyError:
    return ProxyError(400, str(exc), "invalid_parameter", param=exc.param)


@routes.post("/admin/tokens")
async def create_token(request: web.Request) -> web.Response:
    await require_admin(request)
    data = await read_json_object(request)
    try:
        token, secret = await _store(request).create(data)
    except TokenValidationError as exc:
        raise _invalid(exc) from None
    body = token.public()
    body["token"] = secret
    body["warning"] = "Store this token now: it is shown only once and cannot be recovered."
    body["cache_help"] = CACHE_HELP
    return json_response(body, status=201)


@routes.get("/admin/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    await require_admin(request)
    include_revoked = request.query.get("include_revoked", "true").lower() not in {"0", "false", "no"}
    tokens = await _store(request).list(include_revoked=include_revoked)
    return json_response({"items": [t.public() for t in reversed(tokens)], "total": len(tokens)})


def _not_found(request: web.Request) -> ProxyError:
    return ProxyError(404, f"No token with id {request.match_info['token_id']!r}.", "token_not_found")


async def _get_or_404(request: web.Request):
    token = await _store(request).get(request.match_info["token_id"])
    if token is None:
        raise _not_found(request)
    return token


@routes.get("/admin/tokens/{token_id}")
async def show_token(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response((await _get_or_404(request)).public())


@routes.patch("/admin/tokens/{token_id}")
async def update_token(request: web.Request) -> web.Response:
    await require_admin(request)
    data = await read_json_object(request)
    try:
        token = await _store(request).update(request.match_info["token_id"], data)
    except TokenValidationError as exc:
        raise _invalid(exc) from None
    if token is None:
        raise _not_found(request)
    request.app[AUTH].forget()
    return json_response(token.public())


@routes.delete("/admin/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    await require_admin(request)
    token = await _store(request).revoke(request.match_info["token_id"])
    if token is None:
        raise _not_found(request)
    request.app[AUTH].forget()
    return json_response(token.public())


@routes.get("/api/tokens/me")
async def whoami(request: web.Request) -> web.Response:
    """A token holder's own record (no secret): lets SDK users check their cache settings."""
    token = await require_token(request)
    return json_response(token.public())
