"""The log pipeline at scale: ``python -m scripts.bench_logs [--quick] [--rows N] [--out bench/results.json]``.

1. Starts an embedded Postgres (and Redis, for tokens) in a temporary directory, or reuses a seeded one
   with ``--data-dir DIR`` (seeding 10 million rows takes minutes; the second run skips it).
2. Seeds ``--rows`` realistic rows (default 10 million, 200,000 with ``--quick``) with COPY straight into
   ``request_logs``: the secondary indexes are dropped first and rebuilt afterwards from their own
   definitions (the usual bulk-load order), then the ``usage_daily`` rollup the writer maintains is rebuilt
   from the rows with ``logstore.queries.rebuild_rollup`` (the writer's own INSERT ... SELECT ... GROUP BY).
   Rows span the last 90 days in time order, over 200 real tokens (skewed), 12 models, 5 providers, cache
   hits and misses, errors, streams and agent tags.
3. Starts ``orcache serve`` on that database and times the APIs over HTTP, each called repeatedly
   (p50/p95 after one warm-up call): ``/admin/logs`` first and deep pages with and without filters,
   ``/api/tokens/usage-logs`` over 30 days (admin and token holder), and the analytics endpoints.
4. Measures writer ingest: ``CallRecord`` objects submitted to a ``LogWriter`` directly, rows/s until stored
   (after a warm-up of as many, whose figure is reported beside it).
5. For every endpoint over its target, prints the query plans (EXPLAIN ANALYZE) of the SQL behind it.

Results go to the ``logs`` section of ``bench/results.json`` and to ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

# model, provider, USD per million prompt / completion tokens; most traffic on the first ones
MODELS = [
    ("openai/gpt-4o-mini", "OpenAI", 0.15, 0.6), ("openai/gpt-4o", "OpenAI", 2.5, 10.0),
    ("anthropic/claude-3.5-sonnet", "Anthropic", 3.0, 15.0), ("anthropic/claude-3-haiku", "Anthropic", 0.25, 1.25),
    ("google/gemini-2.0-flash-001", "Google", 0.1, 0.4), ("google/gemini-pro-1.5", "Google", 1.25, 5.0),
    ("meta-llama/llama-3.1-70b-instruct", "DeepInfra", 0.23, 0.4),
    ("meta-llama/llama-3.1-8b-instruct", "DeepInfra", 0.02, 0.05), ("mistralai/mistral-large", "Mistral", 2.0, 6.0),
    ("mistralai/mistral-small", "Mistral", 0.2, 0.6), ("deepseek/deepseek-chat", "DeepInfra", 0.14, 0.28),
    ("openai/o3-mini", "OpenAI", 1.1, 4.4),
]
AGENTS = ["planner", "coder", "reviewer", "researcher", None, None, None]
ERRORS = [(429, "Rate limit exceeded: free-models-per-min."), (500, "Internal Server Error"),
          (502, "Could not connect to the upstream."), (400, "This model's maximum context length is 128000 tokens.")]
TOKENS = 200
DAYS = 90
TARGETS_MS = {"logs": 50.0, "usage": 100.0, "analytics": 200.0}


def log(msg: str) -> None:
    print(f"[bench_logs {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- realistic rows --------------------------------------------------------------------------------------

def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _pick_token(rng: random.Random, ids: Sequence[str]) -> int:
    # a few heavy users and a long tail
    return min(int(rng.paretovariate(1.2)) - 1, len(ids) - 1)


def row_template(rng: random.Random, token_ids: Sequence[str]) -> dict[str, Any]:
    """The columns of one realistic row, except request_id and created_at."""
    from logstore.rows import COLUMNS

    ti = _pick_token(rng, token_ids)
    model, provider, p_in, p_out = MODELS[min(int(rng.expovariate(0.35)), len(MODELS) - 1)]
    prompt = int(rng.lognormvariate(6, 1.1)) + 5
    completion = int(rng.lognormvariate(5, 1.0)) + 1
    reasoning = completion // 3 if model.startswith("openai/o") else 0
    cached = prompt // 2 if rng.random() < 0.2 else 0
    cost = (prompt * p_in + completion * p_out) / 1e6
    r = rng.random()
    cache_status = "miss" if r < 0.45 else "exact" if r < 0.65 else "semantic" if r < 0.75 else "off" if r < 0.95 \
        else "bypass"
    status, error = 200, None
    if cache_status in ("miss", "off", "bypass") and rng.random() < 0.03:
        status, error = rng.choice(ERRORS)
    hit = cache_status in ("exact", "semantic")
    streamed = rng.random() < 0.35
    duration = rng.uniform(0.2, 1.5) if hit else rng.lognormvariate(6.5, 0.8)
    agent = rng.choice(AGENTS)
    run = f"run-{rng.randrange(5000):05d}" if agent else None
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(
        token_id=token_ids[ti], token_name=f"team-{ti:03d}", upstream_id="default", method="POST",
        path="/v1/chat/completions", status_code=status, success=status < 400, error=error,
        duration_ms=round(duration, 3), ttfb_ms=round(duration * rng.uniform(0.1, 0.5), 3) if streamed else None,
        streamed=streamed, model_requested=model, model=model if status < 400 else model,
        model_permaslug=f"{model}-2024-07-18" if status < 400 else None, provider=provider if status < 400 else None,
        endpoint_id=None, generation_id=f"gen-{rng.getrandbits(64):016x}" if status < 400 and not hit else None,
        prompt_tokens=0 if hit or error else prompt, completion_tokens=0 if hit or error else completion,
        total_tokens=0 if hit or error else prompt + completion, cached_tokens=0 if hit or error else cached,
        cache_creation_tokens=0, cache_read_tokens=0 if hit or error else cached,
        reasoning_tokens=0 if hit or error else reasoning, cost=0.0 if hit or error else round(cost, 8),
        byok_cost=None, cache_status=cache_status,
        similarity=round(rng.uniform(0.8, 0.99), 4) if cache_status == "semantic" else None,
        saved_cost=round(cost, 8) if hit else None, saved_prompt_tokens=prompt if hit else 0,
        saved_completion_tokens=completion if hit else 0,
        system_prompt_hash=_sha(f"system-{rng.randrange(50)}"), user_prompt_hash=_sha(f"user-{rng.getrandbits(40)}"),
        response_preview=None if error else f"Here is the answer to question {rng.randrange(10**6)}: "
                                            "the capital of France is Paris."[: rng.randrange(30, 90)],
        project_id=f"proj-{ti % 17:02d}" if agent else None, task_id=None, agent_type=agent,
        agent_id=f"{agent}-{rng.randrange(20)}" if agent else None, run_id=run,
        query_id=f"q-{rng.randrange(20000):05d}" if agent else None,
        iteration=rng.randrange(1, 8) if agent else None,
        metadata='{"env":"prod","client":"sdk"}' if rng.random() < 0.1 else None,
    )
    return row


def _copy_text(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return r"\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    text = str(value)
    if any(c in text for c in "\\\t\n\r"):
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


async def _copy_source(n: int, token_ids: Sequence[str], seed: int, chunk_rows: int = 20_000
                       ) -> AsyncIterator[bytes]:
    """COPY text rows, oldest first: pre-rendered templates, a fresh request_id and time for each row."""
    from logstore.rows import COLUMNS

    rng = random.Random(seed)
    templates = []
    for _ in range(8192):
        row = row_template(rng, token_ids)
        templates.append("\t".join(_copy_text(row[c]) for c in COLUMNS[2:]))
    assert COLUMNS[:2] == ("request_id", "created_at")
    end = datetime.now(UTC).replace(microsecond=0)
    start_us = int((end - timedelta(days=DAYS)).timestamp() * 1e6)
    step = DAYS * 86400 * 1e6 / max(n, 1)
    prefix = f"req_seed{seed:04x}"
    getrandbits = rng.getrandbits
    fromts = datetime.fromtimestamp
    buf: list[str] = []
    for i in range(n):
        ts = fromts((start_us + i * step) / 1e6, UTC).isoformat(sep=" ")
        buf.append(f"{prefix}{i:012x}\t{ts}\t{templates[getrandbits(13)]}\n")
        if len(buf) >= chunk_rows:
            yield "".join(buf).encode()
            buf.clear()
            await asyncio.sleep(0)
    if buf:
        yield "".join(buf).encode()


async def seed(conn: Any, n: int, token_ids: Sequence[str], seed_value: int = 1) -> dict[str, float]:
    """COPY ``n`` rows in one transaction (indexes dropped and rebuilt inside it, so a failure leaves the
    schema as it was), then rebuild the rollup. ``conn`` must have no command timeout: this takes minutes."""
    from logstore.queries import rebuild_rollup
    from logstore.rows import COLUMNS

    timings: dict[str, float] = {}
    async with conn.transaction():
        indexes = await conn.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = 'request_logs' AND i.indexname "
            "NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'request_logs'::regclass)")
        t = time.perf_counter()
        for ix in indexes:
            await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
        await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
        log(f"COPY {n:,} rows (secondary indexes dropped: {len(indexes)})")
        await conn.copy_to_table("request_logs", source=_copy_source(n, token_ids, seed_value),
                                 columns=list(COLUMNS), format="text")
        timings["copy_s"] = time.perf_counter() - t
        log(f"  {n / timings['copy_s']:,.0f} rows/s; rebuilding {len(indexes)} indexes")
        t = time.perf_counter()
        for ix in indexes:
            await conn.execute(ix["indexdef"])
        timings["indexes_s"] = time.perf_counter() - t
    log(f"  indexes in {timings['indexes_s']:.0f}s; rollup")
    t = time.perf_counter()
    await rebuild_rollup(conn)
    timings["rollup_s"] = time.perf_counter() - t
    t = time.perf_counter()
    await conn.execute("VACUUM ANALYZE request_logs")
    await conn.execute("ANALYZE usage_daily")
    timings["vacuum_s"] = time.perf_counter() - t
    timings["total_s"] = sum(timings.values())
    return timings


# --- writer ingest ----------------------------------------------------------------------------------------

def make_records(n: int, seed_value: int = 3) -> list[Any]:
    """Realistic ``CallRecord`` objects as the proxy hands them to the writer."""
    from logstore.record import CallRecord

    rng = random.Random(seed_value)
    now = datetime.now(UTC)
    run = secrets.token_hex(4)
    token_ids = [f"{i:016x}" for i in range(TOKENS)]
    out = []
    for i in range(n):
        model, provider, p_in, p_out = MODELS[min(int(rng.expovariate(0.35)), len(MODELS) - 1)]
        prompt, completion = int(rng.lognormvariate(6, 1.1)) + 5, int(rng.lognormvariate(5, 1.0)) + 1
        r = rng.random()
        cache = "miss" if r < 0.5 else "exact" if r < 0.7 else "semantic" if r < 0.8 else "off"
        hit = cache in ("exact", "semantic")
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                 "cost": (prompt * p_in + completion * p_out) / 1e6,
                 "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
        ti = _pick_token(rng, token_ids)
        rec = CallRecord(request_id=f"req_ingest{run}{i:012x}", created_at=now, method="POST",
                         path="/v1/chat/completions", token_id=token_ids[ti], token_name=f"team-{ti:03d}",
                         upstream_id="default", status=200, duration_ms=rng.uniform(0.3, 900.0),
                         streamed=rng.random() < 0.3, model_requested=model,
                         request_json={"model": model, "messages": [
                             {"role": "system", "content": "You are a helpful assistant."},
                             {"role": "user", "content": f"Question {rng.getrandbits(32)}: what is the capital?"}]},
                         response_model=model, provider=provider, generation_id=f"gen-{rng.getrandbits(64):016x}",
                         usage=None if hit else usage, response_preview="The capital of France is Paris.",
                         cache_status=cache, similarity=0.93 if cache == "semantic" else None,
                         saved_usage=usage if hit else None, saved_cost=usage["cost"] if hit else None,
                         tags={"agent_type": "coder", "run_id": f"run-{i % 100}", "iteration": str(i % 5)}
                         if i % 3 == 0 else {})
        out.append(rec)
    return out


async def measure_ingest(dsn: str, n: int, spool_dir: Path) -> dict[str, Any]:
    """Submit ``n`` CallRecords to a LogWriter at once; rows/s from the first submit until all are stored."""
    from logstore.db import create_pool, wait_until_migrated
    from logstore.writer import LogWriter
    from proxy.settings import Settings

    pool = await create_pool(dsn, max_size=2)
    try:
        await wait_until_migrated(pool)
        settings = Settings(log_queue_size=n + 1, data_dir=spool_dir.parent)
        writer = LogWriter(settings, pool=pool, pricing=None, spool_dir=spool_dir)
        records = make_records(n)
        await writer.start()
        started, cpu_started = time.perf_counter(), time.process_time()
        for rec in records:
            writer.submit(rec)
        done = await writer.flush(timeout=300)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started  # this process: submit, conversion, COPY encoding
        stats = writer.stats()
        await writer.stop()
    finally:
        await pool.close()
    return {"rows": n, "seconds": round(seconds, 3), "rows_per_s": n / seconds if done else 0.0,
            "cpu_us_per_row": round(cpu / n * 1e6, 1), "batch_size": settings.log_batch_size, "complete": done,
            "writer": stats}


async def measure_ingest_settled(dsn: str, n: int, spool_dir: Path) -> dict[str, Any]:
    """``measure_ingest`` after a warm-up of as many records, whose figure is kept beside it: the first
    writes after the bulk load run while autovacuum and the checkpointer are still busy with it and new WAL
    segments are made (pg_stat_activity shows the writer waiting on them), which a long-running deployment
    has long behind it (measured, one Postgres: the first 200,000 rows at 33k rows/s, the next at 56k)."""
    log(f"writer ingest: {n:,} CallRecords")
    warmup = await measure_ingest(dsn, n, spool_dir)
    log(f"  warm-up: {warmup['rows_per_s']:,.0f} rows/s")
    ingest = await measure_ingest(dsn, n, spool_dir)
    log(f"  {ingest['rows_per_s']:,.0f} rows/s, {ingest['cpu_us_per_row']} us CPU per row in this process")
    return {**ingest, "warmup": warmup}


def _measure_ingest_only(procs: Any, tmp: Path, data: Path, rows: int, ingest_rows: int) -> dict[str, Any]:
    """Postgres only (no Redis, no proxy, no API timings): seed ``rows`` rows, then the writer ingest."""
    import asyncpg

    from logstore.db import create_pool, init_connection, wait_until_migrated
    from proxy.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(data / "pg").start()
    if pg.owned:
        procs.cleanups.append(pg.stop)

    async def prepare() -> None:
        pool = await create_pool(pg.url, max_size=1)
        try:
            await wait_until_migrated(pool)
        finally:
            await pool.close()
        conn = await asyncpg.connect(pg.url, command_timeout=None)
        try:
            await init_connection(conn)
            have = await conn.fetchval("SELECT count(*) FROM request_logs")
            if rows and have < rows:
                await conn.execute("TRUNCATE request_logs, usage_daily")
                await seed(conn, rows, [f"{i:016x}" for i in range(TOKENS)])
        finally:
            await conn.close()

    asyncio.run(prepare())
    ingest = asyncio.run(measure_ingest_settled(pg.url, ingest_rows, tmp / "ingest-spool"))
    return ingest


# --- API timings -----------------------------------------------------------------------------------------

class RecordingPool:
    """Stands in for an asyncpg pool: records the SQL the query functions send, then runs it for real."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.pool, name)
        if name not in ("fetch", "fetchval", "fetchrow", "execute"):
            return real

        async def call(sql: str, *args: Any, **kw: Any) -> Any:
            self.calls.append((sql, args))
            return await real(sql, *args, **kw)

        return call


