"""Redis key names of the response cache, in one place (the README copies this layout).

``{prefix}`` is ``settings.key_prefix`` (default ``orcache``); ``{scope}`` is the token's cache scope,
``token:<token id>`` (private, the default) or ``shared:<name>`` (shared by every token naming it).

  {prefix}:cache:exact:{scope}:{exact_key}   string, TTL: the cached answer (orjson: response, usage,
                                             cost, stored_at, query). An exact hit is one GET of this key.
  {prefix}:cache:vec:{scope}:{exact_key}     hash, same TTL: one row of the search index per entry:
                                             entry_id, scope, model, params_hash, context_hash and
                                             embedder (tags) and, for semantic entries, embedding
                                             (FLOAT32 vector), indexed; query, bytes, stored_at,
                                             scope_name and entry (name of the exact key above), not.
  {prefix}:cache:lock:{scope}:{exact_key}    string, PX: single-flight lock, held by the process whose
                                             request is calling the upstream for this key; deleted by
                                             the script that stores the answer.
  {prefix}:cache:events                      pub/sub channel: purges and deletes, so every worker drops
                                             its hot tier (``cache.hot``).
  {prefix}-semantic                          RediSearch index (redisvl) over {prefix}:cache:vec:
                                             HNSW, COSINE, 384 dims with the local MiniLM model.

The tag values of scope, model and embedder are digests of the names (RediSearch tags are
case-insensitive and split on a separator, so raw names could match another scope); the raw scope
name is kept in the hash field ``scope_name`` for the stats. Every key has a TTL: the token's
``cache_ttl_seconds`` or the request's ``Cache-Control: max-age``.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "entry_id",
    "events_channel",
    "exact_key",
    "exact_key_for_vector",
    "index_name",
    "lock_key",
    "tag_digest",
    "vector_key",
    "vector_prefix",
]


def exact_key(prefix: str, scope: str, key: str) -> str:
    return f"{prefix}:cache:exact:{scope}:{key}"


def vector_prefix(prefix: str) -> str:
    return f"{prefix}:cache:vec:"


def vector_key(prefix: str, scope: str, key: str) -> str:
    return f"{prefix}:cache:vec:{scope}:{key}"


def exact_key_for_vector(prefix: str, vec_key: str) -> str:
    """The exact entry a vector hash points at (the same scope and key, other namespace)."""
    return f"{prefix}:cache:exact:" + vec_key[len(vector_prefix(prefix)):]


def lock_key(prefix: str, key: str) -> str:
    return f"{prefix}:cache:lock:{key}"


def index_name(prefix: str) -> str:
    return f"{prefix}-semantic"


def tag_digest(value: str) -> str:
    """A tag-safe stand-in for a free-form name (128 bits of SHA-256, hex)."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def entry_id(scope: str, key: str) -> str:
    """The id the admin API uses for one entry: unique across scopes, URL-safe."""
    return hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:32]


def events_channel(prefix: str) -> str:
    return f"{prefix}:cache:events"
