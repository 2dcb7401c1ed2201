"""Named presets: ``"model": "@preset/<slug>"`` stands for a model with its system prompt and parameters.

Layout (Redis, readable with redis-cli):
  {prefix}:preset:{slug}   hash: model, system_prompt, temperature, top_p, max_tokens, description,
                           created_at, updated_at (absent fields are simply not set)
  {prefix}:presets         sorted set of slugs scored by creation time

Expansion happens before the cache and the upstream see the request, so an expanded request and the same
request written out by hand share one cache entry. Rules: the preset's model always replaces the
``@preset/...`` name; every other preset field only fills what the request leaves out (the request wins);
the preset's system prompt is prepended when the request has no system (or developer) message, and becomes
``instructions`` on the Responses API. ``max_tokens`` is ``max_output_tokens`` there.

Lookups are cached in-process for ``token_cache_seconds`` (unknown slugs too), so a preset costs at most one
HGETALL per slug per worker per that interval; the admin API clears its own worker's cache at once.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from proxy.errors import ProxyError
from proxy.keys import PRESETS, REDIS, SETTINGS
from proxy.rediskeys import preset_key, presets_index

__all__ = ["PRESET_PREFIX", "Preset", "PresetExistsError", "PresetStore", "PresetValidationError", "apply_preset",
           "expand_preset", "presets_ctx", "validate_preset"]

PRESET_PREFIX = "@preset/"
SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
FIELDS = ("model", "system_prompt", "temperature", "top_p", "max_tokens", "description")
_MODEL = re.compile(r"[A-Za-z0-9~][A-Za-z0-9._:/@+\-]{0,199}")
_MAX_PROMPT = 200_000


class PresetValidationError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class PresetExistsError(PresetValidationError):
    """Creating a preset whose slug is taken (409)."""


@dataclass(frozen=True, slots=True)
class Preset:
    slug: str
    model: str
    system_prompt: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    description: str | None = None
    created_at: str = ""
    updated_at: str = ""

    @classmethod
    def from_hash(cls, slug: str, h: dict[str, str]) -> Preset:
        def num(name: str) -> float | None:
            raw = h.get(name)
            return float(raw) if raw else None

        max_tokens = h.get("max_tokens")
        return cls(slug=slug, model=h.get("model", ""), system_prompt=h.get("system_prompt") or None,
                   temperature=num("temperature"), top_p=num("top_p"),
                   max_tokens=int(max_tokens) if max_tokens else None, description=h.get("description") or None,
                   created_at=h.get("created_at", ""), updated_at=h.get("updated_at", ""))

    def public(self) -> dict[str, Any]:
        return {"slug": self.slug, "model_alias": PRESET_PREFIX + self.slug, "model": self.model,
                "system_prompt": self.system_prompt, "temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "description": self.description, "created_at": self.created_at,
                "updated_at": self.updated_at}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_slug(slug: Any) -> str:
    if not isinstance(slug, str) or SLUG.fullmatch(slug) is None:
        raise PresetValidationError(
            f"slug must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit "
            f"(got {slug!r}).", "slug")
    return slug


def validate_preset(changes: dict[str, Any], *, creating: bool) -> tuple[dict[str, str], list[str]]:
    """(fields to set, fields to remove) as hash strings; PresetValidationError names a bad field."""
    allowed = set(FIELDS) | ({"slug"} if creating else set())
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise PresetValidationError(f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(sorted(allowed))}.",
                                    unknown[0])
    out: dict[str, str] = {}
    remove: list[str] = []
    if creating or "model" in changes:
        model = changes.get("model")
        if not isinstance(model, str) or _MODEL.fullmatch(model) is None or model.startswith(PRESET_PREFIX):
            raise PresetValidationError("model is required: a model id such as openai/gpt-4o-mini "
                                        "(not another preset).", "model")
        out["model"] = model
    for name, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        if name in changes:
            v = changes[name]
            if v is None:
                remove.append(name)
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise PresetValidationError(f"{name} must be a number from {lo:g} to {hi:g} (or null).", name)
            else:
                out[name] = repr(float(v))
    if "max_tokens" in changes:
        v = changes["max_tokens"]
        if v is None:
            remove.append("max_tokens")
        elif isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000_000:
            raise PresetValidationError("max_tokens must be a whole number from 1 to 10000000 (or null).",
                                        "max_tokens")
        else:
            out["max_tokens"] = str(v)
    for name, limit in (("system_prompt", _MAX_PROMPT), ("description", 1000)):
        if name in changes:
            v = changes[name]
            if v is None or v == "":
                remove.append(name)
            elif not isinstance(v, str) or len(v) > limit:
                raise PresetValidationError(f"{name} must be a string of at most {limit} characters (or null).",
                                            name)
            else:
                out[name] = v
    return out, remove


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class PresetStore:
    """CRUD on preset hashes, plus the cached lookup the proxy route uses."""

    def __init__(self, redis: Redis, prefix: str, cache_seconds: float = 1.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[Preset | None, float]] = {}

    async def get(self, slug: str) -> Preset | None:
        if SLUG.fullmatch(slug) is None:
            return None
        raw = await self._redis.hgetall(preset_key(self._prefix, slug))
        if not raw or b"model" not in raw and "model" not in raw:
            return None
        return Preset.from_hash(slug, {_s(k): _s(v) for k, v in raw.items()})

    async def resolve(self, slug: str) -> Preset | None:
        """The preset for the proxy route: from the in-process cache when it is fresh."""
        now = time.monotonic()
        hit = self._cache.get(slug)
        if hit is not None and hit[1] > now:
            return hit[0]
        preset = await self.get(slug)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[slug] = (preset, now + self._ttl)
        return preset

    def forget(self, slug: str | None = None) -> None:
        if slug is None:
            self._cache.clear()
        else:
            self._cache.pop(slug, None)

    async def list(self) -> list[Preset]:
        slugs = [_s(s) for s in await self._redis.zrange(presets_index(self._prefix), 0, -1)]
        if not slugs:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for slug in slugs:
                pipe.hgetall(preset_key(self._prefix, slug))
            hashes = await pipe.execute()
        return [Preset.from_hash(slug, {_s(k): _s(v) for k, v in h.items()}) for slug, h in zip(slugs, hashes) if h]

    async def create(self, fields: dict[str, Any]) -> Preset:
        slug = check_slug(fields.get("slug"))
        values, _ = validate_preset(fields, creating=True)
        now = _now_iso()
        values.update(created_at=now, updated_at=now)
        key = preset_key(self._prefix, slug)
        # HSETNX on model claims the slug atomically; the rest follows in one transaction
        if not await self._redis.hsetnx(key, "model", values["model"]):
            raise PresetExistsError(f"A preset named {slug!r} exists already; change it with PATCH.", "slug")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=values)
            pipe.zadd(presets_index(self._prefix), {slug: time.time()})
            await pipe.execute()
        self.forget(slug)
        return Preset.from_hash(slug, values)

    async def update(self, slug: str, changes: dict[str, Any]) -> Preset | None:
        values, remove = validate_preset(changes, creating=False)
        if await self.get(slug) is None:
            return None
        key = preset_key(self._prefix, slug)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={**values, "updated_at": _now_iso()})
            if remove:
                pipe.hdel(key, *remove)
            await pipe.execute()
        self.forget(slug)
        return await self.get(slug)

    async def delete(self, slug: str) -> bool:
        if SLUG.fullmatch(slug) is None:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(preset_key(self._prefix, slug))
            pipe.zrem(presets_index(self._prefix), slug)
            deleted, _ = await pipe.execute()
        self.forget(slug)
        return bool(deleted)


# --- expansion -----------------------------------------------------------------------------------------

def _has_system(messages: list[Any]) -> bool:
    return any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages)


def apply_preset(payload: dict[str, Any], preset: Preset, tail: str) -> None:
    """Expand in place: the preset's model always; its other fields only where the request has none."""
    payload["model"] = preset.model
    if tail == "embeddings":
        return
    for name in ("temperature", "top_p"):
        value = getattr(preset, name)
        if value is not None and payload.get(name) is None:
            payload[name] = value
    if preset.max_tokens is not None:
        names = ("max_output_tokens",) if tail == "responses" else ("max_tokens", "max_completion_tokens")
        if all(payload.get(n) is None for n in names):
            payload[names[0]] = preset.max_tokens
    if preset.system_prompt:
        messages = payload.get("messages")
        if tail == "chat/completions" and isinstance(messages, list) and not _has_system(messages):
            payload["messages"] = [{"role": "system", "content": preset.system_prompt}, *messages]
        elif tail == "responses" and payload.get("instructions") is None:
            payload["instructions"] = preset.system_prompt


async def expand_preset(request: web.Request, tail: str, payload: dict[str, Any]) -> str:
    """Replace ``@preset/<slug>`` by the preset (400 when there is none); returns the slug."""
    slug = payload["model"][len(PRESET_PREFIX):]
    preset = await request.app[PRESETS].resolve(slug) if SLUG.fullmatch(slug) else None
    if preset is None:
        raise ProxyError(400, f"Unknown preset {slug!r}: create it with POST /admin/presets or "
                              f"`orcache preset create`.", "preset_not_found", param="model")
    apply_preset(payload, preset, tail)
    return slug


async def presets_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[PRESETS] = PresetStore(app[REDIS], settings.key_prefix, settings.token_cache_seconds)
    yield
