"""A fake of OpenRouter's OpenAI-compatible API for tests, demos and benchmarks.

Run it with ``python -m scripts.fake_openrouter --host 127.0.0.1 --port 9911`` or start it in-process with
``start_fake_upstream()``. Routes live under ``/api/v1`` and ``/v1``: ``POST chat/completions``,
``POST completions``, ``POST embeddings``, ``POST responses``, ``GET models``, ``GET generation?id=``.
Test hooks: ``GET /_fake/requests`` (recorded requests, header names lower-cased), ``GET /_fake/stats``,
``POST /_fake/reset``.

Answers are a pure function of (model, messages, params): ``"Echo from {model}: {last user text}"``.
Tokens are ``max(1, round(words * 4 / 3))`` (see ``count_tokens``); cost follows ``compute_cost``.

Fault injection and behaviour switches, by request header (headers win) or by model name:

=============================  ================================  =========================================
header                         model                             effect
=============================  ================================  =========================================
X-Fake-Status: 4xx|5xx         fake/error-429, fake/error-500 …  that status, OpenRouter error JSON
X-Fake-Latency-Ms: N                                             sleep N ms before answering
X-Fake-Timeout: 1              fake/timeout                      sleep 600 s (until the client leaves)
X-Fake-Malformed: 1            fake/malformed                    200 with a body that is not valid JSON
X-Fake-Stream-Error-After: N                                     drop the connection after N SSE chunks
X-Fake-Chunk-Delay-Ms: N                                         sleep N ms between SSE chunks
X-Fake-Usage-Format: anthropic                                   usage as input/output/cache_*_input_tokens
X-Fake-Cached-Tokens: N                                          report N cached prompt tokens
X-Fake-No-Cost: 1                                                omit usage.cost and usage.cost_details
X-Fake-No-Comment: 1                                             no ": OPENROUTER PROCESSING" SSE comment
=============================  ================================  =========================================

Anthropic-style usage follows Anthropic's meaning: ``input_tokens`` excludes cache reads, so
``prompt_tokens == input_tokens + cache_read_input_tokens + cache_creation_input_tokens``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import re
import secrets
import signal
import struct
import sys
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

__all__ = [
    "FAKE_CONFIG",
    "FAKE_STATE",
    "MODELS",
    "FakeConfig",
    "FakeState",
    "compute_cost",
    "count_tokens",
    "create_fake_app",
    "main",
    "start_fake_upstream",
]

JSON = dict[str, Any]

AUTO_MODEL = "openrouter/auto"
AUTO_SERVED_MODEL = "openai/gpt-4o-mini"
DEFAULT_PROVIDER = "FakeProvider"
EMBEDDING_DIMS = 384
TIMEOUT_SECONDS = 600.0
PROCESSING_COMMENT = b": OPENROUTER PROCESSING\n\n"
DONE_FRAME = b"data: [DONE]\n\n"
RATE_LIMIT = 1000

_ERROR_MODEL = re.compile(r"^fake/error-(\d{3})$")
_PIECES = re.compile(r"\S+\s*|\s+")
_WORDS = re.compile(r"\w+")


# --- model catalogue -----------------------------------------------------------------------------------

_BASE_PARAMS = [
    "max_tokens", "temperature", "top_p", "stop", "frequency_penalty", "presence_penalty", "seed",
    "response_format", "structured_outputs", "tools", "tool_choice", "logit_bias", "logprobs", "top_logprobs",
]


def _model(
    model_id: str,
    name: str,
    *,
    created: int,
    provider: str,
    context: int,
    max_out: int | None,
    prompt: str,
    completion: str,
    cache_read: str | None = None,
    cache_write: str = "0",
    slug: str | None = None,
    tokenizer: str = "Other",
    images: bool = False,
    reasoning: bool = False,
    embedding: bool = False,
) -> JSON:
    inputs = ["text", "image"] if images else ["text"]
    params = _BASE_PARAMS + (["reasoning", "include_reasoning"] if reasoning else [])
    return {
        "id": model_id,
        "canonical_slug": slug or model_id,
        "hugging_face_id": None,
        "name": name,
        "created": created,
        "description": f"{name} (served by the fake OpenRouter).",
        "context_length": context,
        "architecture": {
            "modality": ("text+image->text" if images else "text->text") if not embedding else "text->embedding",
            "input_modalities": inputs,
            "output_modalities": ["embeddings"] if embedding else ["text"],
            "tokenizer": tokenizer,
            "instruct_type": None,
        },
        "pricing": {
            "prompt": prompt,
            "completion": completion,
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
            # Without a provider cache, cached tokens cost the normal prompt price.
            "input_cache_read": cache_read if cache_read is not None else prompt,
            "input_cache_write": cache_write,
        },
        "top_provider": {"context_length": context, "max_completion_tokens": max_out, "is_moderated": False},
        "per_request_limits": None,
        "supported_parameters": [] if embedding else params,
        # Not an OpenRouter field: lets the fake answer with a per-model provider name.
        "_provider": provider,
        "_reasoning": reasoning,
    }


_CATALOGUE = [
    _model("openai/gpt-4o-mini", "OpenAI: GPT-4o-mini", created=1721260800, provider="OpenAI",
           slug="openai/gpt-4o-mini-2024-07-18", context=128000, max_out=16384, tokenizer="GPT",
           prompt="0.00000015", completion="0.0000006", cache_read="0.000000075", images=True),
    _model("openai/gpt-4o", "OpenAI: GPT-4o", created=1715558400, provider="OpenAI", context=128000,
           max_out=16384, tokenizer="GPT", prompt="0.0000025", completion="0.00001", cache_read="0.00000125",
           images=True),
    _model("anthropic/claude-3.5-sonnet", "Anthropic: Claude 3.5 Sonnet", created=1729555200,
           provider="Anthropic", slug="anthropic/claude-3.5-sonnet-20241022", context=200000, max_out=8192,
           tokenizer="Claude", prompt="0.000003", completion="0.000015", cache_read="0.0000003",
           cache_write="0.00000375", images=True),
    _model("anthropic/claude-sonnet-4", "Anthropic: Claude Sonnet 4", created=1747930371, provider="Anthropic",
           slug="anthropic/claude-4-sonnet-20250522", context=200000, max_out=64000, tokenizer="Claude",
           prompt="0.000003", completion="0.000015", cache_read="0.0000003", cache_write="0.00000375",
           images=True, reasoning=True),
    _model("google/gemini-2.5-flash", "Google: Gemini 2.5 Flash", created=1750172488, provider="Google",
           context=1048576, max_out=65535, tokenizer="Gemini", prompt="0.0000003", completion="0.0000025",
           cache_read="0.000000075", cache_write="0.0000003833", images=True, reasoning=True),
    _model("meta-llama/llama-3.1-8b-instruct", "Meta: Llama 3.1 8B Instruct", created=1721692800,
           provider="DeepInfra", context=131072, max_out=16384, tokenizer="Llama3", prompt="0.00000002",
           completion="0.00000003"),
    _model("deepseek/deepseek-r1", "DeepSeek: R1", created=1737381095, provider="DeepSeek", context=163840,
           max_out=163840, tokenizer="DeepSeek", prompt="0.0000004", completion="0.000002", reasoning=True),
    _model("openai/text-embedding-3-small", "OpenAI: Text Embedding 3 Small", created=1706140800,
           provider="OpenAI", context=8192, max_out=None, tokenizer="GPT", prompt="0.00000002", completion="0",
           embedding=True),
    _model("fake/echo", "Fake: Echo (free)", created=1700000000, provider=DEFAULT_PROVIDER, context=1000000,
           max_out=None, prompt="0", completion="0"),
]

MODELS: list[JSON] = [{k: v for k, v in m.items() if not k.startswith("_")} for m in _CATALOGUE]
"""The ``GET /models`` catalogue, OpenRouter shape; prices are decimal strings in USD per token."""


@dataclass(frozen=True, slots=True)
class _ModelInfo:
    provider: str
    reasoning: bool
    prompt: float
    completion: float
    request: float
    cache_read: float


_FREE = _ModelInfo(DEFAULT_PROVIDER, False, 0.0, 0.0, 0.0, 0.0)
_INFO = {
    m["id"]: _ModelInfo(
        m["_provider"], m["_reasoning"], float(m["pricing"]["prompt"]), float(m["pricing"]["completion"]),
        float(m["pricing"]["request"]), float(m["pricing"]["input_cache_read"]),
    )
    for m in _CATALOGUE
}

_NATIVE_FINISH = {
    "Anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"},
    "Google": {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"},
}


def _info(model: str) -> _ModelInfo:
    return _INFO.get(model, _FREE)


def count_tokens(text: str) -> int:
    """Deterministic token count: four tokens per three words, rounded, at least one."""
    return max(1, (4 * len(text.split()) + 1) // 3)


def compute_cost(model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
    """USD cost the fake reports; models it does not know are free."""
    info = _info(model)
    return round(_prompt_cost(info, prompt_tokens, cached_tokens) + completion_tokens * info.completion
                 + info.request, 12)


def _prompt_cost(info: _ModelInfo, prompt_tokens: int, cached_tokens: int) -> float:
    return (prompt_tokens - cached_tokens) * info.prompt + cached_tokens * info.cache_read


# --- state -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FakeConfig:
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    max_recorded: int = 1000
    max_generations: int = 10000


@dataclass(slots=True)
class FakeState:
    """What tests look at: recorded requests, call counts, generation records."""

    requests: deque[JSON]
    calls: Counter[str] = field(default_factory=Counter)
    generations: OrderedDict[str, JSON] = field(default_factory=OrderedDict)
    client_disconnects: int = 0

    def reset(self) -> None:
        self.requests.clear()
        self.calls.clear()
        self.generations.clear()
        self.client_disconnects = 0


FAKE_CONFIG = web.AppKey("fake_config", FakeConfig)
FAKE_STATE = web.AppKey("fake_state", FakeState)
_BODY: web.RequestKey[Any] = web.RequestKey("fake_body")


class _BadRequest(Exception):
    """A request the fake refuses with 400."""


# --- helpers ---------------------------------------------------------------------------------------------


def _json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, headers=headers, content_type="application/json")


def _error(status: int, message: str, metadata: JSON | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    err: JSON = {"code": status, "message": message}
    if metadata is not None:
        err["metadata"] = metadata
    return _json_response({"error": err, "user_id": "user_fake"}, status, headers)


def _new_id(prefix: str = "gen") -> str:
    return f"{prefix}-{int(time.time())}-{secrets.token_urlsafe(15)}"


def _stamp_headers(headers: Any, gen_id: str, remaining: int = RATE_LIMIT - 1) -> None:
    headers["x-generation-id"] = gen_id
    headers["X-RateLimit-Limit"] = str(RATE_LIMIT)
    headers["X-RateLimit-Remaining"] = str(remaining)
    headers["X-RateLimit-Reset"] = str((int(time.time()) // 60 + 1) * 60000)


def _header_number(request: web.Request, name: str, default: float) -> float:
    raw = request.headers.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be a number, got {raw!r}") from None


def _header_flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.headers.get(name)
    if raw is None:
        return default
    return raw.strip().lower() not in ("", "0", "false", "no")


def _text_of(content: Any) -> str:
    """Text of a message content given as a string or as a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _message_text(message: JSON) -> str:
    text = _text_of(message.get("content"))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        args = (c.get("function", {}).get("arguments", "") for c in calls if isinstance(c, dict))
        text = " ".join([text, *(a for a in args if isinstance(a, str))])
    return text