DEEP_CURSOR = "{next_cursor of page 4999}"  # replaced by that page's next_cursor before timing


async def _with_cursor(client: Any, auth: dict[str, str], path: str) -> str:
    """``path`` with DEEP_CURSOR replaced: the dashboard's Next from page 4,999 to 5,000."""
    if DEEP_CURSOR not in path:
        return path
    r = await client.request("GET", "/admin/logs?page=4999&page_size=20", headers=auth)
    return path.replace(DEEP_CURSOR, json.loads(r.body).get("next_cursor") or "")


def endpoints(token_ids: Sequence[str], today: date, run_id: str) -> list[tuple[str, str, str]]:
    """(name, path with query, kind) for every timed call."""
    heavy, light = token_ids[0], token_ids[57]
    week_ago = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        ("logs page 1", "/admin/logs?page=1&page_size=20", "logs"),
        ("logs page 50 (offset 980)", "/admin/logs?page=50&page_size=20", "logs"),
        ("logs page 500 (offset 9,980)", "/admin/logs?page=500&page_size=20", "logs"),
        ("logs page 5,000 (offset 99,980)", "/admin/logs?page=5000&page_size=20", "logs"),
        ("logs page 5,000 by cursor (Next from 4,999)", f"/admin/logs?page=5000&page_size=20&cursor={DEEP_CURSOR}",
         "logs"),
        ("logs token filter, page 1", f"/admin/logs?api_key_id={heavy}", "logs"),
        ("logs small token filter, page 1", f"/admin/logs?api_key_id={light}", "logs"),
        ("logs token filter, page 200", f"/admin/logs?api_key_id={heavy}&page=200", "logs"),
        ("logs model filter, page 1", "/admin/logs?model=anthropic/claude-3.5-sonnet", "logs"),
        ("logs status=error, page 1", "/admin/logs?status=error", "logs"),
        ("logs cache=exact, range=7days", "/admin/logs?cache=exact&range=7days", "logs"),
        ("logs status_code=429 + token", f"/admin/logs?status_code=429&api_key_id={heavy}", "logs"),
        ("logs model + provider + start_time", f"/admin/logs?model=openai/gpt-4o&provider=OpenAI&start_time={week_ago}",
         "logs"),
        ("logs agent_type tag, page 1", "/admin/logs?agent_type=coder", "logs"),
        ("logs run_id tag", f"/admin/logs?run_id={run_id}", "logs"),
        ("usage-logs 30 days (admin, all)", "/api/tokens/usage-logs?range=30days", "usage"),
        ("usage-logs 30 days (one token)", f"/api/tokens/usage-logs?range=30days&token_id={heavy}", "usage"),
        ("usage-logs 30 days, model filter", "/api/tokens/usage-logs?range=30days&model=openai/gpt-4o-mini", "usage"),
        ("analytics summary 30 days", "/admin/analytics/summary?range=30days", "analytics"),
        ("analytics daily 30 days", "/admin/analytics/daily?range=30days", "analytics"),
        ("analytics daily 90 days", "/admin/analytics/daily?range=90days", "analytics"),
        ("analytics top-tokens", "/admin/analytics/top-tokens?range=30days", "analytics"),
        ("analytics models", "/admin/analytics/models?range=30days", "analytics"),
        ("analytics cache", "/admin/analytics/cache?range=30days", "analytics"),
        ("analytics cache evolution (run_id)", f"/admin/analytics/cache/evolution?run_id={run_id}", "analytics"),
        ("analytics cache top-savings", "/admin/analytics/cache/top-savings?range=30days", "analytics"),
        ("token cache-stats (token holder)", "/api/tokens/cache-stats?range=30days", "analytics"),
    ]


