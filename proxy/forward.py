"""The proxy route: parse -> authorise -> cache lookup -> forward -> record.

Bodies are relayed as bytes; the request JSON is parsed once (model, stream flag, cache key) and only
re-serialised when the proxy must change it (asking a stream for its usage).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import orjson
import structlog
from aiohttp import web

from logstore.record import CallRecord
from proxy.auth import require_token
from proxy.cached import CacheContext, cache_context, serve_hit
from proxy.errors import ProxyError
from proxy.fallback import FALLBACK_PLAN
from proxy.keys import SETTINGS, UPSTREAM_CLIENT
from proxy.middleware import CALL_RECORD, REQUEST_ID, is_proxy_path, proxy_tail
from proxy.prepare import prepare_request
from proxy.streaming import EventStreamResponse, SSEWatcher
from proxy.tokens import Token
from proxy.upstream import UPSTREAM_FAILURES, map_upstream_error, request_headers, response_headers
from proxy.upstream_client import UpstreamResponse

__all__ = ["proxy_handler"]

log = structlog.get_logger("orcache.forward")

# endpoints the proxy knows: allowed methods; everything else is passed through unchanged
_METHODS: dict[str, frozenset[str]] = {
    "chat/completions": frozenset({"POST"}),
    "completions": frozenset({"POST"}),
    "embeddings": frozenset({"POST"}),
    "models": frozenset({"GET"}),
    "responses": frozenset({"POST"}),
}
_JSON_BODY = frozenset({"chat/completions", "completions", "embeddings", "responses"})
# streams where OpenAI-style `stream_options.include_usage` asks for a final usage chunk
_USAGE_OPTION = frozenset({"chat/completions", "completions"})


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body:
        raise ProxyError(400, "Request body is empty; expected a JSON object.", "invalid_json")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProxyError(400, f"Request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(payload, dict):
        raise ProxyError(400, "Request body must be a JSON object.", "invalid_json")
    return payload


def _observe_json(record: CallRecord, obj: Any, status: int, preview_chars: int) -> None:
    if not isinstance(obj, dict):
        return
    if status >= 400:
        err = obj.get("error")
        record.error = (err.get("message") if isinstance(err, dict) else str(err or ""))[:1000] or f"HTTP {status}"
        return
    record.generation_id = obj.get("id")
    record.response_model = obj.get("model")
    record.provider = obj.get("provider")
    record.usage = obj.get("usage")
    choices = obj.get("choices")
    if choices and isinstance(choices, list):
        first = choices[0]
        msg = first.get("message") if isinstance(first, dict) else None
        text = msg.get("content") if isinstance(msg, dict) else first.get("text")
        if isinstance(text, str):
            record.response_preview = text[:preview_chars]


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    record = request[CALL_RECORD]
    tail = proxy_tail(request.path)
    allowed = _METHODS.get(tail)
    if allowed is not None and request.method not in allowed:
        raise ProxyError(405, f"{request.method} is not supported on /v1/{tail}; use {', '.join(sorted(allowed))}.",
                         "method_not_allowed", headers={"Allow": ", ".join(sorted(allowed))})

    token = await require_token(request)
    record.token_id = token.id
    record.token_name = token.name
    record.upstream_id = token.upstream or "default"

    body = await request.read()
    payload: dict[str, Any] | None = None
    stream = False
    hold_usage = False
    if request.method == "POST" and tail in _JSON_BODY:
        payload = _parse_body(body)
        body = await prepare_request(request, token, tail, payload, body, record)  # presets, quotas, fallbacks
        model = payload.get("model")
        record.model_requested = model if isinstance(model, str) else None
        record.request_json = payload
        stream = payload.get("stream") is True
        record.streamed = stream

    cache_ctx: CacheContext | None = None
    if payload is not None:
        cache_ctx = await cache_context(request, token, tail, payload, body, record)
        if cache_ctx is not None and cache_ctx.hit is not None:
            return await serve_hit(request, cache_ctx, stream, record)

    if stream and tail in _USAGE_OPTION and payload is not None:
        options = payload.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage")):
            # ask for the usage chunk so the call can be accounted; the client never sees it
            payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            body = orjson.dumps(payload)
            hold_usage = True

    flight = cache_ctx.leader_lock if cache_ctx is not None else None
    if flight is None:
        return await _forward(request, settings, token, tail, body, stream, hold_usage, record, cache_ctx)
    assert cache_ctx is not None
    leader = await flight.__aenter__()
    try:
        # a concurrent identical request may have filled the cache while we waited our turn (a leader that
        # took the lock at once has just looked the key up: asking Redis again would only cost a round trip)
        if not leader and await cache_ctx.recheck():
            resp = await serve_hit(request, cache_ctx, stream, record)
        else:
            resp = await _forward(request, settings, token, tail, body, stream, hold_usage, record, cache_ctx)
    except BaseException:
        flight.release()
        raise
    # an answer being stored finishes the flight when it is in Redis (after the response is out)
    flight.release_unless_storing()
    return resp


def _mime(content_type: str | None) -> str:
    """The media type of a Content-Type header, as ``ClientResponse.content_type`` gives it, without the
    email-module parsing behind that property (both sides only ever compare it with plain types)."""
    if not content_type:
        return "application/octet-stream"
    return content_type.partition(";")[0].strip().lower()


def _upstream_base(settings_url: str, token: Token) -> str:
    return token.upstream if token.upstream.startswith(("http://", "https://")) else settings_url


def _target(request: web.Request, tail: str) -> str:
    """The path under the upstream's base URL, with the query: as the client encoded them."""
    raw = request.raw_path
    if is_proxy_path(raw):
        return proxy_tail(raw)
    # the client percent-encoded the prefix itself: encode the decoded tail again
    query = request.query_string
    return quote(tail, safe="/:@!$&'()*+,;=-._~") + (f"?{query}" if query else "")


