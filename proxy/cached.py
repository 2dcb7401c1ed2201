"""The response cache, seen from the proxy route: decide, look up, serve a hit, store a miss later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from cache import keys
from cache.assemble import StreamAssembler
from cache.canonical import Fingerprint
from cache.replay import render_json, render_sse
from cache.response_cache import CacheLookup, ResponseCache, SingleFlight
from logstore.record import CallRecord
from proxy.errors import ProxyError
from proxy.keys import METRICS, RESPONSE_CACHE, SETTINGS
from proxy.middleware import REQUEST_ID
from proxy.tokens import Token

__all__ = ["CacheContext", "cache_context", "serve_hit", "parse_cache_control"]

log = structlog.get_logger("orcache.cache")
_HEADER = {"exact": "HIT-EXACT", "semantic": "HIT-SEMANTIC"}


def parse_cache_control(value: str | None) -> tuple[bool, bool, int | None]:
    """(skip lookup, skip store, max-age) from a request's Cache-Control header."""
    if not value:
        return False, False, None
    no_cache = no_store = False
    max_age: int | None = None
    for part in value.lower().split(","):
        name, _, arg = part.strip().partition("=")
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age":
            try:
                max_age = int(arg.strip().strip('"'))
            except ValueError:
                raise ProxyError(400, f"Cache-Control max-age must be a whole number of seconds (got {arg!r}).",
                                 "invalid_cache_control") from None
            if max_age < 0:
                raise ProxyError(400, "Cache-Control max-age must not be negative.", "invalid_cache_control")
    return no_cache or no_store, no_store, max_age


def parse_threshold_header(value: str | None) -> float | None:
    """X-Cache-Threshold: 0-1 (or a percentage like '85%'); it can only raise the token's threshold."""
    if value is None:
        return None
    text = value.strip()
    try:
        number = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise ProxyError(400, f"X-Cache-Threshold must be a number from 0 to 1 (got {value!r}).",
                         "invalid_cache_threshold") from None
    if not 0.0 <= number <= 1.0:
        raise ProxyError(400, f"X-Cache-Threshold must be from 0 to 1 (got {value!r}).", "invalid_cache_threshold")
    return number


@dataclass(slots=True)
class CacheContext:
    cache: ResponseCache
    token: Token
    fp: Fingerprint
    lookup: CacheLookup | None
    store: bool
    ttl: int
    header: str
    leader_lock: SingleFlight | None = None
    include_usage: bool = False

    @property
    def hit(self) -> Any:
        lookup = self.lookup
        if lookup is None or lookup.status not in _HEADER:
            return None
        return lookup.ready if lookup.ready is not None else lookup.entry

    def mark(self, headers: Any, *, answered: bool) -> None:
        """``X-Cache`` on a relayed answer, and ``X-Cache-Entry`` when it is (``answered``: a 200) stored: the
        id the admin API deletes it by."""
        headers["X-Cache"] = self.header
        if answered and self.store:
            headers["X-Cache-Entry"] = keys.entry_id(self.token.cache_scope, self.fp.exact_key)

    def assembler(self) -> StreamAssembler | None:
        return StreamAssembler() if self.store else None

    async def recheck(self) -> bool:
        """After waiting on a concurrent identical request: is its answer in the cache now?"""
        again = await self.cache.lookup(self.token, self.fp, exact_only=True)
        if again.status == "exact":
            self.lookup = again
            return True
        return False

    def store_later(self, response: dict[str, Any]) -> None:
        """Store off the response path; failures are the cache's to log, never the client's problem."""
        if not self.store:
            return
        self.cache.schedule_store(self.token, self.fp, self.lookup, response, self.ttl, flight=self.leader_lock)


async def cache_context(request: web.Request, token: Token, tail: str, payload: dict[str, Any], body: bytes,
                        record: CallRecord) -> CacheContext | None:
    """``body``: the request body as it goes upstream, ``payload`` parsed from it (or it serialised from
    ``payload``)."""
    app = request.app
    cache = app.get(RESPONSE_CACHE)
    if token.cache_mode == "off" or cache is None or not app[SETTINGS].cache_enabled:
        record.cache_status = "off"
        return None
    skip_lookup, skip_store, max_age = parse_cache_control(request.headers.get("Cache-Control"))
    min_threshold = parse_threshold_header(request.headers.get("X-Cache-Threshold"))
    fp = cache.fingerprint("/" + tail, payload, body)
    if fp is None:
        record.cache_status = "bypass"
        return None
    ttl = max_age if max_age is not None else token.cache_ttl_seconds
    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    if skip_lookup:  # no-cache: stored all the same; no-store: not even that (the answer still says BYPASS)
        record.cache_status = "bypass"
        return CacheContext(cache, token, fp, None, store=not skip_store and ttl > 0, ttl=ttl, header="BYPASS",
                            include_usage=include_usage)
    store = not skip_store and ttl > 0
    # a miss that will be stored enters the single flight in the lookup's own round trip
    flight = cache.single_flight(fp.exact_key, scope=token.cache_scope) if store else None
    lookup = await cache.lookup(token, fp, min_threshold=min_threshold, flight=flight)
    metrics = app[METRICS]
    if lookup.status in _HEADER:
        metrics.cache_result(lookup.status)
        return CacheContext(cache, token, fp, lookup, store=False, ttl=ttl, header=_HEADER[lookup.status],
                            include_usage=include_usage)
    metrics.cache_result("miss")
    record.cache_status = "miss"
    return CacheContext(cache, token, fp, lookup, store=store, ttl=ttl, header="MISS", include_usage=include_usage,
                        leader_lock=flight)


async def serve_hit(request: web.Request, ctx: CacheContext, stream: bool, record: CallRecord) -> web.StreamResponse:
    lookup = ctx.lookup
    assert lookup is not None and lookup.hit
    rid = request[REQUEST_ID]
    record.cache_status = lookup.status
    record.similarity = lookup.similarity
    headers = {"X-Cache": _HEADER[lookup.status], "X-Request-Id": rid}
    if record.request_id != rid:
        headers["X-Orcache-Request-Id"] = record.request_id
    if lookup.similarity is not None and lookup.status == "semantic":
        headers["X-Cache-Similarity"] = f"{lookup.similarity:.4f}"
    ready = lookup.ready
    if ready is not None and not stream:  # the repeated request: pre-rendered, nothing parsed
        headers["X-Cache-Entry"] = ready.id
        record.saved_usage, record.saved_cost = ready.usage, ready.cost
        record.response_model, record.provider = ready.model, ready.provider
        return web.Response(body=ready.render_json(rid), content_type="application/json", headers=headers)
    entry = lookup.entry
    assert entry is not None
    headers["X-Cache-Entry"] = entry.id  # the id to delete it by (a semantic hit's: the entry that answered)
    record.saved_usage = entry.usage
    record.saved_cost = entry.cost
    response = entry.response
    record.response_model = response.get("model")
    record.provider = response.get("provider")
    if not stream:
        return web.Response(body=render_json(entry, rid), content_type="application/json", headers=headers)
    # the whole replay in one body (one write): an SSE client reads events the same however they are framed
    headers["Cache-Control"] = "no-cache"
    return web.Response(body=b"".join(render_sse(entry, rid, ctx.include_usage)), content_type="text/event-stream",
                        headers=headers)
