"""What the proxy does to a parsed request before the cache and the upstream see it, in this order:

1. ``@preset/<slug>`` models are expanded (``proxy.presets``; unknown preset: 400);
2. a long system prompt gets a provider prompt-cache breakpoint, for tokens that ask for it
   (``proxy.breakpoints``);
3. the token's quotas are checked and the request counted (``proxy.quotas``; over a limit: 429);
4. the fallback plan is made, when the token or the request names fallback models (``proxy.fallback``).

For a token with none of these and a plain model name this is a prefix test, one memoised lookup of the
token's options and one header lookup: no Redis call, and the body bytes pass on untouched.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from logstore.record import CallRecord
from proxy.breakpoints import add_system_breakpoint
from proxy.fallback import FALLBACK_PLAN, fallback_plan
from proxy.keys import SETTINGS
from proxy.presets import PRESET_PREFIX, expand_preset
from proxy.quotas import QUOTA_STATE, enforce_quota
from proxy.token_options import options_of
from proxy.tokens import Token

__all__ = ["prepare_request"]

# OpenRouter's own routing fields: passed through untouched (and part of the cache key); noted on the log row
_OPENROUTER_ROUTING = ("models", "provider", "route")


async def prepare_request(request: web.Request, token: Token, tail: str, payload: dict[str, Any], body: bytes,
                          record: CallRecord) -> bytes:
    """Apply presets, breakpoints, quotas and fallbacks to ``payload`` (in place); returns the body to send."""
    changed = False
    model = payload.get("model")
    routing: dict[str, Any] | None = None
    if type(model) is str and model.startswith(PRESET_PREFIX):
        routing = {"preset": await expand_preset(request, tail, payload)}
        changed = True
    options = options_of(token.extra)
    if options.auto_cache_breakpoints:
        min_chars = options.auto_cache_min_chars or request.app[SETTINGS].auto_cache_min_chars
        if add_system_breakpoint(payload, tail, min_chars):
            changed = True
            routing = {**(routing or {}), "auto_cache_breakpoint": "system"}
    decision = None
    if options.limits is not None:
        record.model_requested = payload.get("model") if isinstance(payload.get("model"), str) else None
        decision = await enforce_quota(request, token)  # a refusal's log row still names the model
    # both keys are always set here, so the look-ups after the response never pay for a KeyError
    request[QUOTA_STATE] = decision
    for name in _OPENROUTER_ROUTING:
        if payload.get(name) is not None:
            routing = routing or {}
            routing.setdefault("strategy", "openrouter")
            routing[name] = payload[name]
    if routing is not None:
        record.routing = routing
    request[FALLBACK_PLAN] = fallback_plan(request, options, payload, record)
    return orjson.dumps(payload) if changed else body
