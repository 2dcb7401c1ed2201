"""CallRecord -> database row, in the background writer (never on the request path).

``COLUMNS`` is the single source of the column order used by COPY, the spool files and the queries. Every
value is made safe for Postgres here (no NUL characters, no lone surrogates, integers in range, JSON that
jsonb accepts), so one odd request cannot poison a whole batch. ``record_to_row`` runs for every call in the
proxy's event loop, so the common case (clean ASCII strings, floats, a repeated system prompt) is checked
with a few C-level operations over several values at once; only odd values take the per-value cleaners.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

import orjson

from logstore.pricing import PricingTable
from logstore.record import TAG_HEADERS, CallRecord
from logstore.usage import Usage, extract_usage

__all__ = [
    "CACHE_STATUSES",
    "COLUMNS",
    "HIT_STATUSES",
    "JSON_COLUMNS",
    "minimal_row",
    "prompt_hashes",
    "record_to_row",
    "row_from_spool_line",
    "row_to_spool_line",
]

COLUMNS: tuple[str, ...] = (
    "request_id", "created_at", "token_id", "token_name", "upstream_id", "method", "path", "status_code",
    "success", "error", "duration_ms", "ttfb_ms", "streamed", "model_requested", "model", "model_permaslug",
    "provider", "endpoint_id", "generation_id", "prompt_tokens", "completion_tokens", "total_tokens",
    "cached_tokens", "cache_creation_tokens", "cache_read_tokens", "reasoning_tokens", "cost", "byok_cost",
    "cache_status", "similarity", "saved_cost", "saved_prompt_tokens", "saved_completion_tokens",
    "system_prompt_hash", "user_prompt_hash", "response_preview", "request_body", "response_body",
    "project_id", "task_id", "agent_type", "agent_id", "run_id", "query_id", "iteration", "metadata", "routing",
)
_INDEX = {name: i for i, name in enumerate(COLUMNS)}
JSON_COLUMNS = frozenset({"request_body", "metadata", "routing"})
CACHE_STATUSES = ("miss", "exact", "semantic", "bypass", "off")
HIT_STATUSES = frozenset({"exact", "semantic"})
TAG_COLUMNS = frozenset(TAG_HEADERS.values())
_TAG_BY_HEADER = {h.lower(): c for h, c in TAG_HEADERS.items()}

_INT_MAX = 2**31 - 1
_SHORT = 256  # ids, names, tags
_ERROR_CHARS = 4000
_PATH_CHARS = 2048
_METADATA_BYTES = 16 * 1024


def _text(value: Any, limit: int | None = _SHORT) -> str | None:
    if value is None:
        return None
    if type(value) is str and value.isascii() and (limit is None or len(value) <= limit) and "\x00" not in value:
        return value  # the common case: nothing to clean
    if not isinstance(value, str):
        value = str(value)
    if limit is not None and len(value) > limit:
        value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from a badly decoded body
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return min(max(n, -_INT_MAX), _INT_MAX)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


_STR_OR_NONE = frozenset({str, type(None)})
_FLOAT_OR_NONE = frozenset({float, type(None)})


def _texts(values: tuple[Any, ...], limit: int = _SHORT) -> tuple[Any, ...]:
    """``_text`` of several values: when all are clean (the usual case) a few C-level checks over all of them
    replace one Python call per value."""
    if _STR_OR_NONE.issuperset(map(type, values)):
        present = [*filter(None, values)]
        joined = "".join(present)
        if joined.isascii() and "\x00" not in joined and (len(joined) <= limit or max(map(len, present)) <= limit):
            return values
    return tuple([_text(v, limit) for v in values])


def _floats(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``_float`` of several values, checked together when all are already floats (or None)."""
    if _FLOAT_OR_NONE.issuperset(map(type, values)) and math.isfinite(sum(filter(None, values), 0.0)):
        return values
    return tuple([_float(v) for v in values])


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value, None)
    if isinstance(value, dict):
        return {_text(str(k), None): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strip_nul(v) for v in value]
    return value


