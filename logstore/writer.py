"""The background log writer: request path -> bounded queue -> batches -> Postgres, with a disk spool.

``submit()`` is synchronous and never blocks or raises: it puts the record on a bounded ``asyncio.Queue``;
when that is full the record is converted and appended to the spool file instead. One task drains the queue
in batches (``log_batch_size`` records or ``log_flush_interval`` seconds after the first, whichever comes
first), converts them to rows (``logstore.rows``) and writes each batch in one transaction: COPY into a
temp staging table, ``INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING`` into ``request_logs``, and
the daily rollup upserted from exactly the rows that were inserted.

Failure handling:

* A failed batch is retried with exponential backoff (``max_attempts`` times); then it is appended to the
  spool (orjson lines of converted rows, fsync'd per batch) and the database is considered down: later
  batches go straight to the spool, and a replay is tried with capped exponential backoff. Once it
  succeeds, the spool files are replayed in order (then deleted) before new batches are written again.
  Spool files left by an earlier run (or a dead worker) are replayed at start-up; each file is locked with
  ``flock`` by the process writing it, so workers never replay a live file.
* A batch Postgres rejects for its data (it should not happen: rows are sanitised) is split in halves until
  the bad row is found; that row is stored without its free-text fields, or counted as dropped.
* On shutdown the queue is drained for at most ``drain_timeout`` seconds; the rest is spooled.
* If even the spool cannot be written, the rows are counted in ``dropped_rows`` and logged as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import asyncpg
import structlog
from aiohttp import web

from logstore.pricing import PricingTable
from logstore.record import CallRecord
from logstore.retention import purge_expired
from logstore.rows import (
    COLUMNS,
    HIT_STATUSES,
    minimal_row,
    record_to_row,
    row_from_spool_line,
    row_to_spool_line,
)
from proxy.keys import LOG_WRITER, PG_POOL, PRICING, SETTINGS, UPSTREAM
from proxy.settings import Settings

if TYPE_CHECKING:
    from logstore.enrich import GenerationEnricher

__all__ = ["STAGING_TABLE", "LogWriter", "NullLogWriter", "insert_rows", "log_writer_ctx"]

log = structlog.get_logger(__name__)

STAGING_TABLE = "orcache_log_staging"
_GENERATION = COLUMNS.index("generation_id")
_CACHE_STATUS = COLUMNS.index("cache_status")
_COLS = ", ".join(COLUMNS)
# Created once per connection (temp tables live as long as the session) and emptied at every commit.
_STAGING_DDL = f"""
SET LOCAL client_min_messages = warning;
CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} ON COMMIT DELETE ROWS AS
    SELECT {_COLS} FROM request_logs WITH NO DATA;
"""
ROLLUP_KEYS = ("day", "token_id", "upstream_id", "model", "model_permaslug", "provider", "endpoint_id",
                "cache_status", "status_code")
ROLLUP_SUMS = ("requests", "errors", "streamed", "prompt_tokens", "completion_tokens", "total_tokens",
                "cached_tokens", "cache_creation_tokens", "cache_read_tokens", "reasoning_tokens", "cost",
                "byok_cost", "saved_cost", "saved_prompt_tokens", "saved_completion_tokens", "duration_ms",
                "similarity")
# The rollup row for a group of request rows; shared with queries.rebuild_rollup so both agree.
ROLLUP_SELECT = """
    (created_at AT TIME ZONE 'UTC')::date, coalesce(token_id, ''), coalesce(upstream_id, ''),
    coalesce(model, ''), coalesce(model_permaslug, ''), coalesce(provider, ''), coalesce(endpoint_id, ''),
    cache_status, status_code,
    count(*), count(*) FILTER (WHERE NOT success), count(*) FILTER (WHERE streamed),
    sum(prompt_tokens), sum(completion_tokens), sum(total_tokens), sum(cached_tokens),
    sum(cache_creation_tokens), sum(cache_read_tokens), sum(reasoning_tokens),
    coalesce(sum(cost), 0), coalesce(sum(byok_cost), 0), coalesce(sum(saved_cost), 0),
    sum(saved_prompt_tokens), sum(saved_completion_tokens), coalesce(sum(duration_ms), 0),
    coalesce(sum(similarity) FILTER (WHERE cache_status = 'semantic'), 0)
