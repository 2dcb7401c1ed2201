"""The OpenAPI 3.1 document for the admin and token APIs (a test keeps it in step with the router)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

__all__ = ["openapi_document", "OPERATIONS"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_TOKEN_SETTINGS = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "cache_mode": {"type": "string", "enum": ["off", "exact", "semantic"]},
        "similarity_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        "cache_ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 31536000, "default": 86400},
        "cache_shared_scope": {"type": ["string", "null"]},
        "upstream": {"type": ["string", "null"]},
        # quotas (0 = no limit; null = the plan's default), plan, fallbacks, prompt-cache breakpoints
        "rpm": {"type": ["integer", "null"], "minimum": 0, "description": "requests per minute"},
        "tpm": {"type": ["integer", "null"], "minimum": 0, "description": "tokens per minute"},
        "requests_per_month": {"type": ["integer", "null"], "minimum": 0},
        "tokens_per_month": {"type": ["integer", "null"], "minimum": 0},
        "cost_per_month": {"type": ["number", "null"], "minimum": 0, "description": "USD per UTC calendar month"},
        "plan": {"type": ["string", "null"], "enum": ["free", "premium", "enterprise", "unlimited", None]},
        "fallback_models": {"type": ["string", "array", "null"], "items": {"type": "string"},
                            "description": "comma-separated model ids tried after the requested one"},
        "fallback_budget_seconds": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 3600},
        "auto_cache_breakpoints": {"type": ["boolean", "null"]},
        "auto_cache_min_chars": {"type": ["integer", "null"], "minimum": 1},
    },
    "additionalProperties": False,
}
_PRESET = {
    "type": "object",
    "properties": {
        "slug": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"},
        "model": {"type": "string"},
        "system_prompt": {"type": ["string", "null"]},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
        "description": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}
_PAGE = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}},
]


def _q(*names: str, kind: str = "string") -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False, "schema": {"type": kind}} for n in names]


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_ANALYTICS_Q = _q("start_time", "end_time", "range", "token_id", "model")

# (method, path, summary, auth, parameters, request body schema or None)
OPERATIONS: list[tuple[str, str, str, str, list[dict[str, Any]], dict[str, Any] | None]] = [
    ("get", "/healthz", "Liveness", "none", [], None),
    ("get", "/readyz", "Readiness: Redis, Postgres, upstream configuration", "none", [], None),
    ("get", "/metrics", "Prometheus metrics", "none", [], None),
    ("get", "/openapi.json", "This document", "none", [], None),
    ("post", "/admin/tokens", "Create a proxy token (the secret is returned once, in `token`)", "admin", [],
     {**_TOKEN_SETTINGS, "required": ["name"]}),
    ("get", "/admin/tokens", "List tokens", "admin", _q("include_revoked", kind="boolean"), None),
    ("get", "/admin/tokens/{token_id}", "Show a token", "admin", [_p("token_id")], None),
    ("patch", "/admin/tokens/{token_id}", "Change a token's name or cache settings", "admin", [_p("token_id")],
     _TOKEN_SETTINGS),
    ("delete", "/admin/tokens/{token_id}", "Revoke a token", "admin", [_p("token_id")], None),
    ("get", "/api/tokens/me", "The calling token's own record", "token", [], None),
    ("get", "/api/tokens/me/usage", "Quotas used and remaining, cost and cache savings this UTC month", "token",
     _q("token_id"), None),
    ("post", "/admin/presets", "Create a preset, used as \"model\": \"@preset/<slug>\"", "admin", [],
     {**_PRESET, "required": ["slug", "model"]}),
    ("get", "/admin/presets", "List presets", "admin", [], None),
    ("get", "/admin/presets/{slug}", "Show a preset", "admin", [_p("slug")], None),
    ("patch", "/admin/presets/{slug}", "Change a preset (null removes a field)", "admin", [_p("slug")],
     {**_PRESET, "properties": {k: v for k, v in _PRESET["properties"].items() if k != "slug"}}),
    ("delete", "/admin/presets/{slug}", "Delete a preset", "admin", [_p("slug")], None),
    ("get", "/admin/logs", "Request logs, newest first", "admin",
     _PAGE + _q("api_key_id", "upstream_id", "status_code", "start_time", "end_time", "model", "provider", "cache",
                "status", "range", "agent_type", "project_id", "run_id", "query_id")
     + [{"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "next_cursor or prev_cursor of an earlier page (same filters): the page next to it, "
                        "found by index instead of OFFSET; page is then only echoed"}], None),
    ("get", "/admin/logs/{request_id}", "Every field of one request", "admin", [_p("request_id")], None),
    ("get", "/api/tokens/usage-logs", "Daily usage in OpenRouter's activity format", "token",
     _PAGE + _q("start_date", "end_date", "model", "provider", "token_id"), None),
    ("get", "/api/tokens/cache-stats", "Cache statistics of the calling token", "token", _ANALYTICS_Q, None),
    ("get", "/admin/analytics/summary", "System totals over a range", "admin", _ANALYTICS_Q, None),
    ("get", "/admin/analytics/daily", "Usage per day", "admin", _ANALYTICS_Q, None),
    ("get", "/admin/analytics/top-tokens", "Tokens by cost", "admin", _ANALYTICS_Q + _q("limit", kind="integer"),
     None),
    ("get", "/admin/analytics/models", "Usage by model", "admin", _ANALYTICS_Q, None),
    ("get", "/admin/analytics/cache", "Cache performance", "admin", _ANALYTICS_Q, None),
    ("get", "/admin/analytics/cache/evolution", "Cache hits across iterations of a run or query", "admin",
     _q("run_id", "query_id", "token_id"), None),
    ("get", "/admin/analytics/cache/top-savings", "Requests whose cache hits saved the most", "admin",
     _ANALYTICS_Q + _q("limit", kind="integer"), None),
    ("get", "/admin/cache/stats", "Cache entries and bytes per scope", "admin", [], None),
    ("delete", "/admin/cache/tokens/{token_id}", "Purge a token's cached answers", "admin", [_p("token_id")], None),
    ("delete", "/admin/cache/entries/{entry_id}", "Delete one cache entry", "admin", [_p("entry_id")], None),
    ("delete", "/admin/cache/scopes/{scope}", "Purge a shared cache scope", "admin", [_p("scope")], None),
    ("post", "/auth/session", "Sign in to the dashboard: exchange the admin or a proxy token for a session cookie",
     "none", [], {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}),
    ("get", "/auth/session", "Who is signed in (session cookie)", "session", [], None),
    ("delete", "/auth/session", "Sign out", "session", [], None),
]


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, auth, params, body in OPERATIONS:
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": (method + path.replace("/", "_").replace("{", "").replace("}", "").replace("-", "_")
                            .replace(".", "_")),
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": {"description": "Bad request", "content": {"application/json": {"schema": _ERROR}}},
            },
        }
        if auth == "session":
            op["security"] = [{"session": []}]
        elif auth != "none":  # the dashboard's session cookie works wherever a bearer token does
            op["security"] = [{"bearer": []}, {"session": []}]
        if auth != "none":
            op["responses"]["401"] = {"description": "Missing or wrong credentials",
                                      "content": {"application/json": {"schema": _ERROR}}}
        if "{" in path:
            op["responses"]["404"] = {"description": "Not found", "content": {"application/json": {"schema": _ERROR}}}
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        if method == "post" and path.startswith("/admin/"):
            op["responses"]["201"] = {"description": "Created",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "orcache admin and token API", "version": "0.1.0",
                 "description": "Admin endpoints need the admin token; token endpoints take a proxy token "
                                "(`Authorization: Bearer sk-orc-...`). The OpenAI-compatible proxy itself lives "
                                "under /v1 and /api/v1 and follows OpenAI's API."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "session": {"type": "apiKey", "in": "cookie", "name": "orcache_session"}},
            "schemas": {"Error": {
                "type": "object", "required": ["error"],
                "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": ["string", "null"]},
                    "param": {"type": ["string", "null"]}}}},
            }},
        },
    }
