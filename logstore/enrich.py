"""Optional enrichment from OpenRouter's generation record (``enrich_generations``, off by default).

After a row is stored, its ``generation_id`` is queued here; a background task asks
``GET {upstream_url}/generation?id=...`` (rate-limited, after a short delay: the record appears a few seconds
after the call) and fills what the response did not say: the provider, the cost, the BYOK cost and the cache
discount. Fields already known are kept. The row and the daily rollup change in one transaction (the old
row's contribution is taken out and the new one's put in), so the rollup still equals the raw rows. Nothing
here is on the request path; when the queue is full, enrichment is skipped (it is best effort).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import structlog

from logstore.writer import ROLLUP_KEYS, ROLLUP_SUMS, ROLLUP_UPSERT

__all__ = ["GenerationEnricher", "apply_generation"]

log = structlog.get_logger(__name__)

# the rollup measures with a sign, so one row's old and new contributions can be netted in one upsert
_SIGNED = """
    (created_at AT TIME ZONE 'UTC')::date, coalesce(token_id, ''), coalesce(upstream_id, ''),
    coalesce(model, ''), coalesce(model_permaslug, ''), coalesce(provider, ''), coalesce(endpoint_id, ''),
    cache_status, status_code,
    sum(sign), coalesce(sum(sign) FILTER (WHERE NOT success), 0), coalesce(sum(sign) FILTER (WHERE streamed), 0),
    sum(sign * prompt_tokens), sum(sign * completion_tokens), sum(sign * total_tokens), sum(sign * cached_tokens),
    sum(sign * cache_creation_tokens), sum(sign * cache_read_tokens), sum(sign * reasoning_tokens),
    coalesce(sum(sign * cost), 0), coalesce(sum(sign * byok_cost), 0), coalesce(sum(sign * saved_cost), 0),
    sum(sign * saved_prompt_tokens), sum(sign * saved_completion_tokens), coalesce(sum(sign * duration_ms), 0),
    coalesce(sum(sign * similarity) FILTER (WHERE cache_status = 'semantic'), 0)
"""
_ROW = ("created_at, token_id, upstream_id, model, model_permaslug, provider, endpoint_id, cache_status, "
        "status_code, success, streamed, prompt_tokens, completion_tokens, total_tokens, cached_tokens, "
        "cache_creation_tokens, cache_read_tokens, reasoning_tokens, cost, byok_cost, saved_cost, "
        "saved_prompt_tokens, saved_completion_tokens, duration_ms, similarity")
_GROUP = ", ".join(str(i) for i in range(1, len(ROLLUP_KEYS) + 1))
_APPLY = f"""
WITH old AS (
    SELECT id, {_ROW} FROM request_logs WHERE request_id = $1 FOR UPDATE
), upd AS (
    UPDATE request_logs r SET
        provider = coalesce(r.provider, $2),
        cost = coalesce(r.cost, $3),
        byok_cost = coalesce(r.byok_cost, $4),
        cache_discount = coalesce($5, r.cache_discount)
    FROM old WHERE r.id = old.id
    RETURNING {', '.join('r.' + c.strip() for c in _ROW.split(','))}
), delta AS (
    SELECT -1 AS sign, {_ROW} FROM old
    UNION ALL
    SELECT 1 AS sign, {_ROW} FROM upd
), rollup AS (
    INSERT INTO usage_daily ({', '.join(ROLLUP_KEYS + ROLLUP_SUMS)})
    SELECT {_SIGNED} FROM delta GROUP BY {_GROUP} ORDER BY {_GROUP}
    {ROLLUP_UPSERT}
    RETURNING 1
)
SELECT count(*) FROM upd
"""


def _float(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


async def apply_generation(conn: asyncpg.Connection, request_id: str, data: dict[str, Any]) -> bool:
    """Fill one row from a generation record (``data`` of the response); False when the row is unknown."""
    provider = data.get("provider_name") if isinstance(data.get("provider_name"), str) else None
    cost = _float(data.get("total_cost"))
    byok = _float(data.get("upstream_inference_cost")) if data.get("is_byok") else None
    async with conn.transaction():
        updated = await conn.fetchval(_APPLY, request_id, provider, cost, byok, _float(data.get("cache_discount")))
        if updated:
            # a row that moved to another provider leaves an empty rollup row behind
            await conn.execute("DELETE FROM usage_daily WHERE requests = 0 AND day = "
                               "(SELECT (created_at AT TIME ZONE 'UTC')::date FROM request_logs WHERE request_id = $1)",
                               request_id)
    return bool(updated)


class GenerationEnricher:
    def __init__(self, upstream_url: str, api_key: str | None,
                 session: Callable[[], aiohttp.ClientSession | None],
                 pool: Callable[[], asyncpg.Pool | None], *, per_second: float = 5.0, delay: float = 3.0,
                 max_pending: int = 10_000, max_attempts: int = 3, proxy: str | None = None) -> None:
        self._url = upstream_url.rstrip("/") + "/generation"
        self._proxy = proxy
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session = session
        self._pool = pool
        self._interval = 1.0 / max(per_second, 0.01)
        self._delay = delay
        self._max_attempts = max_attempts
        self._queue: asyncio.Queue[tuple[float, str, str, int]] = asyncio.Queue(maxsize=max_pending)
        self._task: asyncio.Task[None] | None = None
        self.enriched = 0
        self.skipped = 0

    def add(self, request_id: str, generation_id: str) -> None:
        try:
            self._queue.put_nowait((time.monotonic() + self._delay, request_id, generation_id, 1))
        except asyncio.QueueFull:
            self.skipped += 1

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="generation-enricher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            due, request_id, generation_id, attempt = await self._queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                done = await self._enrich(request_id, generation_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - best effort: try again later, then give up
                log.info("generation_enrich_failed", request_id=request_id, error=repr(exc), attempt=attempt)
                done = False
            if not done and attempt < self._max_attempts:
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait((time.monotonic() + self._delay * 2**attempt, request_id,
                                            generation_id, attempt + 1))
            await asyncio.sleep(self._interval)

    async def _enrich(self, request_id: str, generation_id: str) -> bool:
        session, pool = self._session(), self._pool()
        if session is None or pool is None:
            return False
        async with session.get(self._url, params={"id": generation_id}, headers=self._headers,
                               timeout=aiohttp.ClientTimeout(total=15), proxy=self._proxy) as resp:
            if resp.status != 200:
                return False
            body = await resp.json(content_type=None)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return False
        async with pool.acquire() as conn:
            if await apply_generation(conn, request_id, data):
                self.enriched += 1
                return True
        return False
