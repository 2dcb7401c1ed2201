"""Operational endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.errors import json_response
from proxy.keys import LOG_WRITER, METRICS, PG_POOL, REDIS, RESPONSE_CACHE, SETTINGS
from proxy.metrics import render_metrics
from proxy.openapi import openapi_document
from proxy.settings import OPENROUTER_BASE_URL

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    checks: dict[str, dict[str, object]] = {}
    try:
        async with asyncio.timeout(1.0):
            await app[REDIS].ping()
        checks["redis"] = {"ok": True}
    except Exception as exc:  # readiness reports failures, it does not raise them
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
    pool = app.get(PG_POOL)
    if not settings.logging_enabled:
        checks["postgres"] = {"ok": True, "detail": "logging disabled"}
    elif pool is None:
        checks["postgres"] = {"ok": False, "error": "not connected yet"}
    else:
        try:
            async with asyncio.timeout(1.0):
                await pool.fetchval("SELECT 1")
            checks["postgres"] = {"ok": True}
        except Exception as exc:
            checks["postgres"] = {"ok": False, "error": type(exc).__name__}
    needs_key = settings.upstream_url.rstrip("/") == OPENROUTER_BASE_URL
    checks["upstream"] = {
        "ok": bool(settings.openrouter_api_key) or not needs_key,
        "url": settings.upstream_url,
        **({"error": "OPENROUTER_API_KEY is not set"} if needs_key and not settings.openrouter_api_key else {}),
    }
    writer = app.get(LOG_WRITER)
    if writer is not None:
        checks["log_queue"] = {"ok": True, "depth": getattr(writer, "queued", 0),
                               "dropped": getattr(writer, "dropped_rows", 0)}
    ready = all(c["ok"] for c in checks.values())
    return web.Response(status=200 if ready else 503, body=json_response(checks).body,
                        content_type="application/json")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    writer = request.app.get(LOG_WRITER)
    if writer is not None:
        m.log_queue.set(getattr(writer, "queued", 0))
        m.log_written.set(getattr(writer, "written_rows", 0))
        m.log_spooled.set(getattr(writer, "spooled_rows", 0))
        m.log_dropped.set(getattr(writer, "dropped_rows", 0))
    cache = request.app.get(RESPONSE_CACHE)
    if cache is not None:
        m.sync_cache_errors(getattr(cache, "errors", 0))
    body, content_type = render_metrics(m)
    return web.Response(body=body, headers={"Content-Type": content_type})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
