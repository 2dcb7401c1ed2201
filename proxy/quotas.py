"""Per-token quotas and rate limits, enforced in Redis: requests and tokens per minute, and requests,
tokens and cost per UTC calendar month.

Hot path for a limited token: one EVALSHA of ``quota.lua`` (check every window and count the request,
atomically, so several workers admit exactly the limit between them). Tokens without limits cost nothing:
their parsed options say so and no Redis call is made. After the response the request's tokens and cost
(from its usage, or from pricing) are added with one pipelined call in a background task.

What counts: every model call of the token (POST chat/completions, completions, embeddings, responses), cache
hits included (they are requests), counted when it is admitted; tokens and cost come only from calls the
upstream answered with a usage block. Other proxied paths (``GET /v1/models``) are not counted.

Windows are fixed: the current UTC minute (``rpm``, ``tpm``) and the current UTC calendar month. The clock
is an attribute of :class:`QuotaChecker` so tests can move it across a minute or month boundary.

Every proxied response of a limited token carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (milliseconds since the epoch, as OpenRouter sends it) for the most constraining
limit (the smallest remaining share), and ``X-Orcache-RateLimit-Scope`` naming it. A refused request gets
a 429 OpenAI-format error naming the limit and when it resets, plus ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from logstore.record import CallRecord
from logstore.usage import extract_usage
from proxy.errors import ProxyError
from proxy.keys import PRICING, QUOTAS, REDIS, SETTINGS
from proxy.rediskeys import quota_minute_key, quota_month_key
from proxy.token_options import LIMIT_FIELDS, Limits, options_of
from proxy.tokens import Token

__all__ = ["QUOTA_STATE", "QuotaChecker", "QuotaDecision", "Windows", "enforce_quota", "quota_ctx",
           "quota_headers", "settle_quota"]

log = structlog.get_logger("orcache.quotas")

MINUTE_TTL = 120
MONTH_GRACE = 40 * 86_400  # month counters outlive their month a while, for `redis-cli` and the usage API
_LIMITS = tuple(LIMIT_FIELDS)


@dataclass(frozen=True, slots=True)
class Windows:
    minute: int  # minutes since the epoch
    minute_reset: float  # epoch seconds
    month: str  # "2025-01"
    month_start: float
    month_reset: float


def windows_at(now: float) -> Windows:
    minute = int(now // 60)
    dt = datetime.fromtimestamp(now, UTC)
    start = datetime(dt.year, dt.month, 1, tzinfo=UTC)
    end = datetime(dt.year + (dt.month == 12), dt.month % 12 + 1, 1, tzinfo=UTC)
    return Windows(minute, (minute + 1) * 60.0, f"{dt.year:04d}-{dt.month:02d}", start.timestamp(),
                   end.timestamp())


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fmt(name: str, value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if name == "cost_per_month" else str(int(value))


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    allowed: bool
    limits: Limits
    windows: Windows
    used: tuple[float, float, float, float, float]  # minute req, minute tok, month req, month tok, month cost
    exceeded: str | None = None  # the limit that refused the request

    def reset_of(self, name: str) -> float:
        return self.windows.minute_reset if LIMIT_FIELDS[name][1] == "minute" else self.windows.month_reset

    def quotas(self) -> dict[str, dict[str, Any]]:
        """Every quota: limit (None: none), used and remaining in its window, and when the window resets."""
        out: dict[str, dict[str, Any]] = {}
        for name, used in zip(_LIMITS, self.used):
            limit = getattr(self.limits, name)
            out[name] = {"limit": limit, "used": used,
                         "remaining": None if limit is None else max(limit - used, 0),
                         "resets_at": _iso(self.reset_of(name)),
                         "window": LIMIT_FIELDS[name][1]}
        return out

    def binding(self) -> tuple[str, float, float] | None:
        """(name, limit, remaining) of the most constraining limit: the smallest remaining share."""
        if self.exceeded is not None:
            return self.exceeded, float(getattr(self.limits, self.exceeded)), 0.0
        best: tuple[str, float, float] | None = None
        best_share = math.inf
        for name, used in zip(_LIMITS, self.used):
            limit = getattr(self.limits, name)
            if limit is None:
                continue
            remaining = max(limit - used, 0)
            share = remaining / limit
            if share < best_share:
                best, best_share = (name, float(limit), float(remaining)), share
        return best

    def headers(self) -> dict[str, str]:
        found = self.binding()
        if found is None:
            return {}
        name, limit, remaining = found
        return {
            "X-RateLimit-Limit": _fmt(name, limit),
            "X-RateLimit-Remaining": _fmt(name, remaining),
            "X-RateLimit-Reset": str(int(self.reset_of(name) * 1000)),
            "X-Orcache-RateLimit-Scope": name,
        }

    def error(self, now: float) -> ProxyError:
        name = self.exceeded
        assert name is not None
        limit = getattr(self.limits, name)
        unit, window = LIMIT_FIELDS[name]
        reset = self.reset_of(name)
        wait = max(int(math.ceil(reset - now)), 1)
        kind = "Rate limit" if window == "minute" else "Monthly quota"
        plan = f" (plan {self.limits.plan})" if self.limits.plan else ""
        message = (f"{kind} exceeded for this token{plan}: {name} = {_fmt(name, limit)} {unit} per {window}. "
                   f"It resets at {_iso(reset)} (in {wait} s).")
        headers = {**self.headers(), "Retry-After": str(wait)}
        code = "rate_limit_exceeded" if window == "minute" else "quota_exceeded"
        return ProxyError(429, message, code, param=name, headers=headers)


def _script_text() -> str:
    return Path(__file__).with_name("quota.lua").read_text()


class QuotaChecker:
    """Checks and counts one token's quota windows; its ``clock`` (epoch seconds) is injectable."""

    def __init__(self, redis: Redis, prefix: str, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._prefix = prefix
        self.clock = clock
        self.script = _script_text()
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()
        self._windows: Windows | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        """Load the script once at start-up (a Redis restart forgets it: ``check`` falls back to EVAL)."""
        self.sha = await self._redis.script_load(self.script)

    def windows(self, now: float) -> Windows:
        w = self._windows
        if w is None or w.minute != int(now // 60):
            w = self._windows = windows_at(now)
        return w

    async def check(self, token_id: str, limits: Limits) -> QuotaDecision:
        """Refuse (without counting) when any window is exhausted; otherwise count the request."""
        w = self.windows(self.clock())
        keys = (quota_minute_key(self._prefix, token_id, w.minute), quota_month_key(self._prefix, token_id, w.month))
        args = [_arg(getattr(limits, name)) for name in _LIMITS]
        args += [MINUTE_TTL, int(w.month_reset - w.minute * 60) + MONTH_GRACE]
        try:
            reply = await self._redis.evalsha(self.sha, 2, *keys, *args)
        except NoScriptError:
            reply = await self._redis.eval(self.script, 2, *keys, *args)
        allowed, m_req, m_tok, mo_req, mo_tok, mo_cost, index = reply
        used = (int(m_req), int(m_tok), int(mo_req), int(mo_tok), float(mo_cost))
        exceeded = _LIMITS[int(index) - 1] if int(index) else None
        return QuotaDecision(bool(int(allowed)), limits, w, used, exceeded)

    async def add_usage(self, token_id: str, tokens: int, cost: float) -> None:
        """Tokens and cost of a finished request, into the current windows: one pipelined round trip."""
        if tokens <= 0 and cost <= 0:
            return
        now = self.clock()
        w = self.windows(now)
        minute = quota_minute_key(self._prefix, token_id, w.minute)
        month = quota_month_key(self._prefix, token_id, w.month)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(minute, "tok", tokens)
            pipe.expire(minute, MINUTE_TTL)
            pipe.hincrby(month, "tok", tokens)
            if cost > 0:
                pipe.hincrbyfloat(month, "cost", cost)
            pipe.expire(month, int(w.month_reset - now) + MONTH_GRACE)
            await pipe.execute()

    def add_usage_later(self, token_id: str, record: CallRecord, pricing: Any) -> None:
        task = asyncio.create_task(self._settle(token_id, record, pricing))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, token_id: str, record: CallRecord, pricing: Any) -> None:
        try:
            usage = extract_usage(record.usage)
            cost = usage.cost
            if cost is None and pricing is not None:
                cost = pricing.cost(record.response_model or record.model_requested, usage)
            await self.add_usage(token_id, usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
                                 cost or 0.0)
        except (RedisError, OSError) as exc:
            log.warning("quota_usage_not_counted", token=token_id, error=str(exc))

    async def counters(self, token_id: str, limits: Limits | None) -> QuotaDecision:
        """The current windows' counters, read without counting anything (for the usage API)."""
        w = self.windows(self.clock())
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(quota_minute_key(self._prefix, token_id, w.minute), "req", "tok")
            pipe.hmget(quota_month_key(self._prefix, token_id, w.month), "req", "tok", "cost")
            (m_req, m_tok), (mo_req, mo_tok, mo_cost) = await pipe.execute()
        used = (int(m_req or 0), int(m_tok or 0), int(mo_req or 0), int(mo_tok or 0), float(mo_cost or 0))
        return QuotaDecision(True, limits or Limits(), w, used)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=5.0)


