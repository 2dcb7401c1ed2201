"""``GET /api/tokens/me/usage``: a token holder's quotas this minute and this UTC month.

For each quota (``rpm``, ``tpm``, ``requests_per_month``, ``tokens_per_month``, ``cost_per_month``): the limit
(plan default or explicit; null when none), what was used in its current window, what remains and when the
window resets. Counters come from Redis (the ones enforcement uses, kept only for tokens with a limit);
the month's total cost and savings (response cache and provider prompt cache) come from Postgres when the
log database is there. The admin may ask about any token with ``?token_id=``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from logstore.savings import provider_cache_savings, token_totals
from proxy.auth import require_principal
from proxy.errors import ProxyError, json_response
from proxy.keys import PG_POOL, PRICING, QUOTAS, REDIS, SETTINGS
from proxy.token_options import options_of
from proxy.tokens import Token, TokenStore

__all__ = ["routes"]

log = structlog.get_logger("orcache.usage")
routes = web.RouteTableDef()


async def _token(request: web.Request) -> Token:
    principal = await require_principal(request)
    if not principal.is_admin:
        assert principal.token is not None
        asked = request.query.get("token_id")
        if asked and asked != principal.token.id:
            raise ProxyError(403, "A token can only read its own usage.", "permission_denied", param="token_id")
        return principal.token
    tid = request.query.get("token_id", "")
    if not tid:
        raise ProxyError(400, "The admin must name the token: ?token_id=...", "invalid_parameter", param="token_id")
    token = await TokenStore(request.app[REDIS], request.app[SETTINGS].key_prefix).get(tid)
    if token is None:
        raise ProxyError(404, f"No token with id {tid!r}.", "token_not_found", param="token_id")
    return token


async def _month_from_postgres(request: web.Request, token_id: str, start: datetime, end: datetime
                               ) -> dict[str, Any] | None:
    pool = request.app.get(PG_POOL)
    if pool is None:
        return None
    first, last = start.date(), (end - timedelta(days=1)).date()
    try:
        totals = await token_totals(pool, token_id, first, last)
        provider = await provider_cache_savings(pool, first, last, token_id, request.app.get(PRICING))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("usage_month_unavailable", error=str(exc))
        return None
    return {**totals, "provider_prompt_cache": provider}


@routes.get("/api/tokens/me/usage")
async def my_usage(request: web.Request) -> web.Response:
    token = await _token(request)
    limits = options_of(token.extra).limits
    decision = await request.app[QUOTAS].counters(token.id, limits)
    w = decision.windows
    start, end = datetime.fromtimestamp(w.month_start, UTC), datetime.fromtimestamp(w.month_reset, UTC)
    quotas = decision.quotas()
    month = await _month_from_postgres(request, token.id, start, end)
    if limits is None and month is not None:
        # no limits: Redis keeps no counters for this token; the month's usage comes from the log
        for name, used in (("requests_per_month", month["upstream_requests"]), ("tokens_per_month", month["tokens"]),
                           ("cost_per_month", month["cost"])):
            quotas[name]["used"] = used
    redis_cost = decision.used[4]
    body = {
        "token_id": token.id,
        "plan": dict(token.extra).get("plan") or None,
        "month": w.month,
        "period_start": start,
        "resets_at": end,
        "quotas": quotas,
        "limited": limits is not None,
        "cost": month["cost"] if month is not None else redis_cost,
        "requests": month["requests"] if month is not None else decision.used[2],
        "tokens": month["tokens"] if month is not None else decision.used[3],
        "cache_savings": {
            "response_cache": month["saved_cost"] if month is not None else None,
            "response_cache_hits": month["cache_hits"] if month is not None else None,
            "provider_prompt_cache": month["provider_prompt_cache"]["net_savings"] if month is not None else None,
        },
        "source": {"quotas": "redis", "month": "postgres" if month is not None else "redis"},
    }
    return json_response(body)
