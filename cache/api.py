"""Admin endpoints of the response cache (admin token or admin session only).

  GET    /admin/cache/stats                 {"scopes": [{scope, token_id?, entries, bytes}], "counters"}
  DELETE /admin/cache/tokens/{token_id}     purge that token's private scope -> {"deleted": n}
  DELETE /admin/cache/scopes/{scope}        purge any scope, e.g. "shared:team" -> {"deleted": n}
  DELETE /admin/cache/entries/{entry_id}    one entry -> {"deleted": 1}, or 404
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from cache.response_cache import CacheUnavailable, ResponseCache
from proxy.auth import require_admin
from proxy.errors import ProxyError, json_response
from proxy.keys import RESPONSE_CACHE

__all__ = ["routes"]

routes = web.RouteTableDef()
T = TypeVar("T")


def _cache(request: web.Request) -> ResponseCache:
    cache = request.app.get(RESPONSE_CACHE)
    if cache is None:
        raise ProxyError(503, "The response cache is not enabled.", "cache_disabled")
    return cache


async def _call(op: Awaitable[T]) -> T:
    try:
        return await op
    except CacheUnavailable as exc:
        raise ProxyError(503, str(exc), "cache_unavailable") from None


@routes.get("/admin/cache/stats")
async def cache_stats(request: web.Request) -> web.Response:
    await require_admin(request)
    cache = _cache(request)
    scopes = await _call(cache.stats())
    return json_response({"scopes": scopes, "counters": cache.counters(), "semantic_ready": cache.semantic_ready})


@routes.delete("/admin/cache/tokens/{token_id}")
async def purge_token(request: web.Request) -> web.Response:
    await require_admin(request)
    deleted = await _call(_cache(request).purge_scope(f"token:{request.match_info['token_id']}"))
    return json_response({"deleted": deleted})


@routes.delete("/admin/cache/scopes/{scope}")
async def purge_scope(request: web.Request) -> web.Response:
    await require_admin(request)
    scope = request.match_info["scope"]
    if not scope.startswith(("token:", "shared:")):
        raise ProxyError(400, "A scope is 'token:<id>' or 'shared:<name>'.", "invalid_scope", param="scope")
    deleted = await _call(_cache(request).purge_scope(scope))
    return json_response({"deleted": deleted})


@routes.delete("/admin/cache/entries/{entry_id}")
async def delete_entry(request: web.Request) -> web.Response:
    await require_admin(request)
    if not await _call(_cache(request).delete_entry(request.match_info["entry_id"])):
        raise ProxyError(404, "No cache entry with this id.", "entry_not_found", param="entry_id")
    return json_response({"deleted": 1})
