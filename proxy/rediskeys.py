"""Redis key names used by the proxy core, in one place (the README documents the same layout)."""

from __future__ import annotations

__all__ = ["token_key", "tokens_index", "events_channel", "admin_key", "session_key"]


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