async def time_endpoints(port: int, admin: str, token_secret: str, token_ids: Sequence[str], run_id: str,
                         repeats: int) -> list[dict[str, Any]]:
    from scripts.bench_tools import RawClient, percentile

    client = RawClient(HOST, port, timeout=60)
    out = []
    try:
        for name, path, kind in endpoints(token_ids, datetime.now(UTC).date(), run_id):
            holder = "token holder" in name
            auth = {"Authorization": f"Bearer {token_secret if holder else admin}"}
            path = await _with_cursor(client, auth, path)
            times = []
            status = 0
            body = b""
            for i in range(repeats + 1):
                r = await client.request("GET", path, headers=auth)
                status, body = r.status, r.body
                if i:  # the first call warms the plan cache and the buffers
                    times.append(r.total_ms)
            p95 = percentile(times, 95)
            target = TARGETS_MS[kind]
            item = {"name": name, "path": path, "kind": kind, "status": status,
                    "p50_ms": round(percentile(times, 50), 2), "p95_ms": round(p95, 2), "target_ms": target,
                    "ok": status == 200 and p95 <= target}
            if status == 200 and kind == "logs":
                data = json.loads(body)
                item["items"], item["total"] = len(data.get("items", [])), data.get("total")
            out.append(item)
            log(f"  {name:40s} {status} p50 {item['p50_ms']:8.2f} ms  p95 {p95:8.2f} ms  "
                f"{'ok' if item['ok'] else 'OVER ' + str(target)}")
    finally:
        await client.close()
    return out


