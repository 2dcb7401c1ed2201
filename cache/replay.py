"""Serve a cached answer: as one JSON body, or replayed as SSE chunks like OpenAI/OpenRouter send them.

The response ``id`` (``gen-cache-<request id>``) and ``created`` are fresh for every hit; everything
else the original answer carried (model, provider, content, reasoning, tool calls, usage) is kept.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from cache.entry import CachedEntry

__all__ = ["DONE", "json_tail", "render_json", "render_sse", "render_tail"]

DONE = b"data: [DONE]\n\n"
_PIECES = 4  # content is replayed in about this many chunks
_MIN_PIECE = 32
_KNOWN = frozenset({"role", "content", "reasoning", "reasoning_details", "refusal", "tool_calls"})


def _response(entry: CachedEntry | dict[str, Any]) -> dict[str, Any]:
    return entry.response if isinstance(entry, CachedEntry) else entry


def _fresh(request_id: str) -> tuple[str, int]:
    return f"gen-cache-{request_id}", int(time.time())


def render_json(entry: CachedEntry | dict[str, Any], request_id: str) -> bytes:
    rid, created = _fresh(request_id)
    out = dict(_response(entry))
    out["id"] = rid
    out["created"] = created
    return orjson.dumps(out)


def json_tail(response: dict[str, Any]) -> bytes:
    """The answer's JSON without ``id`` and ``created``, from just after its opening brace: what
    ``render_tail`` completes for each hit."""
    return orjson.dumps({k: v for k, v in response.items() if k != "id" and k != "created"})[1:]


def render_tail(tail: bytes, request_id: str) -> bytes:
    """``render_json`` of the answer ``tail`` came from (its fresh ``id`` and ``created`` first)."""
    rid, created = _fresh(request_id)
    head = b'{"id":' + orjson.dumps(rid) + b',"created":' + str(created).encode()
    return head + b"}" if tail == b"}" else head + b"," + tail


def _split(text: str) -> list[str]:
    if not text:
        return []
    size = max(_MIN_PIECE, -(-len(text) // _PIECES))
    return [text[i:i + size] for i in range(0, len(text), size)]


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def render_sse(entry: CachedEntry | dict[str, Any], request_id: str, include_usage: bool) -> list[bytes]:
    """The answer as SSE ``data:`` chunks ending in ``data: [DONE]``; the usage chunk only on request."""
    resp = _response(entry)
    rid, created = _fresh(request_id)
    choices = resp.get("choices")
    if not isinstance(choices, list):
        return [b"data: " + render_json(resp, request_id) + b"\n\n", DONE]
    text_mode = resp.get("object") == "text_completion"
    head: dict[str, Any] = {"id": rid, "object": "text_completion" if text_mode else "chat.completion.chunk",
                            "created": created, "model": resp.get("model")}
    for name in ("provider", "system_fingerprint", "service_tier"):
        if resp.get(name) is not None:
            head[name] = resp[name]

    def chunk(choice: dict[str, Any]) -> bytes:
        return _event({**head, "choices": [choice]})

    out: list[bytes] = []
    for pos, choice in enumerate(choices):
        index = choice.get("index", pos)
        if text_mode:
            for piece in _split(choice.get("text") or ""):
                out.append(chunk({"index": index, "text": piece, "finish_reason": None, "logprobs": None}))
            out.append(chunk({"index": index, "text": "", "finish_reason": choice.get("finish_reason"),
                              "logprobs": None}))
            continue
        out.extend(chunk({"index": index, "delta": d, "finish_reason": None}) for d in _deltas(choice))
        finish: dict[str, Any] = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
        if choice.get("native_finish_reason") is not None:
            finish["native_finish_reason"] = choice["native_finish_reason"]
        out.append(chunk(finish))
    usage = resp.get("usage")
    if include_usage and usage is not None:
        out.append(_event({**head, "choices": [], "usage": usage}))
    out.append(DONE)
    return out


def _deltas(choice: dict[str, Any]) -> list[dict[str, Any]]:
    message = choice.get("message") or {}
    content = message.get("content")
    deltas: list[dict[str, Any]] = [{"role": message.get("role") or "assistant",
                                     "content": "" if isinstance(content, str) else None}]
    reasoning = message.get("reasoning")
    details = message.get("reasoning_details")
    pieces = _split(reasoning) if isinstance(reasoning, str) else []
    for i, piece in enumerate(pieces):
        delta: dict[str, Any] = {"content": "", "reasoning": piece}
        if i == 0 and details:
            delta["reasoning_details"] = details
        deltas.append(delta)
    if not pieces and details:
        deltas.append({"content": "", "reasoning_details": details})
    if isinstance(content, str):
        deltas.extend({"content": piece} for piece in _split(content))
    if message.get("refusal"):
        deltas.append({"refusal": message["refusal"]})
    # anything else the message carried (annotations, images, ...) goes out whole, once
    extra = {k: v for k, v in message.items() if k not in _KNOWN and v is not None}
    if extra:
        deltas.append(extra)
    for i, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") or {}
        deltas.append({"tool_calls": [{"index": i, "id": call.get("id"), "type": call.get("type", "function"),
                                       "function": {"name": fn.get("name"), "arguments": ""}}]})
        deltas.extend({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
                      for piece in _split(fn.get("arguments") or ""))
    return deltas
