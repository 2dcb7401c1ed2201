"""Token usage as the upstream reported it, normalised from OpenAI/OpenRouter or Anthropic shapes.

OpenAI / OpenRouter (chat completions, and the final chunk of a stream with ``include_usage``)::

    {"prompt_tokens", "completion_tokens", "total_tokens",
     "prompt_tokens_details": {"cached_tokens", "cache_write_tokens"},
     "completion_tokens_details": {"reasoning_tokens"},
     "cost", "is_byok", "cost_details": {"upstream_inference_cost"}}

``prompt_tokens`` includes the cached tokens there. Anthropic (messages API, and the ``message_start`` /
``message_delta`` events of a stream)::

    {"input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"}

where ``input_tokens`` excludes the cache reads and writes. The OpenAI Responses API also says
``input_tokens``/``output_tokens`` but with ``input_tokens_details.cached_tokens`` included in the input,
like chat completions; that is told apart by its ``*_details`` objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Usage", "extract_usage", "merge_stream_usage"]

_INT_MAX = 2**31 - 1


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs several times more, per call
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None  # what the upstream charged, when it said so
    byok_cost: float | None = None  # what a bring-your-own-key provider charged, when the call was BYOK
    # True when prompt_tokens already counts the cache reads and writes (OpenAI style)
    prompt_includes_cache: bool = True
    present: bool = False  # False when there was no usage block at all

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens billed at the full input price."""
        if self.prompt_includes_cache:
            return max(self.prompt_tokens - self.cache_read_tokens - self.cache_creation_tokens, 0)
        return self.prompt_tokens


def _int(value: Any) -> int:
    if type(value) is int:  # the common case, first
        return value if 0 <= value <= _INT_MAX else min(max(value, 0), _INT_MAX)
    if isinstance(value, bool) or value is None:
        return 0
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(n, 0), _INT_MAX)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _usage_block(obj: Any) -> dict[str, Any] | None:
    """The usage dict itself, or the one inside a response, a stream chunk or an Anthropic event."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("usage"), dict):
        return obj["usage"]
    message = obj.get("message")
    if isinstance(message, dict) and isinstance(message.get("usage"), dict):
        return message["usage"]  # Anthropic message_start
    response = obj.get("response")
    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
        return response["usage"]  # Responses API response.completed event
    return obj


def extract_usage(usage: dict[str, Any] | None) -> Usage:
    """Normalise a usage block (or a response / final stream chunk holding one). Missing fields are 0."""
    u = _usage_block(usage)
    if not u:
        return Usage()
    cost = _float(u.get("cost"))
    byok_cost = None
    if u.get("is_byok"):
        byok_cost = _float(_dict(u.get("cost_details")).get("upstream_inference_cost")) or 0.0

    if "input_tokens" in u or "output_tokens" in u:
        in_details = _dict(u.get("input_tokens_details"))
        out_details = _dict(u.get("output_tokens_details"))
        prompt = _int(u.get("input_tokens"))
        completion = _int(u.get("output_tokens"))
        if in_details or out_details:  # OpenAI Responses API: input includes the cached part
            cached = _int(in_details.get("cached_tokens"))
            return Usage(
                prompt_tokens=prompt, completion_tokens=completion,
                total_tokens=_int(u.get("total_tokens")) or prompt + completion,
                cached_tokens=cached, cache_read_tokens=cached,
                reasoning_tokens=_int(out_details.get("reasoning_tokens")),
                cost=cost, byok_cost=byok_cost, prompt_includes_cache=True, present=True,
            )
        cache_read = _int(u.get("cache_read_input_tokens"))
        return Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            cached_tokens=cache_read, cache_creation_tokens=_int(u.get("cache_creation_input_tokens")),
            cache_read_tokens=cache_read, cost=cost, byok_cost=byok_cost,
            prompt_includes_cache=False, present=True,
        )

    p_details = _dict(u.get("prompt_tokens_details"))
    c_details = _dict(u.get("completion_tokens_details"))
    prompt = _int(u.get("prompt_tokens"))
    completion = _int(u.get("completion_tokens"))
    cached = _int(p_details.get("cached_tokens"))
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion,
        total_tokens=_int(u.get("total_tokens")) or prompt + completion,
        cached_tokens=cached,
        cache_creation_tokens=_int(p_details.get("cache_write_tokens") or p_details.get("cache_creation_tokens")),
        cache_read_tokens=cached,
        reasoning_tokens=_int(c_details.get("reasoning_tokens")),
        cost=cost, byok_cost=byok_cost, prompt_includes_cache=True, present=True,
    )


def merge_stream_usage(acc: dict[str, Any] | None, event: dict[str, Any]) -> dict[str, Any] | None:
    """Fold one stream event's usage into the running usage block (for the request path's stream reader).

    OpenAI-style streams send usage once, in the final chunk: that block replaces what we had. Anthropic
    streams send ``input_tokens`` (and cache counts) in ``message_start`` and cumulative ``output_tokens`` in
    ``message_delta``: the fields are merged.
    """
    block = _usage_block(event) if isinstance(event, dict) and (
        "usage" in event or "message" in event or "response" in event) else None
    if not block:
        return acc
    if acc is None or "prompt_tokens" in block or "total_tokens" in block:
        return dict(block)
    merged = dict(acc)
    merged.update({k: v for k, v in block.items() if v is not None})
    return merged
