"""The one request middleware: request id, OpenAI-shaped errors, metrics, the canonical log line,
and handing each proxied call's record to the log writer."""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import UTC, datetime

import orjson
import structlog
from aiohttp import web

from logstore.record import METADATA_HEADER, TAG_HEADERS, CallRecord
from proxy.errors import ProxyError, error_response
from proxy.keys import LOG_WRITER, METRICS
from proxy.logs import log_request
from proxy.metrics import route_label
from proxy.quotas import settle_quota

__all__ = ["request_middleware", "REQUEST_ID", "CALL_RECORD", "is_proxy_path", "proxy_tail"]

log = structlog.get_logger("orcache.request")

REQUEST_ID = web.RequestKey("request_id", str)
CALL_RECORD = web.RequestKey("call_record", CallRecord)

_VALID_RID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
_PROXY_PREFIXES = ("/v1/", "/api/v1/")


def new_request_id() -> str:
    """``req_`` + the time in milliseconds (12 hex digits) + 64 random bits: ids of one moment sort together,
    so each new log row lands at the right-hand edge of the unique index on ``request_id`` instead of on a
    random page of it (measured: 15% less Postgres CPU per row at 0.4M rows; far more at 10M, where the
    random pages no longer fit in memory)."""
    return f"req_{time.time_ns() // 1_000_000:012x}{os.urandom(8).hex()}"


def is_proxy_path(path: str) -> bool:
    return path.startswith(_PROXY_PREFIXES)


def proxy_tail(path: str) -> str:
    return path[4:] if path.startswith("/v1/") else path[8:]


def _http_error(exc: web.HTTPException) -> web.StreamResponse:
    status = exc.status
    if status == 413:
        return error_response(413, f"Request body too large: {exc.text}", "request_too_large")
    if status == 405:
        allowed = exc.headers.get("Allow", "")
        return error_response(405, f"Method not allowed here; allowed: {allowed}.", "method_not_allowed",
                              headers={"Allow": allowed})
    if status == 404:
        return error_response(404, "Unknown route.", "not_found")
    if status >= 400:
        return error_response(status, exc.reason, f"http_{status}")
    return exc  # redirects and the like pass as they are


_TAG_BY_LOWER = {h.lower(): c for h, c in TAG_HEADERS.items()}
_METADATA_LOWER = METADATA_HEADER.lower()
_TAG_PREFIX = "x-orcache-"


def _tags(request: web.Request, record: CallRecord) -> None:
    # one pass over the headers (most requests carry none of ours) instead of a lookup per tag
    headers = request.headers
    meta = None
    for name in headers:
        if len(name) <= 10 or name[0] not in "Xx" or name[:10].lower() != _TAG_PREFIX:
            continue
        low = name.lower()
        column = _TAG_BY_LOWER.get(low)
        if column is not None:
            if column not in record.tags:
                record.tags[column] = headers[name][:200]  # the first occurrence, as headers.get() gives it
        elif low == _METADATA_LOWER and meta is None:
            meta = headers[name]
    if meta:
        try:
            parsed = orjson.loads(meta)
            record.metadata = parsed if isinstance(parsed, dict) else {"value": parsed}
        except orjson.JSONDecodeError:
            record.metadata = {"raw": meta[:1000]}


def _account(app: web.Application, record: CallRecord, elapsed: float) -> None:
    """Hand the call to the log writer, count it, write the canonical log line: after the response is out."""
    app[LOG_WRITER].submit(record)
    app[METRICS].observe_request(route_label(proxy_tail(record.path)), record.status, elapsed)
    log_request(record.method, record.path, record.status, round(elapsed * 1000.0, 2), record.cache_status,
                record.token_id)


@web.middleware
async def request_middleware(request: web.Request, handler):
    # The log row's id is always ours, so a client that reuses its own id never loses a row to dedupe;
    # a well-formed client id is still echoed back and kept in the row's metadata.
    rid = new_request_id()
    client_rid = request.headers.get("X-Request-Id")
    if client_rid is not None and _VALID_RID.fullmatch(client_rid) is None:
        client_rid = None
    echo_rid = client_rid or rid
    request[REQUEST_ID] = echo_rid
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=echo_rid)
    started = time.perf_counter()
    path = request.path
    record: CallRecord | None = None
    if is_proxy_path(path):
        record = CallRecord(request_id=rid, created_at=datetime.now(UTC), method=request.method,
                            path=path)
        _tags(request, record)
        if client_rid is not None:
            record.metadata = {**(record.metadata or {}), "client_request_id": client_rid}
        request[CALL_RECORD] = record
    resp: web.StreamResponse | None = None
    try:
        try:
            resp = await handler(request)
        except ProxyError as exc:
            resp = error_response(exc.status, exc.message, exc.code, param=exc.param, headers=exc.headers)
            if record is not None:
                record.error = exc.message
        except web.HTTPException as exc:
            resp = _http_error(exc)
            if record is not None and exc.status >= 400:
                record.error = exc.text or exc.reason
        except ConnectionResetError:
            # the client went away while its request was still arriving (request.read()): nobody to answer
            resp = error_response(400, "The client closed the connection.", "client_closed_request")
            if record is not None:
                record.status, record.error = 499, "client closed the connection"
        except asyncio.CancelledError:
            # the client went away (handler cancellation): record it as nginx does, then let it unwind
            if record is not None:
                record.status = record.status or 499
                record.error = record.error or "client closed the connection"
            raise
        except Exception:
            log.exception("unhandled_error", path=path)
            resp = error_response(500, "Internal proxy error.", "internal_error")
            if record is not None:
                record.error = "internal proxy error"
        if not resp.prepared:
            resp.headers["X-Request-Id"] = echo_rid
            if client_rid is not None and record is not None:
                resp.headers["X-Orcache-Request-Id"] = rid
        return resp
    finally:
        elapsed = time.perf_counter() - started
        if record is not None:
            if not record.status:
                record.status = resp.status if resp is not None else 499
            record.duration_ms = elapsed * 1000.0
            # nothing here is needed for the response: aiohttp writes it when this returns, and the callback runs
            # right after (same context, so the log line still carries the request id)
            asyncio.get_running_loop().call_soon(_account, request.app, record, elapsed)
            settle_quota(request, record)  # a limited token's tokens and cost, counted in a background task
        elif resp is not None and resp.status >= 500:
            log.warning("request_failed", method=request.method, path=path, status=resp.status)