def _pieces(text: str, words: int = 3) -> list[str]:
    """Split text into chunks of a few words whose concatenation is exactly the text."""
    parts = _PIECES.findall(text)
    return ["".join(parts[i:i + words]) for i in range(0, len(parts), words)] or [""]


def _truncate(text: str, max_tokens: int | None) -> tuple[str, bool]:
    if max_tokens is None or count_tokens(text) <= max_tokens:
        return text, False
    keep = max(1, max_tokens * 3 // 4)
    return " ".join(text.split()[:keep]), True


def _max_tokens(body: JSON, *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _BadRequest(f"{name} must be a positive integer")
        return value
    return None


def _request_model(body: JSON) -> str:
    model = body.get("model")
    if model is None and isinstance(body.get("models"), list) and body["models"]:
        model = body["models"][0]
    if not isinstance(model, str) or not model:
        raise _BadRequest("model is required")
    return model


def _served(model: str) -> str:
    return AUTO_SERVED_MODEL if model == AUTO_MODEL else model


@lru_cache(maxsize=1024)
def _fingerprint(model: str) -> str:
    return "fp_" + hashlib.blake2b(model.encode(), digest_size=5).hexdigest()


# --- usage -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Usage:
    model: str
    prompt: int
    completion: int
    reasoning: int
    cached: int

    @property
    def cost(self) -> float:
        return compute_cost(self.model, self.prompt, self.completion, self.cached)

    @property
    def cache_discount(self) -> float:
        info = _info(self.model)
        return round(self.cached * (info.prompt - info.cache_read), 12)


def _usage_for(request: web.Request, model: str, prompt: int, completion: int, reasoning: int) -> _Usage:
    cached = int(_header_number(request, "X-Fake-Cached-Tokens", 0))
    return _Usage(model, prompt, completion, reasoning, max(0, min(cached, prompt)))


def _usage_json(request: web.Request, u: _Usage) -> JSON:
    with_cost = not _header_flag(request, "X-Fake-No-Cost", False)
    if request.headers.get("X-Fake-Usage-Format", "").lower() == "anthropic":
        out: JSON = {
            "input_tokens": u.prompt - u.cached,
            "output_tokens": u.completion,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": u.cached,
        }
        if with_cost:
            out["cost"] = u.cost
        return out
    out = {
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
    }
    if with_cost:
        out["cost"] = u.cost
    out["is_byok"] = False
    out["prompt_tokens_details"] = {"cached_tokens": u.cached, "audio_tokens": 0}
    out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning, "image_tokens": 0}
    if with_cost:
        info = _info(u.model)
        out["cost_details"] = {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": round(_prompt_cost(info, u.prompt, u.cached), 12),
            "upstream_inference_completions_cost": round(u.completion * info.completion, 12),
        }
    return out


def _remember(request: web.Request, gen_id: str, u: _Usage, *, streamed: bool, finish: str) -> None:
    state = request.app[FAKE_STATE]
    state.generations[gen_id] = {
        "usage": u, "created": time.time(), "streamed": streamed, "finish_reason": finish,
        "latency_ms": request.app[FAKE_CONFIG].latency_ms,
    }
    if len(state.generations) > request.app[FAKE_CONFIG].max_generations:
        state.generations.popitem(last=False)


# --- faults ----------------------------------------------------------------------------------------------

_ERROR_MESSAGES = {
    400: "Invalid request (injected by the fake upstream)",
    401: "User not found.",
    402: "Insufficient credits. Add more using https://openrouter.ai/credits",
    403: "Key limit exceeded",
    408: "Request timed out",
    429: "Rate limit exceeded: free-models-per-min.",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "No instances available",
}


async def _sleep_while_connected(request: web.Request, seconds: float) -> None:
    # Polled rather than one long sleep so the handler ends soon after the client gives up.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


async def _fault(request: web.Request, model: str, stream: bool) -> web.StreamResponse | None:
    """Latency first, then the injected failure (if any) for this request."""
    latency = _header_number(request, "X-Fake-Latency-Ms", request.app[FAKE_CONFIG].latency_ms)
    if latency > 0:
        await asyncio.sleep(latency / 1000)

    status_header = request.headers.get("X-Fake-Status")
    match = _ERROR_MODEL.match(model)
    status = int(_header_number(request, "X-Fake-Status", 0)) if status_header else (
        int(match.group(1)) if match else 0)
    if status and status != 200:
        if not 400 <= status <= 599:
            raise _BadRequest("X-Fake-Status must be between 400 and 599")
        provider = _info(model).provider
        metadata = {"provider_name": provider, "raw": f"fake upstream injected HTTP {status}"}
        headers: dict[str, str] = {}
        _stamp_headers(headers, _new_id(), remaining=0 if status == 429 else RATE_LIMIT - 1)
        if status == 429:
            headers["Retry-After"] = "1"
        return _error(status, _ERROR_MESSAGES.get(status, f"Injected error {status}"), metadata, headers)

    if _header_flag(request, "X-Fake-Timeout", model == "fake/timeout"):
        await _sleep_while_connected(request, TIMEOUT_SECONDS)
        return _error(408, _ERROR_MESSAGES[408])

    if _header_flag(request, "X-Fake-Malformed", model == "fake/malformed"):
        headers = {}
        _stamp_headers(headers, _new_id())
        if stream:
            body = PROCESSING_COMMENT + b'data: {"id": "gen-broken", "choices": [{"delta": \n\n' + DONE_FRAME
            return web.Response(body=body, headers=headers, content_type="text/event-stream")
        return web.Response(body=b'{"id": "gen-broken", "choices": [{"message": ', headers=headers,
                            content_type="application/json")
    return None


# --- streaming -------------------------------------------------------------------------------------------


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _write_sse(request: web.Request, gen_id: str, frames: Sequence[bytes], *, done: bool = True
                     ) -> web.StreamResponse:
    """Write pre-encoded SSE frames one by one, honouring chunk delay and stream-error injection."""
    delay = _header_number(request, "X-Fake-Chunk-Delay-Ms", request.app[FAKE_CONFIG].chunk_delay_ms) / 1000
    error_after = request.headers.get("X-Fake-Stream-Error-After")
    fail_at = int(_header_number(request, "X-Fake-Stream-Error-After", 0)) if error_after else None

    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    _stamp_headers(resp.headers, gen_id)
    await resp.prepare(request)
    try:
        if not _header_flag(request, "X-Fake-No-Comment", False):
            await resp.write(PROCESSING_COMMENT)
        for i, frame in enumerate(frames):
            if fail_at is not None and i >= fail_at:
                break
            if delay > 0 and i > 0:
                await asyncio.sleep(delay)
            await resp.write(frame)
        if fail_at is not None:
            _drop_connection(request)
            return resp
        if done:
            await resp.write(DONE_FRAME)
        await resp.write_eof()
    except ConnectionError:
        request.app[FAKE_STATE].client_disconnects += 1
    except asyncio.CancelledError:  # servers run with handler_cancellation see the client leave this way
        request.app[FAKE_STATE].client_disconnects += 1
        raise
    return resp


def _drop_connection(request: web.Request) -> None:
    # Closing mid-body leaves the chunked response unterminated: the client sees a truncated payload.
    transport = request.transport
    if transport is not None:
        transport.close()


# --- chat completions ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Choice:
    content: str | None
    reasoning: str | None
    tool_calls: list[JSON] | None
    finish: str


def _wants_reasoning(model: str, body: JSON) -> tuple[bool, bool]:
    """(produce reasoning, hide its text) from the request's ``reasoning`` object or the model."""
    cfg = body.get("reasoning")
    if isinstance(cfg, dict):
        if cfg.get("enabled") is False or cfg.get("effort") == "none":
            return False, False
        return True, bool(cfg.get("exclude"))
    by_model = _info(model).reasoning or "reasoning" in model or "thinking" in model
    return by_model, body.get("include_reasoning") is False


def _tool_to_call(body: JSON, messages: list[JSON], last_user: str) -> JSON | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if not functions:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((f for f in functions if f.get("name") == name), functions[0])
    if choice == "required":
        return functions[0]
    # A tool result after the call means the model answers in text (no endless agent loops).
    if messages[-1].get("role") == "user" and "use the tool" in last_user.lower():
        return functions[0]
    return None


def _tool_arguments(function: JSON, text: str) -> str:
    params = function.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    if not isinstance(props, dict) or not props:
        return orjson.dumps({"input": text}).decode()
    args: JSON = {}
    for name, spec in props.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), None)
        if isinstance(spec.get("enum"), list) and spec["enum"]:
            args[name] = spec["enum"][0]
        else:
            args[name] = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(kind, text)
    return orjson.dumps(args).decode()


