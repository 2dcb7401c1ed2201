"""The one request middleware: request id, OpenAI-shaped errors, metrics, the canonical log line,
and handing each proxied call's record to the log writer."""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import UTC, datetime

import structlog
from aiohttp import web

from logstore.record import METADATA_HEADER, TAG_HEADERS, CallRecord
from proxy.errors import ProxyError, error_response
from proxy.keys import LOG_WRITER, METRICS
from proxy.metrics import route_label

__all__ = ["request_middleware", "REQUEST_ID", "CALL_RECORD", "is_proxy_path", "proxy_tail"]

log = structlog.get_logger("orcache.request")

REQUEST_ID = web.RequestKey("request_id", str)
CALL_RECORD = web.RequestKey("call_record", CallRecord)

_VALID_RID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
_PROXY_PREFIXES = ("/v1/", "/api/v1/")


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


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


def _tags(request: web.Request, record: CallRecord) -> None:
    headers = request.headers
    for header, column in TAG_HEADERS.items():
        value = headers.get(header)
        if value is not None:
            record.tags[column] = value[:200]
    meta = headers.get(METADATA_HEADER)
    if meta:
        import orjson

        try:
            parsed = orjson.loads(meta)
            record.metadata = parsed if isinstance(parsed, dict) else {"value": parsed}
        except orjson.JSONDecodeError:
            record.metadata = {"raw": meta[:1000]}


@web.middleware
async def request_middleware(request: web.Request, handler):
    rid = request.headers.get("X-Request-Id")
    if rid is None or _VALID_RID.fullmatch(rid) is None:
        rid = new_request_id()
    request[REQUEST_ID] = rid
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    path = request.path
    record: CallRecord | None = None
    if is_proxy_path(path):
        record = CallRecord(request_id=rid, created_at=datetime.now(UTC), method=request.method,
                            path=path)
        _tags(request, record)
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
            resp.headers["X-Request-Id"] = rid
        return resp
    finally:
        elapsed = time.perf_counter() - started
        status = resp.status if resp is not None else 499
        app = request.app
        if record is not None:
            if not record.status:
                record.status = status
            record.duration_ms = elapsed * 1000.0
            app[LOG_WRITER].submit(record)
            route = route_label(proxy_tail(path))
            app[METRICS].observe_request(route, record.status, elapsed)
            log.info("request", method=request.method, path=path, status=record.status,
                     ms=round(elapsed * 1000.0, 2), cache=record.cache_status, token=record.token_id)
        elif status >= 500:
            log.warning("request_failed", method=request.method, path=path, status=status)
