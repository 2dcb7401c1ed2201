"""CallRecord -> database row, in the background writer (never on the request path).

``COLUMNS`` is the single source of the column order used by COPY, the spool files and the queries. Every
value is made safe for Postgres here (no NUL characters, no lone surrogates, integers in range, JSON that
jsonb accepts), so one odd request cannot poison a whole batch.
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
        text = _content_text(message.get("content"))
        if text is None:
            continue
        if role in ("system", "developer"):
            system_parts.append(text)
        elif role == "user":
            user_text = text
    if user_text is None:
        for key in ("input", "prompt"):
            value = request_json.get(key)
            if isinstance(value, str):
                user_text = value
                break
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                user_text = value[-1]
                break
    return _sha256("\n".join(system_parts) if system_parts else None), _sha256(user_text)


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


def record_to_row(record: CallRecord, *, pricing: PricingTable | None = None, preview_chars: int = 200,
                  store_bodies: bool = False) -> tuple[Any, ...]:
    """One database row in ``COLUMNS`` order."""
    cache_status = str(record.cache_status or "bypass").lower()
    if cache_status not in CACHE_STATUSES:
        cache_status = "bypass"
    hit = cache_status in HIT_STATUSES
    status = _int(record.status) or 0
    success = 0 < status < 400 and not record.error
    model = record.response_model or record.model_requested

    def price(u: Usage) -> float | None:
        if pricing is None:
            return None
        found = pricing.cost(model, u)
        return found if found is not None else pricing.cost(record.model_requested, u)

    usage = extract_usage(record.usage)
    saved_cost: float | None = None
    saved_prompt = saved_completion = 0
    if hit:
        # a hit costs nothing and uses no tokens; what the original call used is recorded as saved
        saved = extract_usage(record.saved_usage) if record.saved_usage else usage
        saved_cost = _float(record.saved_cost)
        if saved_cost is None:
            saved_cost = saved.cost if saved.cost is not None else (price(saved) if saved.present else None)
        saved_prompt, saved_completion = saved.prompt_tokens, saved.completion_tokens
        usage = Usage()
        cost: float | None = 0.0
    elif usage.present:
        cost = usage.cost if usage.cost is not None else price(usage)
    else:
        cost = None if success else 0.0  # a failed call with no usage was not billed

    permaslug = None
    if pricing is not None:
        permaslug = pricing.permaslug(model) or pricing.permaslug(record.model_requested)
    system_hash, user_hash = prompt_hashes(record.request_json)
    preview = _text(record.response_preview, max(preview_chars, 0)) if preview_chars > 0 else None
    tags = _tags(record.tags)

    return (
        _text(record.request_id, 200) or "",
        _created_at(record.created_at),
        _text(record.token_id),
        _text(record.token_name),
        _text(record.upstream_id),
        _text(record.method, 16) or "",
        _text(record.path, _PATH_CHARS) or "",
        status,
        success,
        _text(record.error, _ERROR_CHARS),
        _float(record.duration_ms),
        _float(record.ttfb_ms),
        bool(record.streamed),
        _text(record.model_requested),
        _text(model),
        _text(permaslug),
        _text(record.provider),
        _text(record.endpoint_id),
        _text(record.generation_id),
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.cached_tokens,
        usage.cache_creation_tokens,
        usage.cache_read_tokens,
        usage.reasoning_tokens,
        _float(cost),
        _float(usage.byok_cost),
        cache_status,
        _float(record.similarity),
        _float(saved_cost),
        saved_prompt,
        saved_completion,
        system_hash,
        user_hash,
        preview,
        _json(record.request_json) if store_bodies and record.request_json is not None else None,
        _text(record.response_body or record.response_preview, None) if store_bodies else None,
        _text(tags.get("project_id")),
        _text(tags.get("task_id")),
        _text(tags.get("agent_type")),
        _text(tags.get("agent_id")),
        _text(tags.get("run_id")),
        _text(tags.get("query_id")),
        _int(tags.get("iteration")),
        _json(_metadata(record.metadata), _METADATA_BYTES),
        _json(_routing(record)),
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