def _plan_chat(model: str, body: JSON) -> tuple[list[_Choice], int, int, int]:
    """Choices plus (prompt, completion, reasoning) token counts for a chat request."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _BadRequest("messages must be a non-empty list of objects")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise _BadRequest("n must be an integer between 1 and 128")
    max_tokens = _max_tokens(body, "max_completion_tokens", "max_tokens")

    last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    prompt_tokens = count_tokens(" ".join(_message_text(m) for m in messages))
    if messages[-1].get("role") == "tool":
        answer = f"Echo from {model}: tool said {_text_of(messages[-1].get('content'))}"
    else:
        answer = f"Echo from {model}: {last_user}"
    reasoning_on, hidden = _wants_reasoning(model, body)
    reasoning = f"The user wrote: {last_user}. I will echo it back." if reasoning_on else None
    function = _tool_to_call(body, messages, last_user)

    choices: list[_Choice] = []
    completion = reasoning_tokens = 0
    for i in range(n):
        if reasoning is not None:
            reasoning_tokens += count_tokens(reasoning)
        if function is not None:
            name = str(function.get("name", "tool"))
            arguments = _tool_arguments(function, last_user)
            call_id = "call_" + hashlib.blake2b(f"{model}|{name}|{arguments}|{i}".encode(),
                                                digest_size=12).hexdigest()
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            completion += count_tokens(f"{name} {arguments}")
            choices.append(_Choice(None, None if hidden else reasoning, [call], "tool_calls"))
            continue
        text, cut = _truncate(answer if i == 0 else f"{answer} (choice {i + 1})", max_tokens)
        completion += count_tokens(text)
        choices.append(_Choice(text, None if hidden else reasoning, None, "length" if cut else "stop"))
    return choices, prompt_tokens, completion + reasoning_tokens, reasoning_tokens


def _native(provider: str, finish: str) -> str:
    return _NATIVE_FINISH.get(provider, {}).get(finish, finish)


def _reasoning_details(text: str) -> list[JSON]:
    return [{"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = request[_BODY]
    model = _request_model(body)
    stream = body.get("stream") is True
    if (failed := await _fault(request, model, stream)) is not None:
        return failed
    served = _served(model)
    choices, prompt, completion, reasoning = _plan_chat(served, body)
    usage = _usage_for(request, served, prompt, completion, reasoning)
    provider = _info(served).provider
    gen_id = _new_id()
    _remember(request, gen_id, usage, streamed=stream, finish=choices[0].finish)
    base = {"id": gen_id, "provider": provider, "model": served, "created": int(time.time()),
            "system_fingerprint": _fingerprint(served)}

    if stream:
        frames = _chat_frames({**base, "object": "chat.completion.chunk"}, choices, provider)
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            frames.append(_sse({**base, "object": "chat.completion.chunk", "choices": [],
                                "usage": _usage_json(request, usage)}))
        return await _write_sse(request, gen_id, frames)

    out = {**base, "object": "chat.completion", "choices": [
        {
            "index": i,
            "message": _chat_message(c),
            "finish_reason": c.finish,
            "native_finish_reason": _native(provider, c.finish),
            "logprobs": None,
        }
        for i, c in enumerate(choices)
    ], "usage": _usage_json(request, usage)}
    headers: dict[str, str] = {}
    _stamp_headers(headers, gen_id)
    return _json_response(out, headers=headers)


def _chat_message(c: _Choice) -> JSON:
    message: JSON = {"role": "assistant", "content": c.content, "refusal": None, "reasoning": c.reasoning}
    if c.reasoning is not None:
        message["reasoning_details"] = _reasoning_details(c.reasoning)
    if c.tool_calls is not None:
        message["tool_calls"] = c.tool_calls
    return message


def _chat_frames(base: JSON, choices: list[_Choice], provider: str) -> list[bytes]:
    frames: list[bytes] = []

    def emit(index: int, delta: JSON, finish: str | None = None) -> None:
        choice = {"index": index, "delta": delta, "finish_reason": finish,
                  "native_finish_reason": _native(provider, finish) if finish else None, "logprobs": None}
        frames.append(_sse({**base, "choices": [choice]}))

    for index, c in enumerate(choices):
        role: JSON = {"role": "assistant"}
        for piece in _pieces(c.reasoning) if c.reasoning else ():
            emit(index, {**role, "content": "", "reasoning": piece, "reasoning_details": _reasoning_details(piece)})
            role = {}
        if c.tool_calls is not None:
            for t, call in enumerate(c.tool_calls):
                fn = call["function"]
                emit(index, {**role, "content": None, "tool_calls": [
                    {"index": t, "id": call["id"], "type": "function",
                     "function": {"name": fn["name"], "arguments": ""}}]})
                role = {}
                args = fn["arguments"]
                step = max(1, len(args) // 3 + 1)
                for start in range(0, len(args), step):
                    emit(index, {"tool_calls": [{"index": t, "function": {"arguments": args[start:start + step]}}]})
            emit(index, {}, c.finish)
            continue
        for piece in _pieces(c.content or ""):
            emit(index, {**role, "content": piece})
            role = {}
        emit(index, {"content": ""}, c.finish)
    return frames


# --- legacy completions ----------------------------------------------------------------------------------


async def completions(request: web.Request) -> web.StreamResponse:
    body = request[_BODY]
    model = _request_model(body)
    stream = body.get("stream") is True
    if (failed := await _fault(request, model, stream)) is not None:
        return failed
    served = _served(model)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompt = "\n".join(prompt)
    if not isinstance(prompt, str):
        raise _BadRequest("prompt must be a string or a list of strings")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise _BadRequest("n must be an integer between 1 and 128")
    max_tokens = _max_tokens(body, "max_tokens")
    texts = [_truncate(f"Echo from {served}: {prompt}" + (f" (choice {i + 1})" if i else ""), max_tokens)
             for i in range(n)]
    usage = _usage_for(request, served, count_tokens(prompt), sum(count_tokens(t) for t, _ in texts), 0)
    provider = _info(served).provider
    gen_id = _new_id()
    _remember(request, gen_id, usage, streamed=stream, finish="length" if texts[0][1] else "stop")
    base = {"id": gen_id, "provider": provider, "model": served, "object": "text_completion",
            "created": int(time.time()), "system_fingerprint": _fingerprint(served)}

    def choice(i: int, text: str, finish: str | None) -> JSON:
        return {"index": i, "text": text, "finish_reason": finish,
                "native_finish_reason": _native(provider, finish) if finish else None, "logprobs": None}

    if stream:
        frames = [_sse({**base, "choices": [choice(i, piece, None)]})
                  for i, (text, _) in enumerate(texts) for piece in _pieces(text)]
        frames += [_sse({**base, "choices": [choice(i, "", "length" if cut else "stop")]})
                   for i, (_, cut) in enumerate(texts)]
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            frames.append(_sse({**base, "choices": [], "usage": _usage_json(request, usage)}))
        return await _write_sse(request, gen_id, frames)

    out = {**base, "choices": [choice(i, text, "length" if cut else "stop") for i, (text, cut) in enumerate(texts)],
           "usage": _usage_json(request, usage)}
    headers: dict[str, str] = {}
    _stamp_headers(headers, gen_id)
    return _json_response(out, headers=headers)


# --- responses API (minimal) -----------------------------------------------------------------------------


def _responses_input(body: JSON) -> tuple[str, int]:
    """Last user text and prompt token count of a Responses API ``input``."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise _BadRequest("input must be a string or a non-empty list")
    texts = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    last_user = ""
    for item in items:
        if not isinstance(item, dict):
            continue
        text = _text_of(item.get("content"))
        texts.append(text)
        if item.get("role", "user") == "user":
            last_user = text
    return last_user, count_tokens(" ".join(texts))


