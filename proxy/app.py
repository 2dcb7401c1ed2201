"""The application factory: everything the proxy is, built from settings."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from cache.api import routes as cache_routes
from cache.response_cache import cache_ctx
from logstore.api import routes as logstore_routes
from logstore.db import postgres_ctx
from logstore.pricing import pricing_ctx
from logstore.writer import log_writer_ctx
from proxy import admin_api, ops, presets_api, ui, usage_api
from proxy.auth import auth_ctx
from proxy.forward import proxy_handler
from proxy.keys import METRICS, REDIS, REDIS_COMMANDS, SETTINGS
from proxy.metrics import Metrics
from proxy.middleware import request_middleware
from proxy.presets import presets_ctx
from proxy.quotas import quota_ctx, quota_headers
from proxy.resp import commands_for
from proxy.settings import Settings, SettingsError
from proxy.upstream import upstream_client_ctx, upstream_ctx

__all__ = ["create_app"]


def _redis_ctx(client: Redis | None):
    async def redis_ctx(app: web.Application):
        if client is not None:  # given to us: not ours to close
            app[REDIS] = client
            yield
            return
        url = app[SETTINGS].redis_url
        if not url:
            raise SettingsError("REDIS_URL is not set (orcache serve starts an embedded Redis when it is not)")
        redis = Redis.from_url(url, decode_responses=False, max_connections=1024,
                               socket_connect_timeout=2.0, health_check_interval=30)
        app[REDIS] = redis
        yield
        await redis.aclose()

    return redis_ctx


async def redis_commands_ctx(app: web.Application):
    """The lean pipelined client the request path uses (cache lookups and stores, token lookups)."""
    commands = commands_for(app[REDIS])
    app[REDIS_COMMANDS] = commands
    yield
    await commands.close()


def create_app(settings: Settings, *, redis: Redis | None = None, metrics: Metrics | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[request_middleware],
                          handler_args={"max_field_size": 16384})
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    # closed in reverse: the cache stops first, the log writer drains before the pool closes
    app.cleanup_ctx.extend([
        upstream_ctx, upstream_client_ctx, _redis_ctx(redis), redis_commands_ctx, auth_ctx, quota_ctx, presets_ctx,
        postgres_ctx, pricing_ctx, log_writer_ctx, cache_ctx,
    ])
    app.on_response_prepare.append(quota_headers)  # X-RateLimit-* on every response of a limited token
    app.add_routes(ops.routes)
    app.add_routes(admin_api.routes)
    app.add_routes(presets_api.routes)
    app.add_routes(usage_api.routes)
    app.add_routes(logstore_routes)
    app.add_routes(cache_routes)
    app.add_routes(ui.routes)
    for prefix in ("/v1", "/api/v1"):
        app.router.add_route("*", prefix + "/{tail:.+}", proxy_handler)
    return app