async def explain_slow(dsn: str, slow: Sequence[dict[str, Any]], token_ids: Sequence[str], run_id: str,
                       token_id_holder: str) -> dict[str, list[str]]:
    """EXPLAIN ANALYZE of every statement behind the endpoints over their target."""
    from aiohttp.test_utils import make_mocked_request

    from logstore import api, queries
    from logstore.db import create_pool

    pool = await create_pool(dsn, max_size=4)
    plans: dict[str, list[str]] = {}
    try:
        for item in slow:
            rec = RecordingPool(pool)
            q = make_mocked_request("GET", item["path"]).query
            path = item["path"].split("?")[0]
            if path == "/admin/logs":
                await queries.list_logs(rec, api.log_filters(q), int(q.get("page", 1)), int(q.get("page_size", 20)),
                                        queries.LogCursor.decode(q["cursor"]) if q.get("cursor") else None)
            elif path == "/api/tokens/usage-logs":
                await queries.usage_logs(rec, api.day_range(q), token_id=q.get("token_id"), model=q.get("model"),
                                         provider=q.get("provider"), page=1, page_size=100)
            elif path.endswith("/summary"):
                await queries.analytics_summary(rec, api.day_range(q))
            elif path.endswith("/daily"):
                await queries.analytics_daily(rec, api.day_range(q))
            elif path.endswith("/top-tokens"):
                await queries.analytics_top_tokens(rec, api.day_range(q), 10)
            elif path.endswith("/models"):
                await queries.analytics_models(rec, api.day_range(q))
            elif path.endswith("/evolution"):
                await queries.cache_evolution(rec, run_id=q.get("run_id"))
            elif path.endswith("/top-savings"):
                days = api.day_range(q)
                start = datetime.combine(days.start, datetime.min.time(), tzinfo=UTC) if days.start else None
                await queries.cache_top_savings(rec, start_time=start, limit=20)
            elif path.endswith("/cache") or path.endswith("/cache-stats"):
                token = token_id_holder if "cache-stats" in path else None
                await queries.cache_stats(rec, api.day_range(q), token)
            lines: list[str] = []
            for sql, args in rec.calls:
                plan = await pool.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
                lines.append(" ".join(sql.split()))
                lines += ["    " + r[0] for r in plan]
            plans[item["name"]] = lines
    finally:
        await pool.close()
    return plans