"""
_GROUP = ", ".join(str(i) for i in range(1, len(ROLLUP_KEYS) + 1))
ROLLUP_UPSERT = (
    f"ON CONFLICT ({', '.join(ROLLUP_KEYS)}) DO UPDATE SET "
    + ", ".join(f"{c} = usage_daily.{c} + EXCLUDED.{c}" for c in ROLLUP_SUMS)
)
_INSERT = f"""
WITH ins AS (
    INSERT INTO request_logs ({_COLS})
    SELECT {_COLS} FROM {STAGING_TABLE}
    ON CONFLICT (request_id) DO NOTHING
    RETURNING created_at, token_id, upstream_id, model, model_permaslug, provider, endpoint_id, cache_status,
              status_code, success, streamed, prompt_tokens, completion_tokens, total_tokens, cached_tokens,
              cache_creation_tokens, cache_read_tokens, reasoning_tokens, cost, byok_cost, saved_cost,
              saved_prompt_tokens, saved_completion_tokens, duration_ms, similarity
), rollup AS (
    INSERT INTO usage_daily ({', '.join(ROLLUP_KEYS + ROLLUP_SUMS)})
    SELECT {ROLLUP_SELECT} FROM ins
    GROUP BY {_GROUP} ORDER BY {_GROUP}
    {ROLLUP_UPSERT}
    RETURNING 1
)
SELECT count(*) FROM ins
"""


async def insert_rows(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert rows (``COLUMNS`` order) and update the rollup in one transaction; returns rows inserted
    (rows whose request_id is already stored are skipped and not counted again)."""
    async with conn.transaction():
        await conn.execute(_STAGING_DDL)
        await conn.copy_records_to_table(STAGING_TABLE, records=rows, columns=COLUMNS)
        return await conn.fetchval(_INSERT)


class _Unavailable(Exception):
    """No pool yet: the database is not configured or not reachable."""


# Postgres or the client rejected the data itself: retrying the same rows cannot help.
_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError,
                UnicodeError, ValueError, TypeError, OverflowError)


def _is_data_error(exc: BaseException) -> bool:
    return isinstance(exc, _DATA_ERRORS) and not isinstance(exc, asyncio.TimeoutError)


class _Spool:
    """Append-only JSON-lines files under ``directory``, named so that sorting them is their age order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self.needs_fsync = False

    @property
    def active(self) -> bool:
        return self._file is not None

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}.jsonl"
        fh = open(path, "a+b")  # noqa: SIM115 - kept open (and flock'ed) while this process appends
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with contextlib.suppress(OSError):  # make the new name durable too
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._file, self._path = fh, path

    def append(self, data: bytes, *, fsync: bool) -> None:
        if self._file is None:
            self._open()
        assert self._file is not None
        self._file.write(data)
        self._file.flush()
        if fsync:
            os.fsync(self._file.fileno())
            self.needs_fsync = False
        else:
            self.needs_fsync = True

    def sync(self) -> None:
        if self._file is not None and self.needs_fsync:
            os.fsync(self._file.fileno())
        self.needs_fsync = False

    def detach(self) -> tuple[Path, IO[bytes]] | None:
        """Stop appending to the current file (still locked) and hand it over for replay."""
        if self._file is None or self._path is None:
            return None
        self.sync()
        out = (self._path, self._file)
        self._file = self._path = None
        return out

    def files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.suffix == ".jsonl")
        except OSError:  # missing or unusable: nothing to replay (spooling will report the problem)
            return []

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self.sync()
            self._file.close()
            self._file = self._path = None


def _open_unowned(path: Path) -> IO[bytes] | None:
    """Open and lock a spool file no live process is appending to (None when one is, or it is gone)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the caller after the replay
    except FileNotFoundError:
        return None  # another worker just finished it
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()  # a live worker still holds it
        return None
    return fh


