"""Proxy-issued API tokens, kept as Redis hashes an operator can read with redis-cli.

Layout (prefix defaults to "orcache"):
  {prefix}:token:{id}   hash: name, created_at, revoked, cache_mode, similarity_threshold,
                        cache_ttl_seconds, cache_scope, upstream, secret_sha256, ...
  {prefix}:tokens       sorted set of token ids scored by creation time
  {prefix}:events       pub/sub channel: a token id is published when its record changes

A secret looks like ``sk-orc-<id>-<random>``: the id inside it lets authentication read the hash
directly (one round trip, no secondary index), and the secret itself is only stored as SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from proxy.rediskeys import events_channel, token_key, tokens_index
from proxy.token_options import OPTION_FIELDS, check_option, public_option

__all__ = [
    "CACHE_MODES", "Token", "TokenStore", "TokenValidationError", "hash_secret", "parse_token_id",
    "CACHE_HELP",
]

CACHE_MODES = ("off", "exact", "semantic")
SECRET_PREFIX = "sk-orc-"
_ID_LEN = 16
DEFAULT_THRESHOLD = 0.5
DEFAULT_TTL = 86_400

CACHE_HELP = (
    "cache_mode: 'off' passes every request through; 'exact' reuses an answer only for an identical "
    "request and needs no threshold; 'semantic' also reuses an answer for a similar question: if the "
    "similarity between queries is greater than the threshold, e.g. 0.7 (70%), the cached result is "
    "reused. similarity_threshold is 0-1, default 0.5 (50%)."
)


class TokenValidationError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token_id(secret: str) -> str | None:
    """The token id carried inside a proxy secret, or None when it is not one of ours."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) < len(SECRET_PREFIX) + _ID_LEN + 2:
        return None
    tid = secret[len(SECRET_PREFIX):len(SECRET_PREFIX) + _ID_LEN]
    if secret[len(SECRET_PREFIX) + _ID_LEN] != "-" or not all(c in "0123456789abcdef" for c in tid):
        return None
    return tid


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    name: str
    created_at: str
    revoked: bool
    cache_mode: str
    similarity_threshold: float
    cache_ttl_seconds: int
    # "" keeps the cache private to this token; any other value is a scope shared by every token that names it
    cache_shared_scope: str
    upstream: str
    secret_sha256: str
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def cache_scope(self) -> str:
        """The namespace this token's cache entries live in: private unless a shared scope is set."""
        return f"shared:{self.cache_shared_scope}" if self.cache_shared_scope else f"token:{self.id}"

    @classmethod
    def from_hash(cls, tid: str, h: dict[str, str]) -> Token:
        known = {"name", "created_at", "revoked", "cache_mode", "similarity_threshold", "cache_ttl_seconds",
                 "cache_shared_scope", "upstream", "secret_sha256"}
        return cls(
            id=tid,
            name=h.get("name", ""),
            created_at=h.get("created_at", ""),
            revoked=h.get("revoked", "0") == "1",
            cache_mode=h.get("cache_mode", "off"),
            similarity_threshold=float(h.get("similarity_threshold", DEFAULT_THRESHOLD)),
            cache_ttl_seconds=int(h.get("cache_ttl_seconds", DEFAULT_TTL)),
            cache_shared_scope=h.get("cache_shared_scope", ""),
            upstream=h.get("upstream", ""),
            secret_sha256=h.get("secret_sha256", ""),
            extra=tuple(sorted((k, v) for k, v in h.items() if k not in known)),
        )

    def public(self) -> dict[str, Any]:
        """The record as the API shows it: never the secret or its hash."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "revoked": self.revoked,
            "status": "revoked" if self.revoked else "active",
            "cache_mode": self.cache_mode,
            "similarity_threshold": self.similarity_threshold,
            "cache_ttl_seconds": self.cache_ttl_seconds,
            "cache_shared_scope": self.cache_shared_scope or None,
            "upstream": self.upstream or None,
        }
        for k, v in self.extra:
            out.setdefault(k, public_option(k, v))
        return out

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_sha256, hash_secret(secret))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def validate_settings(changes: dict[str, Any], *, creating: bool) -> dict[str, str]:
    """Check token settings from the API or CLI and return them as hash fields (strings)."""
    allowed = {"name", "cache_mode", "similarity_threshold", "cache_ttl_seconds", "cache_shared_scope", "upstream",
               *OPTION_FIELDS}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise TokenValidationError(f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(sorted(allowed))}.",
                                   unknown[0])
    out: dict[str, str] = {}
    if "name" in changes or creating:
        name = changes.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise TokenValidationError("name is required: a non-empty string of at most 200 characters.", "name")
        out["name"] = name.strip()
    if "cache_mode" in changes:
        mode = changes["cache_mode"]
        if mode not in CACHE_MODES:
            raise TokenValidationError(
                f"cache_mode must be one of off, exact, semantic (got {mode!r}). " + CACHE_HELP, "cache_mode")
        out["cache_mode"] = mode
    if "similarity_threshold" in changes:
        t = changes["similarity_threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0:
            raise TokenValidationError(
                f"similarity_threshold must be a number from 0 to 1, e.g. 0.7 for 70% (got {t!r}).",
                "similarity_threshold")
        out["similarity_threshold"] = repr(float(t))
    if "cache_ttl_seconds" in changes:
        ttl = changes["cache_ttl_seconds"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 365 * 86_400:
            raise TokenValidationError("cache_ttl_seconds must be a whole number from 1 to 31536000.",
                                       "cache_ttl_seconds")
        out["cache_ttl_seconds"] = str(ttl)
    for name in ("cache_shared_scope", "upstream"):
        if name in changes:
            v = changes[name]
            if v is None:
                v = ""
            if not isinstance(v, str) or len(v) > 200 or any(c.isspace() for c in v):
                raise TokenValidationError(f"{name} must be a string without spaces (or null).", name)
            out[name] = v
    for name in OPTION_FIELDS.intersection(changes):  # quotas, fallbacks, breakpoints
        try:
            out[name] = check_option(name, changes[name])
        except ValueError as exc:
            raise TokenValidationError(str(exc), name) from None
    return out


class TokenStore:
    """Create, read, change and revoke tokens; every change is announced on the events channel."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, tid: str) -> str:
        return token_key(self._prefix, tid)

    async def _announce(self, tid: str) -> None:
        await self._redis.publish(events_channel(self._prefix), tid)

    async def create(self, fields: dict[str, Any]) -> tuple[Token, str]:
        values = {"cache_mode": "off", "similarity_threshold": repr(DEFAULT_THRESHOLD),
                  "cache_ttl_seconds": str(DEFAULT_TTL), "cache_shared_scope": "", "upstream": ""}
        values.update(validate_settings(fields, creating=True))
        tid = secrets.token_hex(_ID_LEN // 2)
        secret = f"{SECRET_PREFIX}{tid}-{secrets.token_urlsafe(32)}"
        values.update(created_at=_now_iso(), revoked="0", secret_sha256=hash_secret(secret))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(tid), mapping=values)
            pipe.zadd(tokens_index(self._prefix), {tid: time.time()})
            await pipe.execute()
        return Token.from_hash(tid, values), secret

    async def get(self, tid: str) -> Token | None:
        if not all(c in "0123456789abcdef" for c in tid) or len(tid) != _ID_LEN:
            return None
        raw = await self._redis.hgetall(self._key(tid))
        if not raw:
            return None
        return Token.from_hash(tid, {_s(k): _s(v) for k, v in raw.items()})

    async def list(self, *, include_revoked: bool = True) -> list[Token]:
        ids = [_s(i) for i in await self._redis.zrange(tokens_index(self._prefix), 0, -1)]
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.hgetall(self._key(tid))
            hashes = await pipe.execute()
        tokens = [Token.from_hash(tid, {_s(k): _s(v) for k, v in h.items()}) for tid, h in zip(ids, hashes) if h]
        return [t for t in tokens if include_revoked or not t.revoked]

    async def update(self, tid: str, changes: dict[str, Any]) -> Token | None:
        values = validate_settings(changes, creating=False)
        if await self.get(tid) is None:
            return None
        if values:
            await self._redis.hset(self._key(tid), mapping=values)
            await self._announce(tid)
        return await self.get(tid)

    async def revoke(self, tid: str) -> Token | None:
        if await self.get(tid) is None:
            return None
        await self._redis.hset(self._key(tid), mapping={"revoked": "1", "revoked_at": _now_iso()})
        await self._announce(tid)
        return await self.get(tid)


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
