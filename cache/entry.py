"""One cached answer as it is stored in Redis (orjson) and handed to the proxy on a hit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["CachedEntry", "is_storable"]

FORMAT = 1


@dataclass(slots=True)
class CachedEntry:
    id: str  # entry id for the admin API
    response: dict[str, Any]  # the complete non-streamed response object
    usage: dict[str, Any] | None  # usage of the original call
    cost: float | None  # cost of the original call, when the upstream reported it
    stored_at: float  # unix time
    scope: str
    model: str
    query_text: str | None = None
    size: int = 0  # bytes of the stored value
    expires_at: float | None = None  # unix time the Redis copy expires (entries stored before it: None)

    def to_bytes(self) -> bytes:
        return orjson.dumps({
            "v": FORMAT, "id": self.id, "response": self.response, "usage": self.usage, "cost": self.cost,
            "stored_at": self.stored_at, "scope": self.scope, "model": self.model, "query": self.query_text,
            "expires_at": self.expires_at,
        })

    @classmethod
    def from_bytes(cls, raw: bytes) -> CachedEntry | None:
        """The entry, or None for a value this version cannot read (treated as a miss)."""
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(d, dict) or d.get("v") != FORMAT or not isinstance(d.get("response"), dict):
            return None
        return cls(id=d.get("id", ""), response=d["response"], usage=d.get("usage"), cost=d.get("cost"),
                   stored_at=d.get("stored_at", 0.0), scope=d.get("scope", ""), model=d.get("model", ""),
                   query_text=d.get("query"), size=len(raw), expires_at=d.get("expires_at"))


def is_storable(response: Any) -> bool:
    """Only complete, successful answers: every choice finished, and not with an error."""
    if not isinstance(response, dict) or response.get("error") is not None:
        return False
    choices = response.get("choices")
    if isinstance(choices, list) and choices:
        return all(isinstance(c, dict) and c.get("finish_reason") not in (None, "error")
                   and c.get("error") is None for c in choices)
    # embeddings: a list of vectors
    data = response.get("data")
    return response.get("object") == "list" and isinstance(data, list) and bool(data)