async def _forward(request: web.Request, settings, token: Token, tail: str, body: bytes, stream: bool,
                   hold_usage: bool, record: CallRecord, cache_ctx: CacheContext | None) -> web.StreamResponse:
    client = request.app[UPSTREAM_CLIENT]
    base = _upstream_base(settings.upstream_url, token)
    target = _target(request, tail)
    headers = request_headers(request.headers, settings.openrouter_api_key, settings.http_referer, settings.x_title)
    started = time.perf_counter()
    try:
        plan = request.get(FALLBACK_PLAN)
        upstream = (await client.request(request.method, base, target, headers, body) if plan is None
                    else await plan.run(client, request.method, base, target, body, headers, cache_ctx))
        try:
            mime = _mime(upstream.headers.get("Content-Type"))
            is_sse = mime == "text/event-stream"
            if stream and upstream.status == 200 and is_sse:
                return await _relay_stream(request, upstream, hold_usage, record, cache_ctx, started, settings)
            data = await upstream.read()
            status = upstream.status
            if 300 <= status < 400 and status != 304:
                # not followed, nor passed on: a client following it would take its request, and perhaps
                # its proxy token, straight to the upstream
                log.warning("upstream_redirect", status=status, location=upstream.headers.get("Location"))
                raise ProxyError(502, f"The upstream answered with a redirect ({status}); point the upstream URL "
                                 "at where it leads.", "upstream_redirect")
            out_headers = response_headers(upstream.headers)
        finally:
            upstream.release()
    except UPSTREAM_FAILURES as exc:
        raise map_upstream_error(exc) from None
    record.ttfb_ms = (time.perf_counter() - started) * 1000.0
    if mime == "application/json" or (data[:1] == b"{" and not is_sse):
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            if status == 200:
                raise ProxyError(502, "The upstream answered 200 with a body that is not valid JSON.",
                                 "upstream_malformed_response") from None
            obj = None
        _observe_json(record, obj, status, settings.log_preview_chars)
        if cache_ctx is not None and status == 200 and isinstance(obj, dict):
            cache_ctx.store_later(obj)
    elif status >= 400:
        record.error = data[:500].decode(errors="replace") or f"HTTP {status}"
    resp = web.Response(status=status, body=data, headers=out_headers)
    if cache_ctx is not None:
        cache_ctx.mark(resp.headers, answered=status == 200)
    return resp


async def _relay_stream(request: web.Request, upstream: UpstreamResponse, hold_usage: bool,
                        record: CallRecord, cache_ctx: CacheContext | None, started: float,
                        settings) -> web.StreamResponse:
    assembler = cache_ctx.assembler() if cache_ctx is not None else None
    watcher = SSEWatcher(hold_usage_only=hold_usage, preview_limit=settings.log_preview_chars,
                         on_event=assembler.feed if assembler is not None else None)
    headers = response_headers(upstream.headers)
    headers.append(("X-Request-Id", request[REQUEST_ID]))  # response_headers() never passes the upstream's on
    if record.request_id != request[REQUEST_ID]:  # the client chose the X-Request-Id; this finds the log row
        headers.append(("X-Orcache-Request-Id", record.request_id))
    # the upstream's first bytes came with its head (as they usually do): both go on in one write
    resp = (EventStreamResponse if upstream.buffered else web.StreamResponse)(status=200, headers=headers)
    resp.headers["Cache-Control"] = "no-cache"
    if cache_ctx is not None:
        cache_ctx.mark(resp.headers, answered=True)
    await resp.prepare(request)
    complete = False
    try:
        async for chunk in upstream.iter_chunks():
            out = watcher.feed(chunk)
            if out:
                await resp.write(out)
                if record.ttfb_ms is None:
                    record.ttfb_ms = (time.perf_counter() - started) * 1000.0
        rest = watcher.flush()
        if rest:
            await resp.write(rest)
        complete = True
    except UPSTREAM_FAILURES as exc:
        # headers are gone already: tell the client in-band, as OpenRouter does, and end the stream
        err = map_upstream_error(exc)
        record.status, record.error = err.status, err.message
        try:
            await resp.write(b"data: " + orjson.dumps({"error": {"message": err.message, "code": err.code}})
                             + b"\n\n")
        except ConnectionResetError:
            pass
    except ConnectionResetError:
        record.status, record.error = 499, "client closed the connection during the stream"
        return resp
    finally:
        record.response_model = watcher.model
        record.provider = watcher.provider
        record.generation_id = watcher.generation_id
        record.usage = watcher.usage
        record.response_preview = "".join(watcher.preview)[: settings.log_preview_chars] or None
        if watcher.error is not None and record.error is None:
            err = watcher.error
            record.error = (err.get("message") if isinstance(err, dict) else str(err))[:1000]
    if complete and watcher.error is None and assembler is not None and cache_ctx is not None:
        result = assembler.result()
        if result is not None:
            cache_ctx.store_later(result)
    if complete and not watcher.done and record.error is None:
        record.error = "upstream stream ended without [DONE]"
    await resp.write_eof()
    return resp
