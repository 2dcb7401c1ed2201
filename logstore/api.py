"""HTTP handlers for the logs, usage and analytics APIs (``routes``; the app adds them).

Admin only: ``GET /admin/logs``, ``GET /admin/logs/{request_id}``, ``GET /admin/analytics/...``.
Admin or token holder: ``GET /api/tokens/usage-logs`` and ``GET /api/tokens/cache-stats`` (a token holder
only ever sees its own token: the token id goes into the SQL, whatever the query string says).

Every query parameter is validated; a bad value is a 400 naming it (``error.param``). Empty values count
as absent, so a dashboard form can send every field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from logstore import queries
from logstore.queries import DayRange, LogCursor, LogFilters
from logstore.rows import CACHE_STATUSES
from logstore.savings import provider_cache_savings
from proxy.auth import require_admin, require_principal
from proxy.errors import ProxyError, json_response
from proxy.keys import PG_POOL, PRICING

__all__ = ["routes"]

routes = web.RouteTableDef()

MAX_PAGE_SIZE = 200
MAX_PAGE = 10_000_000
_RANGES = {"1day": 1, "7days": 7, "30days": 30, "90days": 90, "all": None}
_STATUSES = ("success", "error", "cached")
_MAX_TEXT = 256
T = TypeVar("T")


def _bad(param: str, message: str) -> ProxyError:
    return ProxyError(400, message, "invalid_parameter", param=param)


def _pool(request: web.Request) -> asyncpg.Pool:
    pool = request.app.get(PG_POOL)
    if pool is None:
        raise ProxyError(503, "The log database is not configured or not reachable yet.", "logstore_unavailable")
    return pool


async def _db(awaitable: Awaitable[T]) -> T:
    """Database outages are a 503 the client can retry, not a 500."""
    try:
        return await awaitable
    except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError, asyncpg.UndefinedTableError) as exc:
        raise ProxyError(503, f"The log database is not available ({type(exc).__name__}).",
                         "logstore_unavailable") from exc


# --- parameter parsing -------------------------------------------------------------------------------

def _str(q: Mapping[str, str], name: str) -> str | None:
    value = q.get(name)
    if value is None or value.strip() == "":
        return None
    if len(value) > _MAX_TEXT:
        raise _bad(name, f"{name} is too long (at most {_MAX_TEXT} characters).")
    return value


def _int(q: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = _str(q, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, f"{name} must be an integer between {lo} and {hi}.") from None
    if not lo <= value <= hi:
        raise _bad(name, f"{name} must be an integer between {lo} and {hi}.")
    return value


def _datetime(q: Mapping[str, str], name: str) -> datetime | None:
    raw = _str(q, name)
    if raw is None:
        return None
    try:
        if raw.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(raw), tz=UTC)
        # a "+01:00" offset arrives as " 01:00" when the client did not URL-encode the plus
        value = datetime.fromisoformat(raw.replace(" ", "+") if "T" in raw else raw)
    except (ValueError, OverflowError, OSError):
        raise _bad(name, f"{name} must be an ISO 8601 date-time, e.g. 2025-01-31T12:00:00Z.") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _date(q: Mapping[str, str], name: str) -> date | None:
    raw = _str(q, name)
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            return date.fromisoformat(raw)
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad(name, f"{name} must be a date, YYYY-MM-DD.") from None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC).date()


def _choice(q: Mapping[str, str], name: str, allowed: tuple[str, ...] | Mapping[str, Any]) -> str | None:
    raw = _str(q, name)
    if raw is None:
        return None
    if raw not in allowed:
        raise _bad(name, f"{name} must be one of: {', '.join(allowed)}.")
    return raw


def _paging(q: Mapping[str, str], default_size: int = 20, max_size: int = MAX_PAGE_SIZE) -> tuple[int, int]:
    page = _int(q, "page", 1, 1, MAX_PAGE)
    size = _int(q, "page_size", default_size, 1, max_size)
    assert page is not None and size is not None
    return page, size


def _cursor(q: Mapping[str, str]) -> LogCursor | None:
    raw = _str(q, "cursor")
    if raw is None:
        return None
    try:
        return LogCursor.decode(raw)
    except ValueError:
        raise _bad("cursor", "cursor must be a next_cursor or prev_cursor from an earlier page.") from None


def log_filters(q: Mapping[str, str], now: datetime | None = None) -> LogFilters:
    """Validate the /admin/logs query string (400 naming the parameter on a bad value)."""
    now = now or datetime.now(UTC)
    start, end = _datetime(q, "start_time"), _datetime(q, "end_time")
    range_name = _choice(q, "range", _RANGES)
    if range_name is not None and _RANGES[range_name] is not None:
        since = now - timedelta(days=_RANGES[range_name])
        start = since if start is None else max(start, since)
    if start is not None and end is not None and start > end and _str(q, "start_time") is not None:
        raise _bad("start_time", "start_time must not be after end_time.")
    return LogFilters(
        token_id=_str(q, "api_key_id") or _str(q, "token_id"),
        upstream_id=_str(q, "upstream_id"),
        status_code=_int(q, "status_code", None, 100, 599),
        start_time=start,
        end_time=end,
        model=_str(q, "model"),
        provider=_str(q, "provider"),
        cache_status=_choice(q, "cache", CACHE_STATUSES),
        status=_choice(q, "status", _STATUSES),
        agent_type=_str(q, "agent_type"),
        project_id=_str(q, "project_id"),
        run_id=_str(q, "run_id"),
        query_id=_str(q, "query_id"),
    )


def day_range(q: Mapping[str, str], default: str = "30days", today: date | None = None) -> DayRange:
    """``start_date``/``end_date`` (inclusive, UTC), ``date`` for one day, else ``range`` (N calendar days
    ending today: ``1day`` is today, ``7days`` today and the six before)."""
    today = today or datetime.now(UTC).date()
    one = _date(q, "date")
    if one is not None:
        return DayRange(one, one)
    start, end = _date(q, "start_date"), _date(q, "end_date")
    range_name = _choice(q, "range", _RANGES)
    if start is None and end is None:
        days = _RANGES[range_name or default]
        return DayRange(None if days is None else today - timedelta(days=days - 1), None)
    if start is not None and end is not None and start > end:
        raise _bad("start_date", "start_date must not be after end_date.")
    return DayRange(start, end)


def _range_json(days: DayRange) -> dict[str, Any]:
    return {"start_date": days.start, "end_date": days.end}


async def _scoped_token(request: web.Request) -> str | None:
    """The token whose data the caller may see: a token holder its own; the admin any (or all)."""
    principal = await require_principal(request)
    asked = _str(request.query, "token_id") or _str(request.query, "api_key_id")
    if principal.is_admin:
        return asked
    assert principal.token is not None
    if asked is not None and asked != principal.token.id:
        raise ProxyError(403, "A token can only read its own usage.", "permission_denied", param="token_id")
    return principal.token.id


# --- handlers ----------------------------------------------------------------------------------------

@routes.get("/admin/logs")
async def admin_logs(request: web.Request) -> web.Response:
    await require_admin(request)
    q = request.query
    page, page_size = _paging(q)
    filters, cursor = log_filters(q), _cursor(q)
    return json_response(await _db(queries.list_logs(_pool(request), filters, page, page_size, cursor)))


@routes.get("/admin/logs/{request_id}")
async def admin_log(request: web.Request) -> web.Response:
    await require_admin(request)
    request_id = request.match_info["request_id"]
    row = await _db(queries.get_log(_pool(request), request_id))
    if row is None:
        raise ProxyError(404, f"No log entry for request id {request_id!r}.", "not_found", param="request_id")
    return json_response(row)


@routes.get("/api/tokens/usage-logs")
async def usage_logs(request: web.Request) -> web.Response:
    token_id = await _scoped_token(request)
    q = request.query
    page, page_size = _paging(q, default_size=100, max_size=1000)
    days = day_range(q)
    result = await _db(queries.usage_logs(_pool(request), days, token_id=token_id, model=_str(q, "model"),
                                          provider=_str(q, "provider"), page=page, page_size=page_size))
    return json_response({**result, "token_id": token_id, **_range_json(days)})


@routes.get("/api/tokens/cache-stats")
async def token_cache_stats(request: web.Request) -> web.Response:
    token_id = await _scoped_token(request)
    days = day_range(request.query)
    stats = await _db(queries.cache_stats(_pool(request), days, token_id))
    # the provider's prompt cache, apart from the proxy's own response cache (saved_cost)
    stats["provider_prompt_cache"] = await _db(provider_cache_savings(
        _pool(request), days.start, days.end, token_id, request.app.get(PRICING)))
    return json_response({"token_id": token_id, **_range_json(days), **stats})


@routes.get("/admin/analytics/summary")
async def analytics_summary(request: web.Request) -> web.Response:
    await require_admin(request)
    q = request.query
    days = day_range(q)
    token_id = _str(q, "token_id")
    return json_response({**_range_json(days), "token_id": token_id,
                  **await _db(queries.analytics_summary(_pool(request), days, token_id))})


@routes.get("/admin/analytics/daily")
async def analytics_daily(request: web.Request) -> web.Response:
    await require_admin(request)
    q = request.query
    days = day_range(q)
    if days.end is None and days.start is not None:
        days = DayRange(days.start, datetime.now(UTC).date())  # a trend has every day up to today
    data = await _db(queries.analytics_daily(_pool(request), days, _str(q, "token_id")))
    return json_response({**_range_json(days), "data": data})


@routes.get("/admin/analytics/top-tokens")
async def analytics_top_tokens(request: web.Request) -> web.Response:
    await require_admin(request)
    q = request.query
    days = day_range(q)
    limit = _int(q, "limit", 10, 1, 100)
    assert limit is not None
    top = await _db(queries.analytics_top_tokens(_pool(request), days, limit))
    return json_response({**_range_json(days), "data": top})


@routes.get("/admin/analytics/models")
async def analytics_models(request: web.Request) -> web.Response:
    await require_admin(request)
    q = request.query
    days = day_range(q)
    limit = _int(q, "limit", 100, 1, 1000)
    assert limit is not None
    data = await _db(queries.analytics_models(_pool(request), days, _str(q, "token_id"), limit))
    return json_response({**_range_json(days), "data": data})


@routes.get("/admin/analytics/cache")
async def analytics_cache(request: web.Request) -> web.Response:
    await require_admin(request)
    q = request.query
    days = day_range(q)
    token_id = _str(q, "token_id")
    stats = await _db(queries.cache_stats(_pool(request), days, token_id))
    # the provider's prompt cache, apart from the proxy's own response cache (saved_cost)
    stats["provider_prompt_cache"] = await _db(provider_cache_savings(
        _pool(request), days.start, days.end, token_id, request.app.get(PRICING)))
    return json_response({**_range_json(days), "token_id": token_id, **stats})


@routes.get("/admin/analytics/cache/evolution")
async def analytics_cache_evolution(request: web.Request) -> web.Response:
    await require_admin(request)
    q = request.query
    run_id, query_id = _str(q, "run_id"), _str(q, "query_id")
    if run_id is None and query_id is None:
        raise _bad("run_id", "Give run_id or query_id.")
    data = await _db(queries.cache_evolution(_pool(request), run_id=run_id, query_id=query_id,
                                             token_id=_str(q, "token_id")))
    return json_response({"run_id": run_id, "query_id": query_id, "data": data})


@routes.get("/admin/analytics/cache/top-savings")
async def analytics_cache_top_savings(request: web.Request) -> web.Response:
    await require_admin(request)
    q = request.query
    days = day_range(q)
    limit = _int(q, "limit", 20, 1, 200)
    assert limit is not None
    start = None if days.start is None else datetime.combine(days.start, datetime.min.time(), tzinfo=UTC)
    end = None if days.end is None else datetime.combine(days.end + timedelta(days=1), datetime.min.time(),
                                                         tzinfo=UTC)
    data = await _db(queries.cache_top_savings(_pool(request), start_time=start, end_time=end, limit=limit,
                                               token_id=_str(q, "token_id")))
    return json_response({**_range_json(days), "data": data})