async def responses(request: web.Request) -> web.StreamResponse:
    body = request[_BODY]
    model = _request_model(body)
    stream = body.get("stream") is True
    if (failed := await _fault(request, model, stream)) is not None:
        return failed
    served = _served(model)
    last_user, prompt = _responses_input(body)
    text, cut = _truncate(f"Echo from {served}: {last_user}", _max_tokens(body, "max_output_tokens"))
    reasoning_on, _ = _wants_reasoning(served, body)
    reasoning = f"The user wrote: {last_user}. I will echo it back." if reasoning_on else None
    reasoning_tokens = count_tokens(reasoning) if reasoning else 0
    usage = _usage_for(request, served, prompt, count_tokens(text) + reasoning_tokens, reasoning_tokens)
    gen_id = _new_id()
    _remember(request, gen_id, usage, streamed=stream, finish="length" if cut else "stop")

    resp_id = "resp_" + gen_id.removeprefix("gen-")
    message = {"type": "message", "id": "msg_" + gen_id.removeprefix("gen-"), "status": "completed",
               "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}
    output: list[JSON] = []
    if reasoning is not None:
        output.append({"type": "reasoning", "id": "rs_" + gen_id.removeprefix("gen-"),
                       "summary": [{"type": "summary_text", "text": reasoning}]})
    output.append(message)
    u = {
        "input_tokens": usage.prompt,
        "input_tokens_details": {"cached_tokens": usage.cached},
        "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": usage.prompt + usage.completion,
    }
    if not _header_flag(request, "X-Fake-No-Cost", False):
        u["cost"] = usage.cost
    full = {
        "id": resp_id, "object": "response", "created_at": int(time.time()), "model": served,
        "provider": _info(served).provider, "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None, "error": None,
        "instructions": body.get("instructions"), "output": output, "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [], "temperature": body.get("temperature"), "top_p": body.get("top_p"),
        "usage": u,
    }
    if not stream:
        headers: dict[str, str] = {}
        _stamp_headers(headers, gen_id)
        return _json_response(full, headers=headers)
    return await _write_sse(request, gen_id, _response_events(full, message, output), done=False)


def _response_events(full: JSON, message: JSON, output: list[JSON]) -> list[bytes]:
    events: list[bytes] = []

    def event(kind: str, **data: Any) -> None:
        payload = {"type": kind, "sequence_number": len(events), **data}
        events.append(f"event: {kind}\n".encode() + _sse(payload))

    event("response.created", response={**full, "status": "in_progress", "output": [], "usage": None})
    msg_index = len(output) - 1
    for i, item in enumerate(output[:-1]):
        event("response.output_item.added", output_index=i, item=item)
        event("response.output_item.done", output_index=i, item=item)
    text = message["content"][0]["text"]
    ids = {"item_id": message["id"], "output_index": msg_index, "content_index": 0}
    event("response.output_item.added", output_index=msg_index,
          item={**message, "status": "in_progress", "content": []})
    event("response.content_part.added", **ids, part={"type": "output_text", "text": "", "annotations": []})
    for piece in _pieces(text):
        event("response.output_text.delta", **ids, delta=piece, logprobs=[])
    event("response.output_text.done", **ids, text=text, logprobs=[])
    event("response.content_part.done", **ids, part=message["content"][0])
    event("response.output_item.done", output_index=msg_index, item=message)
    event("response.incomplete" if full["status"] == "incomplete" else "response.completed", response=full)
    return events


# --- embeddings ------------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _word_vector(word: str, dims: int) -> tuple[float, ...]:
    rng = random.Random(hashlib.blake2b(word.encode(), digest_size=16).digest())
    return tuple(rng.gauss(0.0, 1.0) for _ in range(dims))


def _embed(text: str, dims: int) -> list[float]:
    """Hashed bag of words, normalised: deterministic, and similar texts get similar vectors."""
    words = _WORDS.findall(text.lower()) or [text]
    vec = [0.0] * dims
    for word in words:
        for i, x in enumerate(_word_vector(word, dims)):
            vec[i] += x
    norm = sum(x * x for x in vec) ** 0.5 or 1.0
    return [x / norm for x in vec]


def _embedding_inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, str) for x in raw):
            return raw
        if all(isinstance(x, int) for x in raw):
            return [" ".join(map(str, raw))]
        if all(isinstance(x, list) for x in raw):
            return [" ".join(map(str, x)) for x in raw]
    raise _BadRequest("input must be a string, a list of strings or token arrays")


