"""Typed application keys: every piece of state the app holds, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from proxy.settings import Settings

if TYPE_CHECKING:
    import asyncpg

    from cache.response_cache import ResponseCache
    from logstore.pricing import PricingTable
    from logstore.writer import LogWriter
    from proxy.auth import TokenAuthenticator
    from proxy.metrics import Metrics
    from proxy.presets import PresetStore
    from proxy.quotas import QuotaChecker
    from proxy.resp import Commands
    from proxy.upstream_client import UpstreamClient

__all__ = [
    "SETTINGS", "REDIS", "PG_POOL", "UPSTREAM", "AUTH", "LOG_WRITER", "PRICING", "RESPONSE_CACHE", "METRICS",
    "QUOTAS", "PRESETS", "REDIS_COMMANDS", "UPSTREAM_CLIENT",
]

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
REDIS_COMMANDS: web.AppKey[Commands] = web.AppKey("redis_commands")  # the request path's lean client
# calls of our own to the upstream (pricing, embeddings, generation stats)
UPSTREAM = web.AppKey("upstream_session", aiohttp.ClientSession)
UPSTREAM_CLIENT: web.AppKey[UpstreamClient] = web.AppKey("upstream_client")  # the relay's lean client
PG_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pg_pool")
AUTH: web.AppKey[TokenAuthenticator] = web.AppKey("auth")
LOG_WRITER: web.AppKey[LogWriter] = web.AppKey("log_writer")
PRICING: web.AppKey[PricingTable] = web.AppKey("pricing")
RESPONSE_CACHE: web.AppKey[ResponseCache] = web.AppKey("response_cache")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
QUOTAS: web.AppKey[QuotaChecker] = web.AppKey("quotas")
PRESETS: web.AppKey[PresetStore] = web.AppKey("presets")
