"""The log writer against a real embedded Postgres: batching, dedupe, rollup, spool and replay, shutdown."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from logstore import writer as writer_module
from logstore.db import PG_READY, create_pool, postgres_ctx
from logstore.enrich import GenerationEnricher
from logstore.migrate import MIGRATIONS_DIR, migrate
from logstore.pricing import PricingTable, pricing_ctx
from logstore.queries import rebuild_rollup
from logstore.record import CallRecord
from logstore.retention import purge_expired
from logstore.rows import COLUMNS, record_to_row
from logstore.writer import LogWriter, NullLogWriter, copy_rows, insert_rows, log_writer_ctx
from proxy.embedded import EmbeddedPostgres
from proxy.keys import LOG_WRITER, PG_POOL, PRICING, SETTINGS, UPSTREAM
from proxy.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROLLUP_CHECK = """
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, coalesce(token_id, '') AS token_id,
       coalesce(upstream_id, '') AS upstream_id, coalesce(model, '') AS model,
       coalesce(model_permaslug, '') AS model_permaslug, coalesce(provider, '') AS provider,
       coalesce(endpoint_id, '') AS endpoint_id, cache_status, status_code,
       count(*)::int8 AS requests, (count(*) FILTER (WHERE NOT success))::int8 AS errors,
       (count(*) FILTER (WHERE streamed))::int8 AS streamed,
       sum(prompt_tokens)::int8 AS prompt_tokens, sum(completion_tokens)::int8 AS completion_tokens,
       sum(total_tokens)::int8 AS total_tokens, sum(cached_tokens)::int8 AS cached_tokens,
       sum(cache_creation_tokens)::int8 AS cache_creation_tokens, sum(cache_read_tokens)::int8 AS cache_read_tokens,
       sum(reasoning_tokens)::int8 AS reasoning_tokens, round(coalesce(sum(cost), 0)::numeric, 9) AS cost,
       round(coalesce(sum(byok_cost), 0)::numeric, 9) AS byok_cost,
       round(coalesce(sum(saved_cost), 0)::numeric, 9) AS saved_cost,
       sum(saved_prompt_tokens)::int8 AS saved_prompt_tokens,
       sum(saved_completion_tokens)::int8 AS saved_completion_tokens
FROM request_logs GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
"""
ROLLUP_READ = """
SELECT day, token_id, upstream_id, model, model_permaslug, provider, endpoint_id, cache_status, status_code,
       requests, errors, streamed, prompt_tokens, completion_tokens, total_tokens, cached_tokens,
       cache_creation_tokens, cache_read_tokens, reasoning_tokens, round(cost::numeric, 9) AS cost,
       round(byok_cost::numeric, 9) AS byok_cost, round(saved_cost::numeric, 9) AS saved_cost,
       saved_prompt_tokens, saved_completion_tokens
