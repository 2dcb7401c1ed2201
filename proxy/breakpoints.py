"""Automatic provider prompt-cache breakpoints for tokens with ``auto_cache_breakpoints`` on.

Providers reached through OpenRouter cache prompts in two ways. Some cache automatically and need nothing
from us (OpenAI, DeepSeek, xAI Grok, Groq/Moonshot and others). Others cache only the prefix that ends at an
explicit ``cache_control: {"type": "ephemeral"}`` breakpoint in a message's content parts:

* ``anthropic/*`` (Claude: at most four breakpoints; a prefix under about 1024 tokens, 2048 on Haiku,
  is not cached),
* ``google/gemini*`` (Gemini: OpenRouter uses the last breakpoint).

``BREAKPOINT_MODELS`` lists those prefixes. For them, when the request has no breakpoint of its own, the
leading system (or developer) messages together reach the token's ``auto_cache_min_chars`` (default: the
``auto_cache_min_chars`` setting, 4000 characters, about 1000 tokens), the proxy marks the last text part
of the last of them with a breakpoint, turning string content into one text part. Every other request is
left exactly as it came (its body bytes are not even re-serialised). Breakpoints are not part of the
response-cache key, so adding one does not change which cached answer a request gets.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BREAKPOINT_MODELS", "EPHEMERAL", "add_system_breakpoint", "has_cache_control", "supports_breakpoints"]

BREAKPOINT_MODELS = ("anthropic/", "google/gemini")
EPHEMERAL = {"type": "ephemeral"}


def supports_breakpoints(model: Any) -> bool:
    return isinstance(model, str) and model.startswith(BREAKPOINT_MODELS)


def has_cache_control(messages: list[Any]) -> bool:
    for m in messages:
        if not isinstance(m, dict):
            continue
        if "cache_control" in m:
            return True
        content = m.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content):
            return True
    return False


def _text_len(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def add_system_breakpoint(payload: dict[str, Any], tail: str, min_chars: int) -> bool:
    """Mark a long leading system prompt as cacheable; True when the payload was changed."""
    if tail != "chat/completions" or not supports_breakpoints(payload.get("model")):
        return False
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return False
    lead: list[dict[str, Any]] = []
    for m in messages:
        if not (isinstance(m, dict) and m.get("role") in ("system", "developer")):
            break
        lead.append(m)
    if not lead or sum(_text_len(m.get("content")) for m in lead) < min_chars or has_cache_control(messages):
        return False
    last = lead[-1]
    content = last.get("content")
    if isinstance(content, str):
        last["content"] = [{"type": "text", "text": content, "cache_control": dict(EPHEMERAL)}]
        return True
    if isinstance(content, list):
        for i in range(len(content) - 1, -1, -1):
            part = content[i]
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                content[i] = {**part, "cache_control": dict(EPHEMERAL)}
                return True
    return False