class LogWriter:
    """Owns the log queue, the batching task, the spool and the retention task."""

    def __init__(
        self,
        settings: Settings,
        pool: Callable[[], asyncpg.Pool | None] | asyncpg.Pool | None = None,
        pricing: Callable[[], PricingTable | None] | PricingTable | None = None,
        *,
        spool_dir: Path | None = None,
        drain_timeout: float = 10.0,
        max_attempts: int = 3,
        retry_base: float = 0.1,
        retry_max: float = 10.0,
        write_timeout: float = 60.0,
        retention_interval: float = 3600.0,
        retention_first_delay: float = 60.0,
    ) -> None:
        self.settings = settings
        self._get_pool = pool if callable(pool) and not isinstance(pool, asyncpg.Pool) else (lambda: pool)
        self._get_pricing = pricing if callable(pricing) and not isinstance(pricing, PricingTable) \
            else (lambda: pricing)
        self.batch_size = max(int(settings.log_batch_size), 1)
        self.flush_interval = max(float(settings.log_flush_interval), 0.0)
        self._queue: asyncio.Queue[CallRecord | None] = asyncio.Queue(maxsize=max(settings.log_queue_size, 1))
        self._spool = _Spool(spool_dir or settings.spool_dir)
        self.drain_timeout = drain_timeout
        self.max_attempts = max(max_attempts, 1)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.write_timeout = write_timeout
        self.retention_interval = retention_interval
        self.retention_first_delay = retention_first_delay

        # counters (read by metrics)
        self.written_rows = 0  # inserted into Postgres (duplicates excluded)
        self.duplicate_rows = 0  # already stored (replays), skipped
        self.spooled_rows = 0  # appended to the spool
        self.replayed_rows = 0  # read back from the spool and sent to Postgres
        self.dropped_rows = 0  # lost: even the spool failed, or a row Postgres would never take
        self.batches_written = 0
        self.batches_failed = 0  # failed attempts (each retry counts)
        self.last_error: str | None = None
        self.enricher: GenerationEnricher | None = None  # set when enrich_generations is on

        self._task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._busy = False  # a batch is being collected, converted or written
        self._batch: list[CallRecord] | None = None  # taken from the queue, not yet converted
        self._converted: list[tuple[Any, ...]] | None = None  # converted, not yet written or spooled
        self._writing: list[tuple[Any, ...]] | None = None  # being written by _write_task
        self._write_task: asyncio.Task[None] | None = None
        self._db_down = False
        self._next_probe = 0.0
        self._backoff = retry_base
        self._spool_pending = False  # rows wait in spool files (set at start-up and whenever we spool)
        self._next_rescan = 0.0

    # --- request path -------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def submit(self, record: CallRecord) -> None:
        """Hand a finished call to the writer: no I/O, no await, never raises."""
        try:
            if self._closed:
                self._spool_records([record], fsync=True)
                return
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._spool_records([record], fsync=False)
        except Exception as exc:  # noqa: BLE001 - the request path must never see a logging failure
            self.dropped_rows += 1
            log.error("log_submit_failed", error=repr(exc), dropped_rows=self.dropped_rows)

    def stats(self) -> dict[str, int]:
        return {
            "queued": self.queued, "written_rows": self.written_rows, "duplicate_rows": self.duplicate_rows,
            "spooled_rows": self.spooled_rows, "replayed_rows": self.replayed_rows,
            "dropped_rows": self.dropped_rows, "batches_written": self.batches_written,
            "batches_failed": self.batches_failed,
        }

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._spool_pending = bool(self._spool.files())  # left by an earlier run: replay them first
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="log-writer")
        if self.settings.log_retention_days > 0 and self._retention_task is None:
            self._retention_task = asyncio.create_task(self._retention_loop(), name="log-retention")

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far has left the queue and its batch is done (tests, tools)."""
        deadline = time.monotonic() + timeout
        while self._queue.qsize() or self._busy or self._batch or (
                self._write_task is not None and not self._write_task.done()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self) -> None:
        """Drain the queue for at most ``drain_timeout`` seconds, spool whatever is left, stop the tasks."""
        self._stopping = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # wake the collector
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=self.drain_timeout)
            except (TimeoutError, Exception) as exc:  # noqa: BLE001
                if not isinstance(exc, asyncio.TimeoutError):
                    log.error("log_writer_crashed", error=repr(exc))
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        for task in (self._retention_task,):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._closed = True
        leftovers: list[CallRecord] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                leftovers.append(item)
        rows: list[tuple[Any, ...]] = []
        task = self._write_task
        if task is not None:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if task.cancelled() and self._writing:
                rows.extend(self._writing)  # maybe committed already: the replay dedupes
        rows.extend(self._converted or [])
        rows.extend(self._convert_now(self._batch or []))
        self._write_task = self._writing = self._converted = self._batch = None
        rows.extend(self._convert_now(leftovers))
        if rows:
            log.warning("log_writer_spooling_on_shutdown", rows=len(rows))
            self._spool_rows(rows, fsync=True)
        with contextlib.suppress(OSError):
            self._spool.close()

    # --- the batching loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            wait = 1.0
            if self._spool_pending and not self._stopping:
                wait = min(wait, max(self._next_probe - now, 0.0))
            # collecting and converting this batch overlaps the previous batch's database write
            batch = await self._collect(wait)
            self._busy = bool(batch)
            try:
                rows = await self._convert(batch) if batch else []
                self._converted, self._batch = rows, None
                await self._finish_write()
                if self._spool.needs_fsync:
                    self._spool_sync()
                now = loop.time()
                if now >= self._next_rescan:  # pick up files a dead worker left behind
                    self._next_rescan = now + 60.0
                    if self._spool.files():
                        self._spool_pending = True
                if self._spool_pending and not self._stopping and now >= self._next_probe:
                    await self._replay()
                if rows:
                    # while older rows wait on disk, new ones queue behind them (order); when shutting down,
                    # straight to Postgres if it answers, the replay happens at the next start
                    if self._db_down or (self._spool_pending and not self._stopping):
                        self._spool_rows(rows, fsync=True)
                    else:
                        self._writing = rows
                        self._write_task = asyncio.create_task(self._write_or_spool(rows), name="log-write")
                self._converted = None
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop logging: keep the rows, go on
                log.exception("log_writer_error", error=repr(exc))
                self._spool_rows([*(self._converted or []), *self._convert_now(self._batch or [])], fsync=True)
                self._converted = None
                await asyncio.sleep(0.5)
            finally:
                self._busy = False
                self._batch = None
            if self._stopping and self._queue.empty():
                await self._finish_write()
                return

    async def _finish_write(self) -> None:
        """Wait for the batch being written (it never raises: a failed batch is spooled)."""
        task = self._write_task
        if task is None:
            return
        await task
        self._write_task = None
        self._writing = None

    async def _collect(self, wait: float) -> list[CallRecord]:
        """Up to batch_size records: waits ``wait`` for the first, then ``flush_interval`` for the rest."""
        queue = self._queue
        batch: list[CallRecord] = []
        self._batch = batch  # visible to flush() and stop() while it fills
        if queue.empty() and not self._stopping:
            try:
                first = await asyncio.wait_for(queue.get(), timeout=wait) if wait > 0 else queue.get_nowait()
            except (TimeoutError, asyncio.QueueEmpty):
                return batch
            if first is not None:
                batch.append(first)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.flush_interval
        while len(batch) < self.batch_size:
            while len(batch) < self.batch_size and not queue.empty():
                item = queue.get_nowait()
                if item is not None:
                    batch.append(item)
            if len(batch) >= self.batch_size or self._stopping:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(queue.get(), timeout=remaining)
            except TimeoutError:
                break
            if item is not None:
                batch.append(item)
        return batch

    # --- conversion ---------------------------------------------------------------------------------

    def _convert_one(self, record: CallRecord, pricing: PricingTable | None) -> tuple[Any, ...] | None:
        s = self.settings
        try:
            return record_to_row(record, pricing=pricing, preview_chars=s.log_preview_chars,
                                 store_bodies=s.log_store_bodies)
        except Exception as exc:  # noqa: BLE001 - keep the call, without what we could not read
            log.error("log_row_conversion_failed", error=repr(exc),
                      request_id=getattr(record, "request_id", None))
            try:
                bare = CallRecord(request_id=record.request_id, created_at=record.created_at,
                                  method=str(record.method), path=str(record.path), status=record.status,
                                  error=f"log conversion failed: {exc!r}")
                return record_to_row(bare)
            except Exception:  # noqa: BLE001
                self.dropped_rows += 1
                return None

    def _convert_now(self, records: Sequence[CallRecord]) -> list[tuple[Any, ...]]:
        pricing = self._get_pricing()
        rows = (self._convert_one(r, pricing) for r in records)
        return [r for r in rows if r is not None]

    async def _convert(self, records: Sequence[CallRecord]) -> list[tuple[Any, ...]]:
        """Convert in slices, yielding to the event loop between them so requests are not held up."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(records), 250):
            if start:
                await asyncio.sleep(0)
            rows.extend(self._convert_now(records[start:start + 250]))
        return rows

    # --- Postgres -----------------------------------------------------------------------------------

    async def _insert(self, rows: Sequence[tuple[Any, ...]]) -> int:
        pool = self._get_pool()
        if pool is None:
            raise _Unavailable("no database pool")
        async with pool.acquire(timeout=self.write_timeout) as conn:
            return await asyncio.wait_for(insert_rows(conn, rows), timeout=self.write_timeout)

    async def _insert_isolating_bad_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert; if Postgres rejects the data, bisect to the bad rows and store them stripped (or drop).

        Connection-level errors propagate: the caller retries or spools.
        """
        try:
            return await self._insert(rows)
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            if len(rows) > 1:
                mid = len(rows) // 2
                return (await self._insert_isolating_bad_rows(rows[:mid])
                        + await self._insert_isolating_bad_rows(rows[mid:]))
            reason = repr(exc)[:300]
        try:
            inserted = await self._insert([minimal_row(rows[0], reason)])
            log.error("log_row_stored_stripped", request_id=rows[0][0], error=reason)
            return inserted
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            self.dropped_rows += 1
            log.error("log_row_dropped", request_id=rows[0][0], error=repr(exc), dropped_rows=self.dropped_rows)
            return 0

    async def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        inserted = await self._insert_isolating_bad_rows(rows)
        self.written_rows += inserted
        self.duplicate_rows += max(len(rows) - inserted, 0)
        self.batches_written += 1
        if self.enricher is not None:
            for row in rows:
                if row[_GENERATION] and row[_CACHE_STATUS] not in HIT_STATUSES:
                    self.enricher.add(row[0], row[_GENERATION])

    def _mark_up(self) -> None:
        if self._db_down:
            log.info("log_store_recovered")
        self._db_down = False
        self._backoff = self.retry_base

    def _mark_down(self, exc: BaseException) -> None:
        loop = asyncio.get_running_loop()
        self._next_probe = loop.time() + self._backoff
        if not self._db_down:
            log.warning("log_store_unavailable", error=repr(exc), spooling_to=str(self._spool.directory))
        self._db_down = True
        self._backoff = min(self._backoff * 2, self.retry_max)

    async def _write_or_spool(self, rows: list[tuple[Any, ...]]) -> None:
        for attempt in range(self.max_attempts):
            try:
                await self._write(rows)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - every failure here means "not stored yet"
                self.batches_failed += 1
                self.last_error = repr(exc)
                if attempt + 1 < self.max_attempts and not self._stopping:
                    log.info("log_batch_retry", attempt=attempt + 1, error=repr(exc), rows=len(rows))
                    await asyncio.sleep(min(self.retry_base * 2**attempt, self.retry_max))
                    continue
                self._mark_down(exc)
                self._spool_rows(rows, fsync=True)
                return
            self._mark_up()
            return

    # --- spool --------------------------------------------------------------------------------------

    def _spool_rows(self, rows: Sequence[tuple[Any, ...]], *, fsync: bool) -> None:
        if not rows:
            return
        try:
            self._spool.append(b"".join(row_to_spool_line(r) for r in rows), fsync=fsync)
        except Exception as exc:  # noqa: BLE001 - the last resort failed: count, say so loudly
            self.dropped_rows += len(rows)
            log.error("log_rows_dropped", rows=len(rows), dropped_rows=self.dropped_rows, error=repr(exc),
                      spool_dir=str(self._spool.directory))
            return
        self.spooled_rows += len(rows)
        self._spool_pending = True

    def _spool_records(self, records: Sequence[CallRecord], *, fsync: bool) -> None:
        self._spool_rows(self._convert_now(records), fsync=fsync)

    def _spool_sync(self) -> None:
        try:
            self._spool.sync()
        except OSError as exc:
            log.error("log_spool_fsync_failed", error=repr(exc))

    async def _replay(self) -> None:
        """Send every spool file to Postgres, oldest first, deleting each once it is stored."""
        own = self._spool.detach()
        incomplete = False
        try:
            for path in self._spool.files():
                if own is not None and path == own[0]:
                    fh: IO[bytes] = own[1]
                    own = None
                else:
                    opened = _open_unowned(path)
                    if opened is None:
                        continue
                    fh = opened
                try:
                    if not await self._replay_file(path, fh):
                        incomplete = True
                        return
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                finally:
                    fh.close()
        finally:
            if own is not None:
                own[1].close()
            # new overflow may have opened a fresh file meanwhile; a failed replay leaves files behind
            self._spool_pending = incomplete or self._spool.active

    async def _replay_file(self, path: Path, fh: IO[bytes]) -> bool:
        fh.seek(0)
        chunk: list[tuple[Any, ...]] = []
        bad = 0
        for line in fh:
            if not line.strip():
                continue
            try:
                chunk.append(row_from_spool_line(line))
            except Exception:  # noqa: BLE001 - a line cut short by a crash
                bad += 1
                continue
            if len(chunk) >= self.batch_size:
                if not await self._replay_chunk(chunk):
                    return False
                chunk = []
        if chunk and not await self._replay_chunk(chunk):
            return False
        if bad:
            self.dropped_rows += bad
            log.error("log_spool_unreadable_lines", file=path.name, lines=bad, dropped_rows=self.dropped_rows)
        log.info("log_spool_replayed", file=path.name)
        return True

    async def _replay_chunk(self, rows: list[tuple[Any, ...]]) -> bool:
        try:
            await self._write(rows)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001
            self.batches_failed += 1
            self.last_error = repr(exc)
            self._mark_down(exc)
            return False
        self.replayed_rows += len(rows)
        self._mark_up()
        return True

    # --- retention ----------------------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        await asyncio.sleep(self.retention_first_delay)
        while True:
            pool = self._get_pool()
            if pool is not None:
                try:
                    await purge_expired(pool, self.settings.log_retention_days)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # noqa: BLE001 - try again next time
                    log.warning("retention_failed", error=repr(exc))
            await asyncio.sleep(self.retention_interval)


class NullLogWriter(LogWriter):
    """``logging_enabled = False``: the same interface, nothing recorded."""

    def submit(self, record: CallRecord) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._closed = True


async def log_writer_ctx(app: web.Application) -> AsyncIterator[None]:
    """Owns ``app[LOG_WRITER]``. Registered after the Postgres context, so it stops (drains) first.

    The pool and the pricing table are looked up at each use, so the writer works whether they exist
    yet or not (batches are spooled until a pool answers).
    """
    settings = app[SETTINGS]
    cls = LogWriter if settings.logging_enabled else NullLogWriter
    writer = cls(settings, pool=lambda: app.get(PG_POOL), pricing=lambda: app.get(PRICING))
    enricher = None
    if settings.logging_enabled and settings.enrich_generations:
        from logstore.enrich import GenerationEnricher

        enricher = GenerationEnricher(settings.upstream_url, settings.openrouter_api_key,
                                      session=lambda: app.get(UPSTREAM), pool=lambda: app.get(PG_POOL))
        writer.enricher = enricher
        await enricher.start()
    app[LOG_WRITER] = writer
    await writer.start()
    yield
    await writer.stop()
    if enricher is not None:
        await enricher.stop()
