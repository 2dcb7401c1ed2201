"""Read side: the SQL behind the logs, usage and analytics APIs.

Everything is parameterised; filters map to SQL through fixed templates (never user text). Aggregates read
the ``usage_daily`` rollup; only the per-iteration cache evolution and the top savings read raw rows, through
their partial indexes.

Totals for ``/admin/logs`` (``count(*)`` over millions of rows is too slow):

* When every filter is a rollup dimension (token, upstream, status code, model, provider, cache status,
  status, time), the total is exact and cheap: the rollup's sum over the whole UTC days inside the window,
  plus an indexed ``count(*)`` of raw rows for the partial days at its edges (at most two days).
* With a tag filter (agent_type, project_id, run_id, query_id) the count is exact up to ``COUNT_CAP``
  rows and capped there, with ``total_exact: false``.

Paging ``/admin/logs``: ``page=N`` skips ``(N - 1) * page_size`` index entries, which costs time in
proportion to the depth (and a heap visit per skipped entry on pages the visibility map does not yet mark
all-visible: the newest rows, until autovacuum has been through them). Each page therefore also carries
keyset cursors, ``next_cursor`` (older rows) and ``prev_cursor`` (newer rows): a page asked for by cursor is
an index range scan starting at that row, as cheap at page 5,000 as at page 1.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg

from logstore.rows import COLUMNS
from logstore.writer import ROLLUP_KEYS, ROLLUP_SELECT, ROLLUP_SUMS, ROLLUP_UPSERT

__all__ = [
    "COUNT_CAP",
    "DayRange",
    "LogCursor",
    "LogFilters",
    "analytics_daily",
    "analytics_models",
    "analytics_summary",
    "analytics_top_tokens",
    "cache_evolution",
    "cache_stats",
    "cache_top_savings",
    "count_logs",
    "get_log",
    "list_logs",
    "rebuild_rollup",
    "usage_logs",
]

COUNT_CAP = 10_000
HITS = "('exact', 'semantic')"
# cache_discount is not written by the writer (enrichment fills it later), so it is not in COLUMNS
_LIST_COLUMNS = ("id",) + tuple(c for c in COLUMNS if c not in ("request_body", "response_body")) + (
    "cache_discount",)
_DETAIL_COLUMNS = ("id",) + COLUMNS + ("cache_discount",)


@dataclass(frozen=True, slots=True)
class LogFilters:
    token_id: str | None = None
    upstream_id: str | None = None
    status_code: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None  # inclusive
    model: str | None = None
    provider: str | None = None
    cache_status: str | None = None
    status: str | None = None  # success | error | cached
    agent_type: str | None = None
    project_id: str | None = None
    run_id: str | None = None
    query_id: str | None = None

    @property
    def uses_tags(self) -> bool:
        return any(getattr(self, f) is not None for f in ("agent_type", "project_id", "run_id", "query_id"))


@dataclass(frozen=True, slots=True)
class LogCursor:
    """A position in the newest-first order: the page of rows just older (``older``) or just newer than
    the row (created_at, id). Clients see it as an opaque URL-safe string."""
    older: bool
    created_at: datetime
    id: int

    def encode(self) -> str:
        text = f"{'o' if self.older else 'n'}|{self.created_at.astimezone(UTC).isoformat()}|{self.id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> LogCursor:
        """The cursor in ``value``; ValueError when it is not one this module made."""
        try:
            text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            direction, created_at, row_id = text.split("|")
            when = datetime.fromisoformat(created_at)
            if direction not in ("o", "n") or when.tzinfo is None:
                raise ValueError(value)
            return cls(direction == "o", when, int(row_id))
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"not a log cursor: {value!r}") from exc


@dataclass(frozen=True, slots=True)
class DayRange:
    """Inclusive UTC days; None means unbounded on that side."""
    start: date | None = None
    end: date | None = None


class _Where:
    """SQL conditions and their arguments; templates are constants, values are always parameters."""

    def __init__(self, args: list[Any] | None = None) -> None:
        self.args: list[Any] = args if args is not None else []
        self.clauses: list[str] = []

    def add(self, template: str, value: Any) -> None:
        self.args.append(value)
        self.clauses.append(template.replace("?", f"${len(self.args)}"))

    def raw(self, clause: str) -> None:
        self.clauses.append(clause)

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "TRUE"

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


# filter field -> raw-table condition
_RAW_EQ = {"token_id": "token_id = ?", "upstream_id": "upstream_id = ?", "status_code": "status_code = ?",
           "model": "model = ?", "provider": "provider = ?", "cache_status": "cache_status = ?",
           "agent_type": "agent_type = ?", "project_id": "project_id = ?", "run_id": "run_id = ?",
           "query_id": "query_id = ?"}
_ROLLUP_EQ = {"token_id": "token_id = ?", "upstream_id": "upstream_id = ?", "status_code": "status_code = ?",
              "model": "model = ?", "provider": "provider = ?", "cache_status": "cache_status = ?"}
_STATUS_RAW = {"success": "success", "error": "NOT success", "cached": f"cache_status IN {HITS}"}


def _raw_where(f: LogFilters, *, with_time: bool = True) -> _Where:
    w = _Where()
    for name, template in _RAW_EQ.items():
        value = getattr(f, name)
        if value is not None:
            w.add(template, value)
    if f.status is not None:
        w.raw(_STATUS_RAW[f.status])
    # implied predicates that let the planner use the partial indexes for errors and cache hits
    if f.status_code is not None and f.status_code >= 400 and f.status != "error":
        w.raw(_STATUS_RAW["error"])
    if f.cache_status in ("exact", "semantic") and f.status != "cached":
        w.raw(_STATUS_RAW["cached"])
    if with_time:
        if f.start_time is not None:
            w.add("created_at >= ?", f.start_time)
        if f.end_time is not None:
            w.add("created_at <= ?", f.end_time)
    return w


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(), tzinfo=UTC)


def _record(r: asyncpg.Record) -> dict[str, Any]:
    return dict(r.items())


async def count_logs(pool: asyncpg.Pool, f: LogFilters) -> tuple[int, bool]:
    """(total, exact): see the module docstring for how."""
    if f.uses_tags:
        w = _raw_where(f)
        n = await pool.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM request_logs WHERE {w.sql()} LIMIT {COUNT_CAP + 1}) t", *w.args)
        return min(n, COUNT_CAP), n <= COUNT_CAP

    start, end = f.start_time, f.end_time
    if start is not None and end is not None and start > end:
        return 0, True
    # whole UTC days inside [start, end]: first_day <= day < last_day
    first_day = None
    if start is not None:
        first_day = start.astimezone(UTC).date()
        if _midnight(first_day) < start:
            first_day += timedelta(days=1)
    last_day = None if end is None else end.astimezone(UTC).date()
    if first_day is not None and last_day is not None and first_day >= last_day:
        w = _raw_where(f)  # the window lies within two days: count it directly
        return await pool.fetchval(f"SELECT count(*) FROM request_logs WHERE {w.sql()}", *w.args), True

    rw = _Where()
    for name, template in _ROLLUP_EQ.items():
        value = getattr(f, name)
        if value is not None:
            rw.add(template, value)
    measure = "requests"
    if f.status == "success":
        measure = "requests - errors"
    elif f.status == "error":
        measure = "errors"
    elif f.status == "cached":
        rw.raw(f"cache_status IN {HITS}")
    if first_day is not None:
        rw.add("day >= ?", first_day)
    if last_day is not None:
        rw.add("day < ?", last_day)
    parts = [pool.fetchval(f"SELECT coalesce(sum({measure}), 0)::int8 FROM usage_daily WHERE {rw.sql()}",
                           *rw.args)]
    if start is not None and first_day is not None and _midnight(first_day) > start:
        w = _raw_where(f, with_time=False)
        w.add("created_at >= ?", start)
        w.add("created_at < ?", _midnight(first_day))
        parts.append(pool.fetchval(f"SELECT count(*) FROM request_logs WHERE {w.sql()}", *w.args))
    if end is not None and last_day is not None:
        w = _raw_where(f, with_time=False)
        w.add("created_at >= ?", _midnight(last_day))
        w.add("created_at <= ?", end)
        parts.append(pool.fetchval(f"SELECT count(*) FROM request_logs WHERE {w.sql()}", *w.args))
    counts = await asyncio.gather(*parts)
    return int(sum(counts)), True


async def list_logs(pool: asyncpg.Pool, f: LogFilters, page: int, page_size: int,
                    cursor: LogCursor | None = None) -> dict[str, Any]:
    """One page, newest first, with total, total_pages and the cursors of the pages either side.

    Without ``cursor`` the page is found by OFFSET; with one it starts next to the cursor's row and ``page``
    is only echoed (the client's own count). A ``prev_cursor`` page that comes up short has reached the
    newest rows: the first page is returned instead, with ``page`` 1 (as is a full one with nothing newer).
    """
    offset = (page - 1) * page_size
    (total, exact), (rows, more) = await asyncio.gather(
        count_logs(pool, f), _page_rows(pool, f, page_size, offset if cursor is None else 0, cursor))
    if cursor is None:
        has_newer, has_older = page > 1, more
    elif cursor.older or more:
        has_newer, has_older = True, more or not cursor.older
    else:  # nothing newer beyond these rows: they are the first page (fetched whole if they came up short)
        page, offset, has_newer, has_older = 1, 0, False, True
        if len(rows) < page_size:
            rows, has_older = await _page_rows(pool, f, page_size, 0, None)
    if exact is False:
        total = max(total, offset + len(rows))
    first, last = (rows[0], rows[-1]) if rows else (None, None)
    return {
        "items": [_record(r) for r in rows],
        "total": total,
        "total_exact": exact,
        "page": page,
        "page_size": page_size,
        "total_pages": math.ceil(total / page_size) if total else 0,
        "next_cursor": LogCursor(True, last["created_at"], last["id"]).encode() if last and has_older else None,
        "prev_cursor": LogCursor(False, first["created_at"], first["id"]).encode() if first and has_newer else None,
    }


async def _page_rows(pool: asyncpg.Pool, f: LogFilters, page_size: int, offset: int, cursor: LogCursor | None
                     ) -> tuple[list[asyncpg.Record], bool]:
    """(rows newest first, whether there are more beyond them in the direction read)."""
    w = _raw_where(f)
    newer = cursor is not None and not cursor.older
    if cursor is not None:
        # a row comparison is an index condition on every (..., created_at, id) index
        w.raw(f"(created_at, id) {'>' if newer else '<'} ({w.param(cursor.created_at)}, {w.param(cursor.id)})")
    order = "ASC" if newer else "DESC"
    limit_p = w.param(page_size + 1)  # one more row says whether there is a page beyond this one
    skip = f" OFFSET {w.param(offset)}" if offset else ""
    # Deferred join: the id list comes from an index (often index-only) scan, then only the page's rows
    # are fetched, so deep pages do not drag every skipped row off the heap.
    sql = (f"SELECT {', '.join('r.' + c for c in _LIST_COLUMNS)} FROM request_logs r "
           f"JOIN (SELECT id, created_at FROM request_logs WHERE {w.sql()} "
           f"ORDER BY created_at {order}, id {order} LIMIT {limit_p}{skip}) k ON r.id = k.id "
           f"ORDER BY k.created_at {order}, k.id {order}")
    rows = await pool.fetch(sql, *w.args)
    more = len(rows) > page_size
    rows = rows[:page_size]
    return (rows[::-1] if newer else rows), more


async def get_log(pool: asyncpg.Pool, request_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT {', '.join(_DETAIL_COLUMNS)} FROM request_logs WHERE request_id = $1",
                              request_id)
    return _record(row) if row is not None else None


# --- rollup-based reads ------------------------------------------------------------------------------

def _day_where(days: DayRange, token_id: str | None, w: _Where | None = None) -> _Where:
    w = w or _Where()
    if days.start is not None:
        w.add("day >= ?", days.start)
    if days.end is not None:
        w.add("day <= ?", days.end)
    if token_id is not None:
        w.add("token_id = ?", token_id)
    return w


def _none_if_empty(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    for k in keys:
        if d.get(k) == "":
            d[k] = None
    return d


async def usage_logs(pool: asyncpg.Pool, days: DayRange, *, token_id: str | None, model: str | None,
                     provider: str | None, page: int, page_size: int) -> dict[str, Any]:
    """Daily usage in OpenRouter's activity shape (upstream calls only: cache hits made none)."""
    w = _day_where(days, token_id)
    w.raw(f"cache_status NOT IN {HITS}")
    if model is not None:
        w.add("model = ?", model)
    if provider is not None:
        w.add("provider = ?", provider)
    group = "day, model, model_permaslug, endpoint_id, provider"
    base = f"FROM usage_daily WHERE {w.sql()} GROUP BY {group}"
    count_sql = f"SELECT count(*) FROM (SELECT 1 {base}) g"
    args = list(w.args)
    limit_p, offset_p = w.param(page_size), w.param((page - 1) * page_size)
    sql = (f"SELECT day AS date, model, model_permaslug, endpoint_id, provider AS provider_name, "
           f"sum(cost) AS usage, sum(byok_cost) AS byok_usage_inference, sum(requests)::int8 AS requests, "
           f"sum(prompt_tokens)::int8 AS prompt_tokens, sum(completion_tokens)::int8 AS completion_tokens, "
           f"sum(reasoning_tokens)::int8 AS reasoning_tokens "
           f"{base} ORDER BY day DESC, usage DESC, model, provider, endpoint_id, model_permaslug "
           f"LIMIT {limit_p} OFFSET {offset_p}")
    total, rows = await asyncio.gather(pool.fetchval(count_sql, *args), pool.fetch(sql, *w.args))
    data = [_none_if_empty(_record(r), "model", "model_permaslug", "endpoint_id", "provider_name") for r in rows]
    return {"data": data, "total": total, "page": page, "page_size": page_size,
            "total_pages": math.ceil(total / page_size) if total else 0}


_TOTALS = f"""
    coalesce(sum(requests), 0)::int8 AS requests,
    coalesce(sum(errors), 0)::int8 AS errors,
    coalesce(sum(prompt_tokens), 0)::int8 AS prompt_tokens,
    coalesce(sum(completion_tokens), 0)::int8 AS completion_tokens,
    coalesce(sum(total_tokens), 0)::int8 AS total_tokens,
    coalesce(sum(reasoning_tokens), 0)::int8 AS reasoning_tokens,
    coalesce(sum(cached_tokens), 0)::int8 AS cached_tokens,
    coalesce(sum(cost), 0)::float8 AS cost,
    coalesce(sum(byok_cost), 0)::float8 AS byok_cost,
    coalesce(sum(requests) FILTER (WHERE cache_status IN {HITS}), 0)::int8 AS cache_hits,
    coalesce(sum(requests) FILTER (WHERE cache_status = 'exact'), 0)::int8 AS exact_hits,
    coalesce(sum(requests) FILTER (WHERE cache_status = 'semantic'), 0)::int8 AS semantic_hits,
    coalesce(sum(requests) FILTER (WHERE cache_status = 'miss'), 0)::int8 AS cache_misses,
    coalesce(sum(saved_cost), 0)::float8 AS saved_cost,
    coalesce(sum(saved_prompt_tokens + saved_completion_tokens), 0)::int8 AS saved_tokens,
    coalesce(sum(duration_ms), 0)::float8 AS duration_ms_sum,
    coalesce(sum(similarity), 0)::float8 AS similarity_sum
"""


def _finish(d: dict[str, Any]) -> dict[str, Any]:
    """Derived rates from the sums (hit rate over cacheable calls: hits / (hits + misses))."""
    requests = d.get("requests") or 0
    hits, misses = d.get("cache_hits") or 0, d.get("cache_misses") or 0
    d["success_rate"] = (requests - d.get("errors", 0)) / requests if requests else None
    d["cache_hit_rate"] = hits / (hits + misses) if hits + misses else None
    d["avg_duration_ms"] = d.pop("duration_ms_sum", 0.0) / requests if requests else None
    similarity_sum = d.pop("similarity_sum", 0.0)
    semantic = d.get("semantic_hits") or 0
    d["avg_similarity"] = similarity_sum / semantic if semantic else None
    return d


async def analytics_summary(pool: asyncpg.Pool, days: DayRange, token_id: str | None = None) -> dict[str, Any]:
    w = _day_where(days, token_id)
    row = await pool.fetchrow(
        f"SELECT {_TOTALS}, count(DISTINCT token_id) FILTER (WHERE token_id <> '') AS tokens, "
        f"count(DISTINCT model) FILTER (WHERE model <> '') AS models FROM usage_daily WHERE {w.sql()}", *w.args)
    return _finish(_record(row))


async def analytics_daily(pool: asyncpg.Pool, days: DayRange, token_id: str | None = None) -> list[dict[str, Any]]:
    w = _day_where(days, token_id)
    rows = await pool.fetch(f"SELECT day AS date, {_TOTALS} FROM usage_daily WHERE {w.sql()} "
                            f"GROUP BY day ORDER BY day", *w.args)
    out = [_finish(_record(r)) for r in rows]
    if days.start is not None and days.end is not None and (days.end - days.start).days <= 400:
        have = {d["date"]: d for d in out}
        zero = _finish(_record(await pool.fetchrow(f"SELECT {_TOTALS} FROM usage_daily WHERE FALSE")))
        out = []
        day = days.start
        while day <= days.end:
            out.append(have.get(day) or {"date": day, **zero})
            day += timedelta(days=1)
    return out


async def analytics_top_tokens(pool: asyncpg.Pool, days: DayRange, limit: int) -> list[dict[str, Any]]:
    w = _day_where(days, None)
    w.raw("token_id <> ''")
    limit_p = w.param(limit)
    rows = await pool.fetch(
        f"SELECT t.*, (SELECT token_name FROM request_logs r WHERE r.token_id = t.token_id "
        f"ORDER BY created_at DESC LIMIT 1) AS token_name "
        f"FROM (SELECT token_id, {_TOTALS} FROM usage_daily WHERE {w.sql()} GROUP BY token_id "
        f"ORDER BY cost DESC, requests DESC, token_id LIMIT {limit_p}) t "
        f"ORDER BY cost DESC, requests DESC, token_id", *w.args)
    return [_finish(_record(r)) for r in rows]


async def analytics_models(pool: asyncpg.Pool, days: DayRange, token_id: str | None = None,
                           limit: int = 100) -> list[dict[str, Any]]:
    w = _day_where(days, token_id)
    limit_p = w.param(limit)
    rows = await pool.fetch(
        f"SELECT model, {_TOTALS} FROM usage_daily WHERE {w.sql()} GROUP BY model "
        f"ORDER BY requests DESC, model LIMIT {limit_p}", *w.args)
    return [_finish(_none_if_empty(_record(r), "model")) for r in rows]


async def cache_stats(pool: asyncpg.Pool, days: DayRange, token_id: str | None = None) -> dict[str, Any]:
    """Hit rate, exact vs semantic, tokens and cost saved, overall and by model."""
    w = _day_where(days, token_id)
    total_sql = f"SELECT {_TOTALS} FROM usage_daily WHERE {w.sql()}"
    by_model_sql = (f"SELECT model, {_TOTALS} FROM usage_daily WHERE {w.sql()} GROUP BY model "
                    f"ORDER BY saved_cost DESC, cache_hits DESC, model LIMIT 100")
    by_status_sql = (f"SELECT cache_status, coalesce(sum(requests), 0)::int8 AS requests FROM usage_daily "
                     f"WHERE {w.sql()} GROUP BY cache_status")
    total, by_model, by_status = await asyncio.gather(
        pool.fetchrow(total_sql, *w.args), pool.fetch(by_model_sql, *w.args), pool.fetch(by_status_sql, *w.args))
    out = _finish(_record(total))
    out["by_status"] = {r["cache_status"]: r["requests"] for r in by_status}
    out["by_model"] = [_finish(_none_if_empty(_record(r), "model")) for r in by_model]
    return out


async def cache_evolution(pool: asyncpg.Pool, *, run_id: str | None = None, query_id: str | None = None,
                          token_id: str | None = None) -> list[dict[str, Any]]:
    """Per ``iteration`` of one run (or query): how the cache behaved as the agent repeated itself."""
    w = _Where()
    if run_id is not None:
        w.add("run_id = ?", run_id)
    if query_id is not None:
        w.add("query_id = ?", query_id)
    if token_id is not None:
        w.add("token_id = ?", token_id)
    rows = await pool.fetch(
        f"""SELECT iteration, count(*) AS requests,
            count(*) FILTER (WHERE cache_status IN {HITS}) AS cache_hits,
            count(*) FILTER (WHERE cache_status = 'exact') AS exact_hits,
            count(*) FILTER (WHERE cache_status = 'semantic') AS semantic_hits,
            count(*) FILTER (WHERE cache_status = 'miss') AS cache_misses,
            count(*) FILTER (WHERE NOT success) AS errors,
            coalesce(sum(prompt_tokens), 0)::int8 AS prompt_tokens,
            coalesce(sum(completion_tokens), 0)::int8 AS completion_tokens,
            coalesce(sum(cost), 0)::float8 AS cost,
            coalesce(sum(saved_cost), 0)::float8 AS saved_cost,
            coalesce(sum(saved_prompt_tokens + saved_completion_tokens), 0)::int8 AS saved_tokens,
            avg(similarity) FILTER (WHERE cache_status = 'semantic') AS avg_similarity,
            min(created_at) AS first_at, max(created_at) AS last_at
        FROM request_logs WHERE {w.sql()} GROUP BY iteration ORDER BY iteration NULLS LAST""", *w.args)
    out = []
    for r in rows:
        d = _record(r)
        cacheable = d["cache_hits"] + d["cache_misses"]
        d["cache_hit_rate"] = d["cache_hits"] / cacheable if cacheable else None
        out.append(d)
    return out


async def cache_top_savings(pool: asyncpg.Pool, *, start_time: datetime | None, limit: int,
                            end_time: datetime | None = None, token_id: str | None = None) -> list[dict[str, Any]]:
    """The individual cache hits that saved the most (partial index on saved_cost)."""
    w = _Where()
    w.raw("saved_cost > 0")
    if start_time is not None:
        w.add("created_at >= ?", start_time)
    if end_time is not None:
        w.add("created_at < ?", end_time)
    if token_id is not None:
        w.add("token_id = ?", token_id)
    limit_p = w.param(limit)
    rows = await pool.fetch(
        f"SELECT request_id, created_at, token_id, token_name, model, cache_status, similarity, saved_cost, "
        f"saved_prompt_tokens, saved_completion_tokens, user_prompt_hash, response_preview, run_id, query_id, "
        f"iteration FROM request_logs WHERE {w.sql()} ORDER BY saved_cost DESC, id DESC LIMIT {limit_p}",
        *w.args)
    return [_record(r) for r in rows]


async def rebuild_rollup(conn: asyncpg.Connection, *, since: date | None = None) -> None:
    """Recompute ``usage_daily`` from the raw rows (after a bulk load that bypassed the writer)."""
    async with conn.transaction():
        if since is None:
            await conn.execute("DELETE FROM usage_daily")
            where, args = "TRUE", []
        else:
            await conn.execute("DELETE FROM usage_daily WHERE day >= $1", since)
            where, args = "created_at >= $1", [_midnight(since)]
        group = ", ".join(str(i) for i in range(1, len(ROLLUP_KEYS) + 1))
        await conn.execute(
            f"INSERT INTO usage_daily ({', '.join(ROLLUP_KEYS + ROLLUP_SUMS)}) "
            f"SELECT {ROLLUP_SELECT} FROM request_logs WHERE {where} GROUP BY {group} {ROLLUP_UPSERT}", *args)
