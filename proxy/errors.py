"""OpenAI-shaped errors: one exception type, one helper that renders them."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = ["ProxyError", "error_body", "error_response", "json_response"]

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ProxyError(Exception):
    """An error the client should see, with its HTTP status and an OpenAI-style code."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers


def error_body(status: int, message: str, code: str, param: str | None = None) -> bytes:
    err: dict[str, object] = {
        "message": message,
        "type": _TYPE_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error"),
        "code": code,
    }
    if param is not None:
        err["param"] = param
    return orjson.dumps({"error": err})


def error_response(status: int, message: str, code: str, *, param: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(status, message, code, param),
                        content_type="application/json", headers=headers)


def json_response(data: Any, status: int = 200) -> web.Response:
    """Every JSON answer of the admin, token and ops APIs (datetimes as ISO 8601 with a Z)."""
    return web.Response(status=status, body=orjson.dumps(data, option=orjson.OPT_UTC_Z),
                        content_type="application/json")
