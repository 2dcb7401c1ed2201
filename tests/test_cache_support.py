"""Helpers shared by the response-cache tests (no tests here): tokens, settings, sample answers."""

from __future__ import annotations

from typing import Any

from cache.canonical import Fingerprint, fingerprint
from proxy.settings import Settings
from proxy.tokens import Token

__all__ = ["answer", "chat_fp", "make_settings_for", "make_token"]


def make_token(tid: str = "a" * 16, *, mode: str = "exact", threshold: float = 0.5, shared: str = "",
               ttl: int = 3600) -> Token:
    return Token(id=tid, name=f"token-{tid[:4]}", created_at="2025-01-01T00:00:00Z", revoked=False,
                 cache_mode=mode, similarity_threshold=threshold, cache_ttl_seconds=ttl,
                 cache_shared_scope=shared, upstream="", secret_sha256="")


def make_settings_for(key_prefix: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"key_prefix": key_prefix, "cache_timeout_ms": 250.0, "single_flight_timeout": 5.0,
                            "embeddings": "off"}
    base.update(overrides)
    return Settings(**base)


def chat_fp(question: str, *, model: str = "openai/gpt-4o-mini", system: str | None = None,
            **params: Any) -> Fingerprint:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    fp = fingerprint("/api/v1/chat/completions", {"model": model, "messages": messages, **params})
    assert fp is not None
    return fp


def answer(content: str, *, model: str = "openai/gpt-4o-mini", finish_reason: str | None = "stop",
           cost: float | None = 0.00042) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    if cost is not None:
        usage["cost"] = cost
    return {
        "id": "gen-upstream-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "provider": "OpenAI",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish_reason, "native_finish_reason": finish_reason}],
        "usage": usage,
    }