async def embeddings(request: web.Request) -> web.StreamResponse:
    body = request[_BODY]
    model = _request_model(body)
    if (failed := await _fault(request, model, False)) is not None:
        return failed
    texts = _embedding_inputs(body.get("input"))
    dims = body.get("dimensions", EMBEDDING_DIMS)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096:
        raise _BadRequest("dimensions must be an integer between 1 and 4096")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vec = _embed(text, dims)
        encoded: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if as_base64 else vec
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    prompt = sum(count_tokens(t) for t in texts)
    usage = _usage_for(request, model, prompt, 0, 0)
    gen_id = _new_id()
    _remember(request, gen_id, usage, streamed=False, finish="stop")
    out: JSON = {"id": gen_id, "object": "list", "data": data, "model": model, "provider": _info(model).provider,
                 "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    if not _header_flag(request, "X-Fake-No-Cost", False):
        out["usage"]["cost"] = usage.cost
    headers: dict[str, str] = {}
    _stamp_headers(headers, gen_id)
    return _json_response(out, headers=headers)


# --- models, generation, test hooks ----------------------------------------------------------------------

_MODELS_BODY = orjson.dumps({"data": MODELS})


async def models(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_MODELS_BODY, content_type="application/json")


async def generation(request: web.Request) -> web.StreamResponse:
    gen_id = request.query.get("id")
    if not gen_id:
        raise _BadRequest("id query parameter is required")
    record = request.app[FAKE_STATE].generations.get(gen_id)
    if record is None:
        return _error(404, f"Generation {gen_id} not found")
    u: _Usage = record["usage"]
    provider = _info(u.model).provider
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record["created"]))
    return _json_response({"data": {
        "id": gen_id,
        "upstream_id": "chatcmpl-" + gen_id.rsplit("-", 1)[-1],
        "total_cost": u.cost,
        "cache_discount": u.cache_discount or None,
        "upstream_inference_cost": None,
        "created_at": created + "Z",
        "model": u.model,
        "app_id": None,
        "streamed": record["streamed"],
        "cancelled": False,
        "provider_name": provider,
        "latency": int(record["latency_ms"]),
        "moderation_latency": None,
        "generation_time": int(record["latency_ms"]),
        "finish_reason": record["finish_reason"],
        "native_finish_reason": _native(provider, record["finish_reason"]),
        "tokens_prompt": u.prompt,
        "tokens_completion": u.completion,
        "native_tokens_prompt": u.prompt,
        "native_tokens_completion": u.completion,
        "native_tokens_reasoning": u.reasoning,
        "native_tokens_cached": u.cached,
        "num_media_prompt": None,
        "num_media_completion": None,
        "num_search_results": None,
        "origin": "",
        "usage": u.cost,
        "is_byok": False,
        "byok_usage_inference": 0,
        "endpoint_id": "fake-endpoint-" + hashlib.blake2b(u.model.encode(), digest_size=4).hexdigest(),
    }})