# --- main ------------------------------------------------------------------------------------------------

async def _prepare(dsn: str, redis_url: str, rows: int, reuse: bool) -> tuple[list[str], str, str, dict[str, Any]]:
    """Tokens (real ones, in Redis) and the seeded table; returns (token ids, a token secret, a run id, timings)."""
    import asyncpg
    import redis.asyncio as aredis

    from logstore.db import create_pool, init_connection, wait_until_migrated
    from proxy.tokens import TokenStore

    pool = await create_pool(dsn, max_size=2)
    r = aredis.Redis.from_url(redis_url)
    try:
        await wait_until_migrated(pool)
        store = TokenStore(r, "orcache")
        existing = await store.list()
        meta_key = "bench_logs:holder"
        secret = (await r.get(meta_key) or b"").decode()
        if len(existing) < TOKENS or not secret:
            log(f"creating {TOKENS} tokens")
            for i in range(TOKENS):
                _, s = await store.create({"name": f"team-{i:03d}", "cache_mode": "exact"})
                if i == 0:
                    secret = s
            await r.set(meta_key, secret)
            existing = await store.list()
        by_name = {t.name: t.id for t in existing}
        token_ids = [by_name[f"team-{i:03d}"] for i in range(TOKENS)]
        conn = await asyncpg.connect(dsn, command_timeout=None)  # the pool's 60 s would cut the COPY short
        try:
            await init_connection(conn)
            have = await conn.fetchval("SELECT count(*) FROM request_logs")
            timings: dict[str, Any] = {"existing_rows": have}
            if not (reuse and have >= rows):
                if have:
                    await conn.execute("TRUNCATE request_logs, usage_daily")
                timings.update(await seed(conn, rows, token_ids))
            run_id = await conn.fetchval(
                "SELECT run_id FROM request_logs WHERE run_id IS NOT NULL ORDER BY id DESC LIMIT 1")
            timings["rows"] = await conn.fetchval("SELECT count(*) FROM request_logs")
            timings["table_mb"] = round(await conn.fetchval("SELECT pg_total_relation_size('request_logs')") / 2**20)
            timings["rollup_rows"] = await conn.fetchval("SELECT count(*) FROM usage_daily")
        finally:
            await conn.close()
    finally:
        await pool.close()
        await r.aclose()
    return token_ids, secret, run_id or "run-00000", timings


