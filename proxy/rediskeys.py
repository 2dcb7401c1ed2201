"""Redis key names used by the proxy core, in one place (the README documents the same layout)."""

from __future__ import annotations

__all__ = ["token_key", "tokens_index", "events_channel", "admin_key", "session_key", "quota_minute_key",
           "quota_month_key", "preset_key", "presets_index"]


def token_key(prefix: str, token_id: str) -> str:
    return f"{prefix}:token:{token_id}"


def tokens_index(prefix: str) -> str:
    return f"{prefix}:tokens"


def events_channel(prefix: str) -> str:
    return f"{prefix}:events"


def admin_key(prefix: str) -> str:
    """Hash with the SHA-256 of a generated admin token (when ORCACHE_ADMIN_TOKEN is not set)."""
    return f"{prefix}:admin"


def session_key(prefix: str, session_sha: str) -> str:
    return f"{prefix}:session:{session_sha}"


def quota_minute_key(prefix: str, token_id: str, minute: int) -> str:
    """Hash (req, tok) of one token in one UTC minute (minutes since the epoch); expires after two minutes.

    The token id is a hash tag ({...}): the quota script touches both of a token's keys, which a Redis
    Cluster allows only when they live in one slot."""
    return f"{prefix}:quota:{{{token_id}}}:minute:{minute}"


def quota_month_key(prefix: str, token_id: str, month: str) -> str:
    """Hash (req, tok, cost) of one token in one UTC calendar month ("2025-01")."""
    return f"{prefix}:quota:{{{token_id}}}:month:{month}"


def preset_key(prefix: str, slug: str) -> str:
    """Hash: model, system_prompt, temperature, top_p, max_tokens, description, created_at, updated_at."""
    return f"{prefix}:preset:{slug}"


def presets_index(prefix: str) -> str:
    """Sorted set of preset slugs scored by creation time."""
    return f"{prefix}:presets"
