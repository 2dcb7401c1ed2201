"""The cache key of a request: a digest of everything in it that can change the answer.

Rule (the README copies it):

* Cacheable endpoints: ``/chat/completions`` (``messages``), ``/completions`` (``prompt``) and
  ``/embeddings`` (``input``, exact only). Any prefix (``/v1``, ``/api/v1``) is ignored. Anything else,
  a body without a model (``model`` or a ``models`` list), or without messages / prompt / input, is
  not cacheable.
* The key covers: the endpoint, the model, every message (role, content, name, tool_calls,
  tool_call_id, and any other field a message carries) and every other top-level parameter
  (temperature, top_p, max_tokens, stop, seed, tools, tool_choice, response_format, n, logprobs,
  provider, models, route, transforms, plugins, reasoning, ...). Unknown fields are included: a new
  parameter can only make the key stricter, never serve a wrong answer.
* Ignored, because they cannot change the answer: ``stream``, ``stream_options``, ``user``,
  ``metadata``, ``store``, ``session_id``, ``prompt_cache_key``, ``safety_identifier``, ``usage``
  (OpenRouter's usage-accounting switch), ``cache_control`` on messages and content parts (prompt
  caching hints) and any field whose value is ``null`` (the same as leaving it out).
* Equivalent spellings give the same key: object key order, ``1`` vs ``1.0`` for top-level numbers,
  ``"stop": "x"`` vs ``["x"]``, and a content list holding a single text part vs the plain string.

Semantic cache fields: ``query_text`` is the text of the last message when it is a user message with
text only (a string, or a list of text parts joined by newlines); images, audio or files in it, tool
results after it, list prompts and embeddings make the request exact-only (``query_text`` None).
``context_hash`` covers every message before the last one (system prompt included) plus the last
message's other fields; ``params_hash`` covers the endpoint and the parameters above.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["ENDPOINTS", "IGNORED_FIELDS", "Fingerprint", "fingerprint"]

# top-level fields that cannot change the answer
IGNORED_FIELDS = frozenset({
    "stream", "stream_options", "user", "metadata", "store", "session_id", "prompt_cache_key",
    "safety_identifier", "usage",
})
# endpoint -> the field holding the input
ENDPOINTS = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input"}

_DUMP = orjson.OPT_SORT_KEYS


@dataclass(frozen=True, slots=True)
class Fingerprint:
    path: str  # normalised endpoint: "chat/completions" | "completions" | "embeddings"
    exact_key: str
    model: str
    params_hash: str
    context_hash: str
    query_text: str | None  # None: exact cache only
    stream: bool = False
    include_usage: bool = False

    @property
    def semantic_ok(self) -> bool:
        return self.query_text is not None


def _digest(*parts: bytes) -> str:
    # each part ends in a NUL: JSON never holds a raw one, so the parts cannot run into each other
    return hashlib.sha256(b"\0".join(parts) + b"\0").hexdigest()[:32]


def _endpoint(path: str) -> str | None:
    p = path.split("?", 1)[0].rstrip("/")
    for name in ("chat/completions", "completions", "embeddings"):
        if p == name or p.endswith("/" + name):
            return name
    return None


def _number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _params(body: dict[str, Any], input_field: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in body.items():
        if v is None or k in IGNORED_FIELDS or k == input_field or k == "model":
            continue
        if k == "stop" and isinstance(v, str):
            v = [v]
        out[k] = _number(v)
    return out


def _part(part: Any) -> Any:
    if isinstance(part, dict) and "cache_control" in part:
        return {k: v for k, v in part.items() if k != "cache_control"}
    return part


def _message(msg: Any) -> Any:
    if not isinstance(msg, dict):
        return msg
    out = {k: v for k, v in msg.items() if v is not None and k != "cache_control"}
    content = out.get("content")
    if isinstance(content, list):
        parts = [_part(p) for p in content]
        if len(parts) == 1 and _is_text_part(parts[0]) and len(parts[0]) == 2:
            out["content"] = parts[0]["text"]
        else:
            out["content"] = parts
    return out


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _text_of(content: Any) -> str | None:
    """The text of a user message, or None when it holds anything but text."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list) and content and all(_is_text_part(p) for p in content):
        text = "\n".join(p["text"] for p in content)
    else:
        return None
    return text if text.strip() else None


def fingerprint(path: str, body: dict[str, Any]) -> Fingerprint | None:
    """The cache fingerprint of a request body, or None when the request is not cacheable."""
    endpoint = _endpoint(path)
    if endpoint is None or not isinstance(body, dict):
        return None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        models = body.get("models")
        if not (isinstance(models, list) and models and isinstance(models[0], str)):
            return None
        model = models[0]
    input_field = ENDPOINTS[endpoint]
    data = body.get(input_field)
    if data is None or data == "" or data == []:
        return None
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    try:
        params_blob = orjson.dumps(_params(body, input_field), option=_DUMP)
        query_text: str | None = None
        if endpoint == "chat/completions":
            if not isinstance(data, list):
                return None
            msgs = [_message(m) for m in data]
            last = msgs[-1]
            if isinstance(last, dict) and last.get("role") == "user":
                query_text = _text_of(last.get("content"))
                rest = {k: v for k, v in last.items() if k != "content"}
                context_blob = orjson.dumps([msgs[:-1], rest], option=_DUMP)
                last_blob = orjson.dumps(last.get("content"), option=_DUMP)
            else:
                context_blob = orjson.dumps([msgs, None], option=_DUMP)
                last_blob = b"null"
        else:
            if endpoint == "completions" and isinstance(data, str):
                query_text = data if data.strip() else None
            context_blob = b"[]"
            last_blob = orjson.dumps(data, option=_DUMP)
    except (TypeError, orjson.JSONEncodeError):
        return None  # something orjson cannot write canonically (e.g. an integer beyond 64 bits)
    path_b = endpoint.encode()
    params_hash = _digest(path_b, params_blob)
    context_hash = _digest(path_b, context_blob)
    exact = _digest(path_b, model.encode(), params_blob, context_blob, last_blob)
    return Fingerprint(endpoint, exact, model, params_hash, context_hash, query_text, stream, include_usage)