FROM usage_daily
"""
TABLE = PricingTable([{"id": "openai/gpt-4o", "canonical_slug": "openai/gpt-4o-2024-08-06",
                         "pricing": {"prompt": "0.0000025", "completion": "0.00001"}}])


def settings(tmp_path: Path, **kw) -> Settings:
    base = dict(data_dir=tmp_path / "data", log_batch_size=100, log_flush_interval=0.05, log_queue_size=10_000)
    base.update(kw)
    return Settings(**base)


def make_record(i: int, *, rid: str | None = None, when: datetime | None = None, **kw) -> CallRecord:
    base = dict(
        request_id=rid or f"req-{secrets.token_hex(6)}-{i}", created_at=when or datetime.now(UTC),
        method="POST", path="/v1/chat/completions", status=200, token_id=f"tok{i % 3}", token_name=f"t{i % 3}",
        model_requested="openai/gpt-4o", response_model="openai/gpt-4o", provider="OpenAI",
        cache_status=("miss", "exact", "semantic", "bypass")[i % 4],
        usage={"prompt_tokens": 10 + i, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": i % 2}},
        saved_cost=0.01 if i % 4 in (1, 2) else None, streamed=i % 2 == 0,
        request_json={"messages": [{"role": "user", "content": f"q{i}"}]},
    )
    base.update(kw)
    return CallRecord(**base)


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


@pytest.fixture(autouse=True)
async def clean(pool: asyncpg.Pool) -> None:
    await pool.execute("TRUNCATE request_logs, usage_daily")


async def count(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM request_logs")


async def rollup_matches_raw(pool: asyncpg.Pool) -> None:
    raw = sorted(tuple(r) for r in await pool.fetch(ROLLUP_CHECK))
    rolled = sorted(tuple(r) for r in await pool.fetch(ROLLUP_READ))
    assert rolled == raw


# --- migrations ----------------------------------------------------------------------------------------

async def test_migrations_apply_once_even_from_concurrent_workers(pg_dsn: str) -> None:
    name = "mig_" + secrets.token_hex(4)
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = pg_dsn.replace("/postgres?", f"/{name}?")
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        results = await asyncio.gather(*(migrate(c) for c in conns))
        files = len(list(MIGRATIONS_DIR.glob("*.sql")))
        assert sorted(len(r) for r in results) == [0, 0, files]
        assert await migrate(conns[0]) == []
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == files
        for c in conns:
            await c.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# --- batching ------------------------------------------------------------------------------------------

async def test_full_batch_is_written_without_waiting_for_the_interval(pool, tmp_path) -> None:
    writer = LogWriter(settings(tmp_path, log_batch_size=5, log_flush_interval=30.0), pool)
    await writer.start()
    for i in range(5):
        writer.submit(make_record(i))
    await wait_for(lambda: _eq(count(pool), 5), timeout=5)
    assert writer.batches_written == 1
    for i in range(3):  # a partial batch waits for the interval (30 s here)...
        writer.submit(make_record(10 + i))
    await asyncio.sleep(0.5)
    assert await count(pool) == 5
    await writer.stop()  # ...or for shutdown, which drains it
    assert await count(pool) == 8 and writer.written_rows == 8


async def test_partial_batch_is_written_after_the_flush_interval(pool, tmp_path) -> None:
    writer = LogWriter(settings(tmp_path, log_batch_size=1000, log_flush_interval=0.2), pool)
    await writer.start()
    started = asyncio.get_running_loop().time()
    for i in range(3):
        writer.submit(make_record(i))
    await wait_for(lambda: _eq(count(pool), 3), timeout=5)
    elapsed = asyncio.get_running_loop().time() - started
    assert 0.15 <= elapsed < 3.0
    assert writer.batches_written == 1
    await writer.stop()


async def test_records_arriving_one_by_one_share_a_batch_without_waking_the_writer_each_time(pool,
                                                                                           tmp_path) -> None:
    writer = LogWriter(settings(tmp_path, log_batch_size=1000, log_flush_interval=0.3), pool)
    await writer.start()
    wakeups = 0
    wake = writer._wakeup.set

    def counted() -> None:
        nonlocal wakeups
        wakeups += 1
        wake()

    writer._wakeup.set = counted  # type: ignore[method-assign]
    before = await count(pool)
    for i in range(40):  # requests finishing over ~0.1 s, inside one flush interval
        writer.submit(make_record(1000 + i))
        await asyncio.sleep(0.0025)
    await wait_for(lambda: _eq(count(pool), before + 40), timeout=5)
    assert writer.batches_written == 1  # all of them, not the first one alone
    assert wakeups <= 2  # the first record; not one wake-up (a task, a timer) per request
    await writer.stop()


async def _eq(awaitable, expected) -> bool:
    return (await awaitable) == expected


# --- dedupe and rollup ---------------------------------------------------------------------------------

async def test_same_request_id_is_stored_once_and_counted_once(pool, tmp_path) -> None:
    writer = LogWriter(settings(tmp_path), pool, TABLE)
    await writer.start()
    rec = make_record(0, rid="dup-1", cache_status="miss")
    writer.submit(rec)
    await writer.flush()
    writer.submit(rec)  # a replay in a later batch
    writer.submit(make_record(1, rid="dup-2", cache_status="miss"))
    writer.submit(make_record(1, rid="dup-2", cache_status="miss"))  # and twice within one batch
    await writer.flush()
    await writer.stop()
    assert await count(pool) == 2
    assert writer.written_rows == 2 and writer.duplicate_rows == 2
    assert await pool.fetchval("SELECT sum(requests) FROM usage_daily") == 2
    await rollup_matches_raw(pool)


async def test_daily_rollup_equals_group_by_over_raw_rows(pool, tmp_path) -> None:
    writer = LogWriter(settings(tmp_path, log_batch_size=7), pool, TABLE)
    await writer.start()
    now = datetime.now(UTC)
    for i in range(60):
        writer.submit(make_record(
            i, when=now - timedelta(days=i % 5, minutes=i), status=(200, 200, 502, 429)[i % 4],
            error="boom" if i % 4 >= 2 else None, upstream_id=("u1", None)[i % 2],
            provider=("OpenAI", "Azure", None)[i % 3], endpoint_id=("e1", None)[i % 2],
            usage={"prompt_tokens": i, "completion_tokens": 2 * i, "cost": i / 1000 if i % 3 else None,
                   "is_byok": i % 5 == 0, "cost_details": {"upstream_inference_cost": 0.5},
                   "completion_tokens_details": {"reasoning_tokens": i % 7}},
            similarity=0.9 if i % 4 == 2 else None))
    await writer.flush()
    await writer.stop()
    assert await count(pool) == 60
    await rollup_matches_raw(pool)
    # rebuilding from raw rows (after a bulk COPY that bypassed the writer) gives the same table
    before = sorted(tuple(r) for r in await pool.fetch(ROLLUP_READ))
    async with pool.acquire() as conn:
        await rebuild_rollup(conn)
    assert sorted(tuple(r) for r in await pool.fetch(ROLLUP_READ)) == before


async def test_fresh_batches_skip_the_deduplicating_path_until_a_stored_id_shows_up(pool, tmp_path,
                                                                                    monkeypatch) -> None:
    dedup_calls: list[int] = []

    async def counting_insert_rows(conn, rows):
        dedup_calls.append(len(rows))
        return await insert_rows(conn, rows)

    monkeypatch.setattr(writer_module, "insert_rows", counting_insert_rows)
    writer = LogWriter(settings(tmp_path, log_batch_size=10), pool, TABLE)
    await writer.start()
    for i in range(25):
        writer.submit(make_record(i, rid=f"fresh-{i}"))
    await writer.flush()
    assert await count(pool) == 25 and dedup_calls == []  # COPY straight into request_logs
    writer.submit(make_record(3, rid="fresh-3"))  # submitted again: the COPY fails whole, the fallback skips it
    writer.submit(make_record(30, rid="fresh-30"))
    await writer.flush()
    await writer.stop()
    assert dedup_calls == [2]
    assert await count(pool) == 26 and writer.written_rows == 26 and writer.duplicate_rows == 1
    await rollup_matches_raw(pool)


async def test_a_retry_after_a_commit_that_reported_failure_stores_nothing_twice(pool, tmp_path,
                                                                                 monkeypatch) -> None:
    async def commit_then_fail(conn, rows):
        await copy_rows(conn, rows)
        raise ConnectionResetError("connection lost after COMMIT")

    monkeypatch.setattr(writer_module, "copy_rows", commit_then_fail)
    writer = LogWriter(settings(tmp_path), pool, TABLE, retry_base=0.01)
    await writer.start()
    for i in range(12):
        writer.submit(make_record(i, rid=f"ambiguous-{i}"))
    await writer.flush()
    await writer.stop()
    assert await count(pool) == 12
    assert writer.batches_failed == 1 and writer.written_rows == 0 and writer.duplicate_rows == 12
    assert writer.spooled_rows == 0
    await rollup_matches_raw(pool)


async def test_concurrent_writers_each_roll_up_only_their_own_rows(pool, tmp_path) -> None:
    writers = [LogWriter(settings(tmp_path / str(w), log_batch_size=40), pool, TABLE) for w in range(3)]
    for w in writers:
        await w.start()
    now = datetime.now(UTC)
    for i in range(600):  # ids from the one sequence interleave between the writers' transactions
        writers[i % 3].submit(make_record(i, rid=f"conc-{i}", when=now - timedelta(days=i % 2)))
    for w in writers:
        await w.flush()
        await w.stop()
    assert await count(pool) == 600
    assert await pool.fetchval("SELECT sum(requests) FROM usage_daily") == 600
    await rollup_matches_raw(pool)


async def test_a_backlog_is_written_two_batches_at_a_time_each_row_once(pool, tmp_path, monkeypatch) -> None:
    active = peak = 0

    async def slow_copy_rows(conn, rows):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(0.03)  # a busy database: the next batch is ready before this one is stored
            return await copy_rows(conn, rows)
        finally:
            active -= 1

    monkeypatch.setattr(writer_module, "copy_rows", slow_copy_rows)
    writer = LogWriter(settings(tmp_path, log_batch_size=20), pool, TABLE)
    await writer.start()
    now = datetime.now(UTC)
    for i in range(400):
        writer.submit(make_record(i, rid=f"backlog-{i}", when=now - timedelta(days=i % 3)))
    assert await writer.flush()
    await writer.stop()
    assert peak == writer_module.WRITES_IN_FLIGHT == 2  # never more: each write holds a connection
    assert await count(pool) == 400 and writer.written_rows == 400 and writer.duplicate_rows == 0
    # the two transactions upsert the same rollup groups: no deadlock, nothing counted twice
    await rollup_matches_raw(pool)


async def test_odd_values_are_cleaned_one_by_one_and_stored(pool, tmp_path) -> None:
    class Ratio(float):  # e.g. numpy.float64: not exactly a float, COPY must get a plain one
        pass

    writer = LogWriter(settings(tmp_path), pool, TABLE)
    await writer.start()
    writer.submit(make_record(0, rid="odd-1", token_id="tok\x00en", token_name="n" * 300, provider=12,
                              upstream_id="\ud800lone", duration_ms=float("nan"), similarity=Ratio(0.5),
                              cache_status="SEMANTIC", status=True,
                              tags={"X-Orcache-Run-Id": "r\x00", "iteration": "2"}))
    writer.submit(make_record(1, rid="odd-2", token_name="Zoë", duration_ms=12, cache_status=["?"]))
    await writer.flush()
    await writer.stop()
    rows = {r["request_id"]: r for r in await pool.fetch("SELECT * FROM request_logs")}
    odd = rows["odd-1"]
    assert (odd["token_id"], len(odd["token_name"]), odd["provider"]) == ("token", 256, "12")
    assert odd["upstream_id"] == "?lone" and odd["duration_ms"] is None and odd["similarity"] == 0.5
    assert (odd["cache_status"], odd["status_code"], odd["run_id"], odd["iteration"]) == ("semantic", 0, "r", 2)
    assert (rows["odd-2"]["token_name"], rows["odd-2"]["duration_ms"], rows["odd-2"]["cache_status"]) == \
        ("Zoë", 12.0, "bypass")
    assert writer.dropped_rows == 0
    await rollup_matches_raw(pool)


async def test_copy_rows_needs_its_own_transaction(pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(RuntimeError):
            await copy_rows(conn, [record_to_row(make_record(0))])


async def test_rows_postgres_rejects_do_not_poison_the_batch(pool, tmp_path) -> None:
    writer = LogWriter(settings(tmp_path), pool)
    good = [record_to_row(make_record(i, rid=f"ok-{i}")) for i in range(5)]
    fixable = list(record_to_row(make_record(9, rid="fixable")))
    fixable[COLUMNS.index("token_name")] = 12345  # not text: stored without its free-text fields
    hopeless = list(record_to_row(make_record(8, rid="hopeless")))
    hopeless[COLUMNS.index("prompt_tokens")] = "many"  # kept even in the stripped row: dropped, counted
    with capture_logs() as logs:
        await writer._write([good[0], tuple(fixable), *good[1:3], tuple(hopeless), *good[3:]])
    ids = {r["request_id"] for r in await pool.fetch("SELECT request_id FROM request_logs")}
    assert ids == {f"ok-{i}" for i in range(5)} | {"fixable"}
    error = await pool.fetchval("SELECT error FROM request_logs WHERE request_id = 'fixable'")
    assert error.startswith("stored without details")
    assert writer.dropped_rows == 1
    assert any(e["event"] == "log_row_dropped" for e in logs)
    await rollup_matches_raw(pool)


# --- spool and replay ----------------------------------------------------------------------------------

async def test_rows_spooled_while_no_database_are_replayed_at_start_up(pool, tmp_path) -> None:
    s = settings(tmp_path)
    offline = LogWriter(s, lambda: None, retry_base=0.01, max_attempts=2)
    await offline.start()
    ids = [f"offline-{i}" for i in range(25)]
    for i, rid in enumerate(ids):
        offline.submit(make_record(i, rid=rid))
    await wait_for(lambda: _eq(_spooled(offline), 25))
    await offline.stop()
    assert offline.dropped_rows == 0 and list(s.spool_dir.glob("*.jsonl"))

    online = LogWriter(s, pool)
    await online.start()
    await wait_for(lambda: _eq(count(pool), 25))
    await online.stop()
    assert sorted(r["request_id"] for r in await pool.fetch("SELECT request_id FROM request_logs")) == sorted(ids)
    assert list(s.spool_dir.glob("*.jsonl")) == []
    await rollup_matches_raw(pool)


async def _spooled(writer: LogWriter) -> int:
    return writer.spooled_rows


async def test_queue_overflow_goes_to_the_spool_not_to_the_floor(pool, tmp_path) -> None:
    s = settings(tmp_path, log_queue_size=3)
    writer = LogWriter(s, pool)
    for i in range(10):  # writer not started: nothing drains the queue
        writer.submit(make_record(i, rid=f"of-{i}"))
    assert writer.queued == 3 and writer.spooled_rows == 7 and writer.dropped_rows == 0
    await writer.start()
    await wait_for(lambda: _eq(count(pool), 10))
    await writer.stop()
    assert list(s.spool_dir.glob("*.jsonl")) == []


async def test_shutdown_drains_the_queue(pool, tmp_path) -> None:
    writer = LogWriter(settings(tmp_path, log_batch_size=50, log_flush_interval=60.0), pool)
    await writer.start()
    for i in range(420):
        writer.submit(make_record(i))
    await writer.stop()
    assert await count(pool) == 420
    assert writer.written_rows == 420 and writer.spooled_rows == 0
    writer.submit(make_record(999, rid="late"))  # after stop: spooled, not lost
    assert writer.spooled_rows == 1


async def test_shutdown_spools_what_a_stuck_database_could_not_take(pool, tmp_path) -> None:
    s = settings(tmp_path, log_batch_size=10)
    writer = LogWriter(s, pool, drain_timeout=0.5)
    await writer.start()
    async with pool.acquire() as blocker:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE request_logs IN ACCESS EXCLUSIVE MODE")  # every insert now waits
        for i in range(35):
            writer.submit(make_record(i, rid=f"stuck-{i}"))
        await asyncio.sleep(0.3)
        started = asyncio.get_running_loop().time()
        await writer.stop()
        assert asyncio.get_running_loop().time() - started < 3.0
        await tx.rollback()
    assert writer.spooled_rows == 35 and writer.dropped_rows == 0
    again = LogWriter(s, pool)
    await again.start()
    await wait_for(lambda: _eq(count(pool), 35))
    await again.stop()
    assert list(s.spool_dir.glob("*.jsonl")) == []
    await rollup_matches_raw(pool)


async def test_dropped_rows_are_counted_and_logged_when_even_the_spool_fails(tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    writer = LogWriter(settings(tmp_path), lambda: None, spool_dir=blocker / "spool", retry_base=0.01,
                       max_attempts=1)
    with capture_logs() as logs:
        await writer.start()
        for i in range(4):
            writer.submit(make_record(i))
        await writer.stop()
    assert writer.dropped_rows == 4 and writer.spooled_rows == 0
    dropped = [e for e in logs if e["event"] == "log_rows_dropped"]
    assert dropped and dropped[-1]["log_level"] == "error" and dropped[-1]["dropped_rows"] == 4


async def test_logging_disabled_writer_records_nothing(tmp_path) -> None:
    writer = NullLogWriter(settings(tmp_path, logging_enabled=False), lambda: None)
    await writer.start()
    writer.submit(make_record(0))
    await writer.stop()
    assert writer.queued == 0 and writer.spooled_rows == 0 and not (tmp_path / "data").exists()


# --- a real outage: stop Postgres, keep logging, start it again ---------------------------------------

@pytest.fixture(scope="module")
def own_pg() -> Iterator[EmbeddedPostgres]:
    """A Postgres of our own: this module stops and restarts it, the shared one stays up."""
    base = Path(tempfile.mkdtemp(prefix="orcf-"))
    server = EmbeddedPostgres(base / "pg").start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


async def test_every_row_is_stored_exactly_once_across_a_postgres_outage(own_pg, tmp_path) -> None:
    pool = await create_pool(own_pg.url, max_size=3)
    async with pool.acquire() as conn:
        await migrate(conn)
        await conn.execute("TRUNCATE request_logs, usage_daily")
    s = settings(tmp_path, log_batch_size=20, log_flush_interval=0.05)
    writer = LogWriter(s, pool, TABLE, retry_base=0.05, retry_max=0.5, max_attempts=2)
    await writer.start()
    sent: list[str] = []

    async def traffic(n: int, tag: str) -> None:
        for i in range(n):
            rid = f"{tag}-{i}"
            sent.append(rid)
            writer.submit(make_record(i, rid=rid))
            if i % 10 == 9:
                await asyncio.sleep(0.01)

    try:
        await traffic(100, "before")
        await writer.flush()
        await asyncio.to_thread(own_pg.pg_ctl, "-w", "-m", "fast", "stop")
        await traffic(150, "during")
        await writer.flush()
        writer.submit(make_record(3, rid="before-3"))  # a duplicate of a stored row, while down
        sent_count = len(set(sent))
        await wait_for(lambda: _ge(_spooled(writer), 150), timeout=20)
        assert writer.dropped_rows == 0
        await asyncio.to_thread(own_pg.restart)
        await traffic(50, "after")
        await wait_for(lambda: _eq(count(pool), sent_count + 50 - 0), timeout=30, interval=0.1)
        await writer.stop()
        ids = [r["request_id"] for r in await pool.fetch("SELECT request_id FROM request_logs")]
        assert len(ids) == len(set(ids)) == len(set(sent))
        assert set(ids) == set(sent)
        assert writer.dropped_rows == 0 and writer.spooled_rows >= 150 and writer.batches_failed >= 1
        assert list(s.spool_dir.glob("*.jsonl")) == []
        await rollup_matches_raw(pool)
    finally:
        await writer.stop()
        if not own_pg._running():
            await asyncio.to_thread(own_pg.restart)
        await pool.close()


async def _ge(awaitable, expected) -> bool:
    return (await awaitable) >= expected


async def test_app_starts_while_postgres_is_down_and_catches_up_when_it_returns(own_pg, tmp_path) -> None:
    admin = await asyncpg.connect(own_pg.url)
    name = "late_" + secrets.token_hex(4)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = own_pg.url.replace("/postgres?", f"/{name}?")
    await asyncio.to_thread(own_pg.pg_ctl, "-w", "-m", "fast", "stop")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "openai/gpt-4o", "canonical_slug": "openai/gpt-4o-2024-08-06",
                                            "pricing": {"prompt": "0.0000025", "completion": "0.00001"}}]})

    upstream = web.Application()
    upstream.router.add_get("/api/v1/models", models)
    try:
        async with TestServer(upstream, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
            app = web.Application()
            app[SETTINGS] = settings(tmp_path, database_url=dsn, upstream_url=str(server.make_url("/api/v1")))
            app[UPSTREAM] = session
            app.cleanup_ctx.extend([postgres_ctx, pricing_ctx, log_writer_ctx])
            runner = web.AppRunner(app)
            started = time.monotonic()
            await runner.setup()  # runs the contexts: must not wait for Postgres
            assert time.monotonic() - started < 5.0
            assert not app[PG_READY].is_set()
            await wait_for(lambda: _true(len(app[PRICING]) > 0))
            writer = app[LOG_WRITER]
            for i in range(30):
                writer.submit(make_record(i, rid=f"late-{i}", cache_status="miss",
                                          usage={"prompt_tokens": 1000, "completion_tokens": 100}))
            await wait_for(lambda: _eq(_spooled(writer), 30))
            await asyncio.to_thread(own_pg.restart)
            await asyncio.wait_for(app[PG_READY].wait(), timeout=40)
            pool = app[PG_POOL]
            await wait_for(lambda: _eq(count(pool), 30), timeout=40, interval=0.1)
            costs = [r["cost"] for r in await pool.fetch("SELECT cost FROM request_logs")]
            assert costs == pytest.approx([1000 * 0.0000025 + 100 * 0.00001] * 30)
            assert await pool.fetchval("SELECT min(model_permaslug) FROM request_logs") == "openai/gpt-4o-2024-08-06"
            await runner.cleanup()
            assert writer.dropped_rows == 0
    finally:
        if not own_pg._running():
            await asyncio.to_thread(own_pg.restart)


async def _true(value: bool) -> bool:
    return value


# --- enrichment from the generation record ------------------------------------------------------------

async def test_generation_enrichment_fills_gaps_and_keeps_the_rollup_equal(pool, tmp_path) -> None:
    asked: list[str] = []

    async def generation(request: web.Request) -> web.Response:
        gid = request.query["id"]
        asked.append(gid)
        if gid == "gen-missing":
            return web.json_response({"error": {"message": "not found"}}, status=404)
        byok = gid == "gen-byok"
        return web.json_response({"data": {"id": gid, "total_cost": 0.0015, "cache_discount": 0.0002,
                                           "upstream_inference_cost": 0.0012, "provider_name": "Infermatic",
                                           "is_byok": byok}})

    upstream = web.Application()
    upstream.router.add_get("/api/v1/generation", generation)
    async with TestServer(upstream, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        enricher = GenerationEnricher(str(server.make_url("/api/v1")), "sk-or-x", session=lambda: session,
                                      pool=lambda: pool, per_second=100, delay=0.0, max_attempts=2)
        writer = LogWriter(settings(tmp_path), pool)
        writer.enricher = enricher
        await enricher.start()
        await writer.start()
        common = dict(model_requested="x/unpriced", response_model="x/unpriced", provider=None,
                      usage={"prompt_tokens": 10, "completion_tokens": 5}, cache_status="miss")
        writer.submit(make_record(0, rid="e-plain", generation_id="gen-plain", **common))
        writer.submit(make_record(1, rid="e-byok", generation_id="gen-byok", **common))
        writer.submit(make_record(2, rid="e-missing", generation_id="gen-missing", **common))
        writer.submit(make_record(3, rid="e-known", generation_id="gen-known",
                                  **{**common, "provider": "OpenAI", "usage": {"prompt_tokens": 1, "cost": 0.5}}))
        writer.submit(make_record(5, rid="e-hit", generation_id="gen-hit", **{**common, "cache_status": "exact"}))
        await writer.flush()
        await wait_for(lambda: _true(enricher.enriched == 3 and asked.count("gen-missing") == 2), timeout=10)
        await writer.stop()
        await enricher.stop()
    rows = {r["request_id"]: r for r in await pool.fetch("SELECT * FROM request_logs")}
    assert (rows["e-plain"]["provider"], rows["e-plain"]["cost"], rows["e-plain"]["byok_cost"]) == \
        ("Infermatic", 0.0015, None)
    assert rows["e-plain"]["cache_discount"] == 0.0002
    assert rows["e-byok"]["byok_cost"] == 0.0012
    assert (rows["e-known"]["provider"], rows["e-known"]["cost"]) == ("OpenAI", 0.5)  # known values stay
    assert rows["e-missing"]["provider"] is None and rows["e-missing"]["cost"] is None
    assert "gen-hit" not in asked and asked.count("gen-missing") == 2
    await rollup_matches_raw(pool)
    assert await pool.fetchval("SELECT count(*) FROM usage_daily WHERE requests = 0") == 0


# --- retention -----------------------------------------------------------------------------------------

async def test_retention_deletes_old_rows_in_batches_and_their_rollup_days(pool) -> None:
    now = datetime.now(UTC)
    rows = [record_to_row(make_record(i, rid=f"old-{i}", when=now - timedelta(days=10, minutes=i)))
            for i in range(7)]
    rows += [record_to_row(make_record(i, rid=f"new-{i}", when=now - timedelta(minutes=i))) for i in range(3)]
    async with pool.acquire() as conn:
        assert await insert_rows(conn, rows) == 10
    deleted = await purge_expired(pool, 3, batch_size=2, pause=0)
    assert deleted == 7
    assert sorted(r["request_id"] for r in await pool.fetch("SELECT request_id FROM request_logs")) == \
        [f"new-{i}" for i in range(3)]
    await rollup_matches_raw(pool)
    assert await purge_expired(pool, 0) == 0