def _arg(limit: float | None) -> str:
    return "0" if limit is None else repr(limit)


# --- hooks into the proxy route ----------------------------------------------------------------------

# the admitted request's decision (None: the token has no limits); set by proxy.prepare for every model call
QUOTA_STATE: web.RequestKey[QuotaDecision | None] = web.RequestKey("quota_state")


async def enforce_quota(request: web.Request, token: Token) -> QuotaDecision | None:
    """Before forwarding: 429 when the token is over a limit; the decision carries the response headers."""
    limits = options_of(token.extra).limits
    if limits is None:
        return None
    checker = request.app[QUOTAS]
    try:
        decision = await checker.check(token.id, limits)
    except (RedisError, OSError) as exc:  # the counters are down: serve rather than refuse everyone
        log.warning("quota_check_failed", token=token.id, error=str(exc))
        return None
    if not decision.allowed:
        raise decision.error(checker.clock())
    return decision


async def quota_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the rate-limit headers of a limited token, on whatever response it gets."""
    decision = request.get(QUOTA_STATE)
    if decision is not None:
        response.headers.update(decision.headers())


def settle_quota(request: web.Request, record: CallRecord) -> None:
    """After the response: add its tokens and cost to the token's windows, off the response path."""
    decision = request.get(QUOTA_STATE)
    if decision is None or not record.usage or record.cache_status in ("exact", "semantic"):
        return
    app = request.app
    app[QUOTAS].add_usage_later(record.token_id or "", record, app.get(PRICING))


async def quota_ctx(app: web.Application) -> AsyncIterator[None]:
    checker = QuotaChecker(app[REDIS], app[SETTINGS].key_prefix)
    try:
        await checker.load()
    except (RedisError, OSError) as exc:  # loaded on first use instead (EVAL on NOSCRIPT)
        log.warning("quota_script_not_loaded", error=str(exc))
    app[QUOTAS] = checker
    yield
    await checker.drain()
