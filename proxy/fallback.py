"""Proxy-side fallbacks: retry a failing model with backoff, then try the next one, within a time budget.

A token's ``fallback_models`` (or the request header ``X-Orcache-Fallback-Models: a/b,c/d``; ``none``
turns the token's list off for one request) names the models to try after the requested one. An attempt
fails on 429, any 5xx, a timeout or a connection failure; it is retried on the same model up to
``fallback_retries`` times, waiting ``fallback_backoff_seconds`` (doubled each time) or the upstream's
``Retry-After`` when it asks for no more than ``fallback_retry_after_cap_seconds`` (a longer wait moves on to
the next model at once). All attempts share ``fallback_budget_seconds`` (per token, or the setting). When
every attempt fails the client gets the last one's answer (or 504/502 for a timeout/connection failure).

Only what happens before the client has seen a byte can be retried: a non-streamed answer is read in full
inside the attempt (so a body that stops half way falls back too); a stream is handed to the relay as soon
as the upstream answers 200, and a failure after that is reported in-band, never retried.

Every attempt goes on the call's log row (``routing`` column): model, status, error, milliseconds; with the
strategy, the models in order, whether a fallback served the call and the final model. An answer from a
fallback model is not stored in the response cache under the requested model's key.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from aiohttp import web

from logstore.record import CallRecord
from proxy.errors import ProxyError
from proxy.keys import SETTINGS
from proxy.token_options import TokenOptions, parse_models
from proxy.upstream import UPSTREAM_FAILURES, map_upstream_error
from proxy.upstream_client import UpstreamClient, UpstreamResponse

__all__ = ["FALLBACK_HEADER", "FALLBACK_PLAN", "FallbackPlan", "fallback_plan"]

FALLBACK_HEADER = "X-Orcache-Fallback-Models"
_OFF = frozenset({"", "none", "off", "0"})


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(slots=True)
class FallbackPlan:
    models: list[str]  # the requested model first (None stands for "as the body says")
    payload: dict[str, Any]
    stream: bool
    budget: float
    retries: int
    backoff: float
    retry_after_cap: float
    record: CallRecord
    attempts: list[dict[str, Any]] = field(default_factory=list)

    async def _attempt(self, client: UpstreamClient, method: str, base: str, target: str, data: bytes,
                       headers: Any, remaining: float) -> UpstreamResponse:
        async with asyncio.timeout(remaining):
            resp = await client.request(method, base, target, headers, data)
            try:
                if not (self.stream and resp.status == 200):
                    await resp.read()  # held in the response: the relay reads it from there
            except BaseException:
                resp.release()
                raise
        return resp

    async def run(self, client: UpstreamClient, method: str, base: str, target: str, body: bytes, headers: Any,
                  cache_ctx: Any = None) -> UpstreamResponse:
        """Like ``client.request(...)``: the answer of the attempt that answered (the caller releases it)."""
        deadline = time.monotonic() + self.budget
        last_resp: UpstreamResponse | None = None
        last_exc: BaseException | None = None
        try:
            for index, model in enumerate(self.models):
                data = body if index == 0 else orjson.dumps({**self.payload, "model": model})
                for retry in range(self.retries + 1):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    started = time.perf_counter()
                    try:
                        resp = await self._attempt(client, method, base, target, data, headers, remaining)
                    except UPSTREAM_FAILURES as exc:
                        err = map_upstream_error(exc)
                        self._note(model, err.status, err.message, started)
                        if last_resp is not None:
                            last_resp.release()
                            last_resp = None
                        last_exc = exc
                        wait: float | None = self.backoff * 2 ** retry
                    else:
                        ok = not _retryable(resp.status)
                        self._note(model, resp.status, None if ok else f"HTTP {resp.status}", started)
                        if ok:
                            self._finish(model, cache_ctx)
                            if last_resp is not None:
                                last_resp.release()
                            return resp
                        if last_resp is not None:
                            last_resp.release()
                        last_resp, last_exc = resp, None
                        after = _retry_after(resp.headers.get("Retry-After"))
                        wait = self.backoff * 2 ** retry if after is None else (
                            after if after <= self.retry_after_cap else None)
                    if retry == self.retries or wait is None or time.monotonic() + wait >= deadline:
                        break  # on to the next model
                    await asyncio.sleep(wait)
                if deadline - time.monotonic() <= 0:
                    break
        except BaseException:
            if last_resp is not None:
                last_resp.release()
            raise
        self._finish(None, cache_ctx)
        if last_resp is not None:
            return last_resp
        if last_exc is not None:
            raise last_exc
        raise TimeoutError("fallback budget spent before any attempt")

    def _note(self, model: str, status: int, error: str | None, started: float) -> None:
        self.attempts.append({"model": model, "status": status, "error": error,
                              "ms": round((time.perf_counter() - started) * 1000.0, 1)})

    def _finish(self, model: str | None, cache_ctx: Any) -> None:
        primary = self.models[0]
        used = model is not None and model != primary
        record = self.record
        record.attempts = self.attempts
        record.routing = {**(record.routing or {}), "strategy": "proxy_fallback", "models": self.models,
                          "fallback_used": used, "final_model": model}
        if used and cache_ctx is not None:
            cache_ctx.store = False  # not the requested model's answer


# the request's plan (None: no fallback models apply); set by proxy.prepare for every model call
FALLBACK_PLAN: web.RequestKey[FallbackPlan | None] = web.RequestKey("fallback_plan")


def fallback_plan(request: web.Request, options: TokenOptions, payload: dict[str, Any],
                  record: CallRecord) -> FallbackPlan | None:
    """The plan for this request, or None when no fallback models apply (the plain, fast path)."""
    header = request.headers.get(FALLBACK_HEADER)
    if header is not None:
        if header.strip().lower() in _OFF:
            return None
        try:
            models = parse_models(header, FALLBACK_HEADER)
        except ValueError as exc:
            raise ProxyError(400, str(exc), "invalid_fallback_models", param=FALLBACK_HEADER) from None
    else:
        models = list(options.fallback_models)
    if not models:
        return None
    primary = payload.get("model")
    if not isinstance(primary, str) or not primary:
        return None  # OpenRouter's own `models` list routes this one
    chain = [primary] + [m for i, m in enumerate(models) if m != primary and m not in models[:i]]
    settings = request.app[SETTINGS]
    return FallbackPlan(
        models=chain, payload=payload, stream=payload.get("stream") is True,
        budget=options.fallback_budget_seconds or settings.fallback_budget_seconds,
        retries=max(settings.fallback_retries, 0), backoff=max(settings.fallback_backoff_seconds, 0.0),
        retry_after_cap=settings.fallback_retry_after_cap_seconds, record=record)