def _json(value: Any, max_bytes: int | None = None) -> orjson.Fragment | None:
    """Pre-serialised JSON jsonb accepts (it rejects \\u0000), as a Fragment the codec embeds as is."""
    if value is None:
        return None
    try:
        data = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
        if b"\\u0000" in data:
            data = orjson.dumps(_strip_nul(orjson.loads(data)))
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError; surrogates, huge ints
        try:
            data = orjson.dumps(_strip_nul(value), default=str, option=orjson.OPT_NON_STR_KEYS)
        except (TypeError, ValueError):
            data = orjson.dumps({"unserialisable": _text(repr(value), 1000)})
    if max_bytes is not None and len(data) > max_bytes:
        data = orjson.dumps({"truncated": True, "bytes": len(data)})
    return orjson.Fragment(data)


def _created_at(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        try:
            return _created_at(datetime.fromisoformat(value))
        except ValueError:
            pass
    return datetime.now(UTC)


# --- prompt hashes -----------------------------------------------------------------------------------

def _content_text(content: Any) -> str | None:
    """Text of an OpenAI/Anthropic message content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts) if parts else None
    return None


def _sha256(text: str | None) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# System prompts repeat across calls (same agent, same instructions): their digests are remembered, up to a
# total of _SYSTEM_CACHE_CHARS characters of prompt text (then the memo starts over).
_SYSTEM_HASHES: dict[str, str] = {}
_SYSTEM_CACHE_CHARS = 4_000_000
_system_cached_chars = 0


def _system_sha256(text: str) -> str:
    global _system_cached_chars
    digest = _SYSTEM_HASHES.get(text)
    if digest is None:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        if _system_cached_chars + len(text) > _SYSTEM_CACHE_CHARS:
            _SYSTEM_HASHES.clear()
            _system_cached_chars = 0
        _SYSTEM_HASHES[text] = digest
        _system_cached_chars += len(text)
    return digest


def prompt_hashes(request_json: Any) -> tuple[str | None, str | None]:
    """sha256 hex of the system prompt and of the last user prompt (None when the request has none).

    System: every ``system``/``developer`` message joined by newlines, or Anthropic's top-level ``system``,
    or the Responses API's ``instructions``. User: the last ``user`` message's text, or a string ``input`` /
    ``prompt``.
    """
    if not isinstance(request_json, dict):
        return None, None
    system_parts: list[str] = []
    user_text: str | None = None
    top_system = _content_text(request_json.get("system"))
    if top_system is not None:
        system_parts.append(top_system)
    if isinstance(request_json.get("instructions"), str):
        system_parts.append(request_json["instructions"])
    messages = request_json.get("messages")
    if not isinstance(messages, list):
        messages = request_json.get("input") if isinstance(request_json.get("input"), list) else []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "user":
            text = _content_text(message.get("content"))
            if text is not None:
                user_text = text
        elif role == "system" or role == "developer":
            text = _content_text(message.get("content"))
            if text is not None:
                system_parts.append(text)
    if user_text is None:
        for key in ("input", "prompt"):
            value = request_json.get(key)
            if isinstance(value, str):
                user_text = value
                break
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                user_text = value[-1]
                break
    system_hash = _system_sha256(system_parts[0] if len(system_parts) == 1 else "\n".join(system_parts)) \
        if system_parts else None
    return system_hash, _sha256(user_text)


# --- record -> row -----------------------------------------------------------------------------------

def _tags(tags: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str):
            continue
        column = key if key in TAG_COLUMNS else _TAG_BY_HEADER.get(key.lower())
        if column is not None and value is not None and value != "":
            out[column] = value
    return out


# tag columns in row order; iteration (an integer column) last
_TAG_ORDER = ("project_id", "task_id", "agent_type", "agent_id", "run_id", "query_id", "iteration")
_ZERO_TOKENS = (0,) * 7


def _tag_values(tags: dict[str, Any]) -> tuple[Any, ...]:
    out = _tags(tags)
    return tuple([out.get(c) for c in _TAG_ORDER]) if out else (None,) * len(_TAG_ORDER)


def _metadata(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return {"raw": _text(value if isinstance(value, str) else value.decode("utf-8", "replace"), 2000)}
    return value


def _routing(record: CallRecord) -> Any:
    """The routing column: the attempts list, or the routing summary with its attempts when there is one."""
    if record.routing is None:
        return record.attempts or None
    return {**record.routing, "attempts": record.attempts} if record.attempts else record.routing


def _price(pricing: PricingTable | None, model: str | None, requested: str | None, u: Usage) -> float | None:
    if pricing is None:
        return None
    found = pricing.cost(model, u)
    return found if found is not None else pricing.cost(requested, u)


def _usage(block: Any, pricing: PricingTable | None, model: str | None, requested: str | None, *,
           priced: bool = True) -> tuple[tuple[int, ...], float | None, float | None, bool]:
    """(token counts in ``COLUMNS`` order, cost, byok cost, whether there was usage) of a usage block. The
    cost is the upstream's, else (``priced``) the pricing table's."""
    if block is None:
        return _ZERO_TOKENS, None, None, False
    u = extract_usage(block)
    cost = u.cost
    if cost is None and priced and u.present:
        cost = _price(pricing, model, requested, u)
    return (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens, u.cache_creation_tokens,
            u.cache_read_tokens, u.reasoning_tokens), cost, u.byok_cost, u.present


_CACHE_STATUS_SET = frozenset(CACHE_STATUSES)
_NO_TAGS = (None,) * len(_TAG_ORDER)


def record_to_row(record: CallRecord, *, pricing: PricingTable | None = None, preview_chars: int = 200,
                  store_bodies: bool = False) -> tuple[Any, ...]:
    """One database row in ``COLUMNS`` order.

    This runs once per call in the proxy's event loop, so the common case (clean strings, floats, a dict
    usage block) takes the short paths; anything odd goes through the per-value cleaners.
    """
    cache_status = record.cache_status
    if type(cache_status) is not str or cache_status not in _CACHE_STATUS_SET:
        cache_status = str(cache_status or "bypass").lower()
        if cache_status not in _CACHE_STATUS_SET:
            cache_status = "bypass"
    status = record.status
    if type(status) is not int or not -_INT_MAX <= status <= _INT_MAX:
        status = _int(status) or 0
    success = 0 < status < 400 and not record.error
    requested = record.model_requested
    model = record.response_model or requested

    saved_cost: float | None = None
    saved_prompt = saved_completion = 0
    if cache_status in HIT_STATUSES:
        # a hit costs nothing and uses no tokens; what the original call used is recorded as saved
        saved_cost = _float(record.saved_cost)
        saved, original_cost, _, _ = _usage(record.saved_usage or record.usage, pricing, model, requested,
                                            priced=saved_cost is None)
        if saved_cost is None:
            saved_cost = original_cost
        saved_prompt, saved_completion = saved[0], saved[1]
        tokens = _ZERO_TOKENS
        cost: float | None = 0.0
        byok_cost = None
    else:
        tokens, cost, byok_cost, present = _usage(record.usage, pricing, model, requested)
        if not present:
            cost = None if success else 0.0  # a failed call with no usage was not billed

    permaslug = None
    if pricing is not None:
        permaslug = pricing.permaslug(model) or pricing.permaslug(requested)
    system_hash, user_hash = prompt_hashes(record.request_json)
    tags = _tag_values(record.tags) if record.tags else _NO_TAGS
    (token_id, token_name, upstream_id, requested, model, permaslug, provider, endpoint_id, generation_id,
     project_id, task_id, agent_type, agent_id, run_id, query_id) = _texts(
        (record.token_id, record.token_name, record.upstream_id, requested, model, permaslug, record.provider,
         record.endpoint_id, record.generation_id, *tags[:6]))
    duration_ms, ttfb_ms, cost, byok_cost, similarity, saved_cost = _floats(
        (record.duration_ms, record.ttfb_ms, cost, byok_cost, record.similarity, saved_cost))
    created_at = record.created_at
    if type(created_at) is not datetime or created_at.tzinfo is None:
        created_at = _created_at(created_at)
    metadata = record.metadata
    routing = _routing(record)

    return (
        _text(record.request_id, 200) or "",
        created_at,
        token_id,
        token_name,
        upstream_id,
        _text(record.method, 16) or "",
        _text(record.path, _PATH_CHARS) or "",
        status,
        success,
        _text(record.error, _ERROR_CHARS) if record.error is not None else None,
        duration_ms,
        ttfb_ms,
        bool(record.streamed),
        requested,
        model,
        permaslug,
        provider,
        endpoint_id,
        generation_id,
        *tokens,
        cost,
        byok_cost,
        cache_status,
        similarity,
        saved_cost,
        saved_prompt,
        saved_completion,
        system_hash,
        user_hash,
        _text(record.response_preview, preview_chars) if preview_chars > 0 else None,
        _json(record.request_json) if store_bodies and record.request_json is not None else None,
        _text(record.response_body or record.response_preview, None) if store_bodies else None,
        project_id,
        task_id,
        agent_type,
        agent_id,
        run_id,
        query_id,
        _int(tags[6]) if tags[6] is not None else None,
        _json(_metadata(metadata), _METADATA_BYTES) if metadata is not None else None,
        _json(routing) if routing is not None else None,
    )


_KEEP_IN_MINIMAL = frozenset({
    "request_id", "created_at", "token_id", "upstream_id", "method", "status_code", "success", "duration_ms",
    "ttfb_ms", "streamed", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
    "cache_creation_tokens", "cache_read_tokens", "reasoning_tokens", "cost", "byok_cost", "cache_status",
    "similarity", "saved_cost", "saved_prompt_tokens", "saved_completion_tokens", "iteration",
})
_MINIMAL_DEFAULTS = {"request_id": "", "created_at": None, "method": "", "path": "", "status_code": 0,
                     "success": False, "streamed": False, "cache_status": "bypass"}


def minimal_row(row: tuple[Any, ...], reason: str) -> tuple[Any, ...]:
    """The row with only its plain fields, for when Postgres rejected the full one: better than losing it."""
    out = []
    for name, value in zip(COLUMNS, row):
        if name in _KEEP_IN_MINIMAL:
            out.append(value)
        elif name == "path":
            out.append(_text(value, 200) or "")
        elif name == "error":
            out.append(_text(f"stored without details: {reason}", _ERROR_CHARS))
        else:
            out.append(_MINIMAL_DEFAULTS.get(name))
    if out[_INDEX["created_at"]] is None:
        out[_INDEX["created_at"]] = datetime.now(UTC)
    return tuple(out)


# --- spool lines -------------------------------------------------------------------------------------

def row_to_spool_line(row: tuple[Any, ...]) -> bytes:
    """One self-describing JSON line (column names as keys, so a later column order still reads it)."""
    return orjson.dumps(dict(zip(COLUMNS, row)), option=orjson.OPT_APPEND_NEWLINE)


def row_from_spool_line(line: bytes) -> tuple[Any, ...]:
    data = orjson.loads(line)
    if not isinstance(data, dict) or not data.get("request_id"):
        raise ValueError("not a spooled row")
    data["created_at"] = _created_at(data.get("created_at"))
    for name in JSON_COLUMNS:
        if data.get(name) is not None:
            data[name] = _json(data[name])
    return tuple(data.get(name, _MINIMAL_DEFAULTS.get(name)) for name in COLUMNS)