async def fake_requests(request: web.Request) -> web.StreamResponse:
    recorded: Iterable[JSON] = request.app[FAKE_STATE].requests
    if path := request.query.get("path"):
        recorded = [r for r in recorded if r["path"] == path]
    return _json_response(list(recorded))


async def fake_reset(request: web.Request) -> web.StreamResponse:
    request.app[FAKE_STATE].reset()
    return _json_response({"ok": True})


async def fake_stats(request: web.Request) -> web.StreamResponse:
    state = request.app[FAKE_STATE]
    return _json_response({"total": sum(state.calls.values()), "by_path": dict(state.calls),
                           "client_disconnects": state.client_disconnects})


# --- app -------------------------------------------------------------------------------------------------

_PUBLIC_SUFFIXES = ("/models",)


@web.middleware
async def _fake_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Record the request, check auth, and turn every failure into OpenRouter-style JSON."""
    path = request.path
    if path.startswith("/_fake/"):
        return await handler(request)

    state = request.app[FAKE_STATE]
    raw = await request.read()
    body: Any = None
    entry: JSON = {"method": request.method, "path": path, "query": request.query_string,
                   "headers": {k.lower(): v for k, v in request.headers.items()}, "json": None}
    if raw:
        try:
            body = orjson.loads(raw)
            entry["json"] = body
        except orjson.JSONDecodeError:
            entry["body_text"] = raw[:2000].decode("utf-8", "replace")
    state.requests.append(entry)
    state.calls[path] += 1

    resp = await _dispatch(request, handler, body)
    if not resp.prepared and "x-generation-id" not in resp.headers:
        _stamp_headers(resp.headers, _new_id())
    return resp


async def _dispatch(request: web.Request, handler: Any, body: Any) -> web.StreamResponse:
    try:
        if request.match_info.http_exception is None and not request.path.endswith(_PUBLIC_SUFFIXES):
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                return _error(401, "No auth credentials found")
        if request.method == "POST":
            if not isinstance(body, dict):
                raise _BadRequest("request body must be a JSON object")
            request[_BODY] = body
        return await handler(request)
    except _BadRequest as exc:
        return _error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, exc.reason)
        raise


def create_fake_app(*, latency_ms: float = 0.0, chunk_delay_ms: float = 0.0, max_recorded: int = 1000
                    ) -> web.Application:
    config = FakeConfig(latency_ms=latency_ms, chunk_delay_ms=chunk_delay_ms, max_recorded=max_recorded)
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_fake_middleware])
    app[FAKE_CONFIG] = config
    app[FAKE_STATE] = FakeState(requests=deque(maxlen=max_recorded))
    for prefix in ("/api/v1", "/v1"):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_post(f"{prefix}/completions", completions)
        app.router.add_post(f"{prefix}/embeddings", embeddings)
        app.router.add_post(f"{prefix}/responses", responses)
        app.router.add_get(f"{prefix}/models", models)
        app.router.add_get(f"{prefix}/generation", generation)
    app.router.add_get("/_fake/requests", fake_requests)
    app.router.add_post("/_fake/reset", fake_reset)
    app.router.add_get("/_fake/stats", fake_stats)
    return app


async def start_fake_upstream(host: str = "127.0.0.1", port: int = 0, **kw: Any) -> tuple[web.AppRunner, str]:
    """Serve ``create_fake_app(**kw)`` on a real port; returns the runner (call ``cleanup()``) and base URL."""
    runner = web.AppRunner(create_fake_app(**kw), access_log=None, handler_cancellation=True,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    real_port = runner.addresses[0][1]
    return runner, f"http://{host}:{real_port}/api/v1"


async def _serve(args: argparse.Namespace) -> None:
    runner, url = await start_fake_upstream(args.host, args.port, latency_ms=args.latency_ms,
                                            chunk_delay_ms=args.chunk_delay_ms)
    print(f"fake OpenRouter listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.fake_openrouter", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9911)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sleep before every answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="sleep between SSE chunks")
    args = parser.parse_args(argv)
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