def _measure(args: argparse.Namespace, procs: Any, tmp: Path, data: Path, rows: int, repeats: int,
             ingest_rows: int) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[str]], dict[str, Any]]:
    """Seed (or reuse), time the APIs through a real ``orcache serve``, explain the slow ones, measure ingest."""
    from proxy.embedded import EmbeddedPostgres, EmbeddedRedis
    from scripts.bench import PY, free_port, wait_http

    redis_server = EmbeddedRedis(data / "redis").start()
    if redis_server.owned:
        procs.cleanups.append(redis_server.stop)
    pg = EmbeddedPostgres(data / "pg").start()
    if pg.owned:
        procs.cleanups.append(pg.stop)
    token_ids, holder_secret, run_id, seeding = asyncio.run(
        _prepare(pg.url, redis_server.url, rows, reuse=args.data_dir is not None))
    log(f"table ready: {seeding}")

    admin = "bench-admin-" + secrets.token_hex(16)
    port = free_port()
    proxy = procs.start("proxy", [PY, "-m", "proxy.cli", "serve", "--host", HOST, "--port", str(port),
                                  "--data-dir", str(tmp / "proxy"), "--upstream", "http://127.0.0.1:9/api/v1"],
                        port, {"ORCACHE_ADMIN_TOKEN": admin, "OPENROUTER_API_KEY": "x", "ORCACHE_EMBEDDINGS": "off",
                               "ORCACHE_LOG_LEVEL": "warning", "ORCACHE_PRICING_REFRESH_SECONDS": "86400",
                               "REDIS_URL": redis_server.url, "DATABASE_URL": pg.url})
    wait_http(f"http://{HOST}:{port}/healthz", proxy)
    log(f"timing the APIs ({repeats} calls each)")
    timed = asyncio.run(time_endpoints(port, admin, holder_secret, token_ids, run_id, repeats))
    slow = [t for t in timed if not t["ok"]]
    plans = asyncio.run(explain_slow(pg.url, slow, token_ids, run_id, token_ids[0])) if slow else {}
    for name, lines in plans.items():
        print(f"\n### {name}\n" + "\n".join(lines), file=sys.stderr)
    if args.api_only:
        return seeding, timed, plans, {"rows": 0, "seconds": 0.0, "rows_per_s": 0.0, "skipped": True}
    ingest = asyncio.run(measure_ingest_settled(pg.url, ingest_rows, tmp / "ingest-spool"))
    return seeding, timed, plans, ingest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_logs", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows and fewer repeats")
    parser.add_argument("--rows", type=int, help="rows to seed (default 10,000,000; quick 200,000)")
    parser.add_argument("--repeats", type=int, help="timed calls per endpoint (default 30; quick 10)")
    parser.add_argument("--ingest-rows", type=int, help="CallRecords for the writer ingest (default 200,000)")
    parser.add_argument("--data-dir", type=Path, help="keep Postgres/Redis here and reuse a seeded table next time")
    parser.add_argument("--api-only", action="store_true",
                        help="time the APIs only, no writer ingest (whose rows would be the newest, not yet "
                             "vacuumed ones the next run pages through)")
    parser.add_argument("--ingest-only", action="store_true",
                        help="only the writer ingest, on Postgres seeded with --rows rows (no APIs, no results file)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    rows = args.rows if args.rows is not None else (200_000 if args.quick else 10_000_000)
    repeats = args.repeats or (10 if args.quick else 30)
    ingest_rows = args.ingest_rows or (50_000 if args.quick else 200_000)

    from scripts.bench import Processes, stop_on_signals
    from scripts.bench_tools import Target, merge_results

    tmp = Path(tempfile.mkdtemp(prefix="orcache-bench-logs-"))
    data = (args.data_dir or tmp / "services").resolve()
    procs = Processes(tmp)
    started = time.monotonic()

    def guarded(measure: Callable[[], Any]) -> Any:
        """Run ``measure``; stop every process and remove the temporary directory however it ends."""
        try:
            with stop_on_signals():
                return measure()
        except KeyboardInterrupt:
            log("interrupted: stopping everything")
            return None
        finally:
            procs.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    if args.ingest_only:
        ingest = guarded(lambda: _measure_ingest_only(procs, tmp, data, args.rows or 0,
                                                      ingest_rows))
        if ingest is None:
            return 130
        print(json.dumps(ingest))
        return 0 if ingest["complete"] else 1
    measured = guarded(lambda: _measure(args, procs, tmp, data, rows, repeats, ingest_rows))
    if measured is None:
        return 130
    seeding, timed, plans, ingest = measured

    targets = [] if ingest.get("skipped") else [
        Target("Writer ingest (CallRecords → Postgres)", round(ingest["rows_per_s"]), ">=", 50_000.0, "rows/s",
               f"{ingest['rows']:,} records, batches of {ingest['batch_size']}; before them a warm-up of "
               f"{ingest['warmup']['rows']:,} at {ingest['warmup']['rows_per_s']:,.0f} rows/s")]
    for t in timed:
        targets.append(Target(f"{t['name']} (p95)", t["p95_ms"], "<=", t["target_ms"], "ms",
                              f"p50 {t['p50_ms']} ms" + (f"; HTTP {t['status']}" if t["status"] != 200 else "")))
    section = {
        "meta": {"started": datetime.now(UTC).isoformat(timespec="seconds"), "mode": "quick" if args.quick else "full",
                 "rows": seeding.get("rows"), "repeats": repeats, "seconds": round(time.monotonic() - started, 1)},
        "seeding": seeding, "targets": [t.as_dict() for t in targets], "endpoints": timed, "ingest": ingest,
        "plans": plans,
    }
    merge_results(args.out, "logs", section)
    log(f"wrote {args.out}")
    for t in targets:
        print(f"{t.verdict:5s} {t.name}: {t.measured:.4g} {t.unit} (target {t.op} {t.target:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
