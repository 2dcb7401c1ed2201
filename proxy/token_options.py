"""Optional per-token settings beyond caching: quotas and plans, fallback models, automatic prompt-cache
breakpoints. They live in the token's Redis hash next to the cache settings, as plain strings.

Quota fields (``rpm``, ``tpm``, ``requests_per_month``, ``tokens_per_month``, ``cost_per_month``) take a
non-negative number where 0 means "no limit"; an explicit value overrides the plan's default. ``plan`` is
one of ``PLANS``. Sending ``null`` removes a setting (the hash keeps an empty string, read as "not set"), so
the plan's default applies again.

This module has no Redis or aiohttp dependency: ``proxy.tokens`` validates with it, ``proxy.quotas``,
``proxy.fallback`` and ``proxy.breakpoints`` read the parsed values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "LIMIT_FIELDS", "OPTION_FIELDS", "PLANS", "Limits", "TokenOptions", "check_option", "options_of",
    "public_option",
]

# quota name -> (unit, window) for messages; the order is the order limits are checked in
LIMIT_FIELDS: dict[str, tuple[str, str]] = {
    "rpm": ("requests", "minute"),
    "tpm": ("tokens", "minute"),
    "requests_per_month": ("requests", "month"),
    "tokens_per_month": ("tokens", "month"),
    "cost_per_month": ("USD", "month"),
}
# default limits per plan (None: no limit); explicit token settings override them
PLANS: dict[str, dict[str, float | None]] = {
    "free": {"rpm": 20, "tpm": 40_000, "requests_per_month": 1_000, "tokens_per_month": 1_000_000,
             "cost_per_month": 1.0},
    "premium": {"rpm": 300, "tpm": 1_000_000, "requests_per_month": 100_000, "tokens_per_month": 100_000_000,
                "cost_per_month": 100.0},
    "enterprise": {"rpm": 3_000, "tpm": 10_000_000, "requests_per_month": None, "tokens_per_month": None,
                   "cost_per_month": 10_000.0},
    "unlimited": {name: None for name in LIMIT_FIELDS},
}
OPTION_FIELDS = frozenset({
    *LIMIT_FIELDS, "plan", "fallback_models", "fallback_budget_seconds", "auto_cache_breakpoints",
    "auto_cache_min_chars",
})
MAX_FALLBACK_MODELS = 8
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,199}")
_INT_FIELDS = frozenset({"rpm", "tpm", "requests_per_month", "tokens_per_month", "auto_cache_min_chars"})
_TRUE = frozenset({"1", "true", "yes", "on"})


def parse_models(value: Any, name: str = "fallback_models") -> list[str]:
    """A model list from a comma-separated string or a JSON list; ValueError naming the problem."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise ValueError(f"{name} must be a comma-separated string or a list of model ids.")
    items = [v for v in items if v]
    if len(items) > MAX_FALLBACK_MODELS:
        raise ValueError(f"{name} may name at most {MAX_FALLBACK_MODELS} models.")
    for item in items:
        if _MODEL_ID.fullmatch(item) is None:
            raise ValueError(f"{name}: {item!r} is not a model id (e.g. openai/gpt-4o-mini).")
    return items


def check_option(name: str, value: Any) -> str:
    """Validate one optional setting; returns it as a hash value ("" removes it). Raises ValueError."""
    if value is None:
        return ""
    if name in LIMIT_FIELDS:
        integral = name in _INT_FIELDS
        ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
              and value >= 0 and (not integral or float(value).is_integer()) and value <= 1e15)
        if not ok:
            kind = "a whole number" if integral else "a number of USD"
            raise ValueError(f"{name} must be {kind} >= 0 (0 means no limit), or null to use the plan's default "
                             f"(got {value!r}).")
        return str(int(value)) if integral else repr(float(value))
    if name == "plan":
        if not isinstance(value, str) or value.lower() not in PLANS:
            raise ValueError(f"plan must be one of {', '.join(PLANS)} or null (got {value!r}).")
        return value.lower()
    if name == "fallback_models":
        return ",".join(parse_models(value))
    if name == "fallback_budget_seconds":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
            raise ValueError(f"fallback_budget_seconds must be a number of seconds from 0 to 3600 (got {value!r}).")
        return repr(float(value))
    if name == "auto_cache_breakpoints":
        if not isinstance(value, bool):
            raise ValueError(f"auto_cache_breakpoints must be true or false (got {value!r}).")
        return "1" if value else "0"
    if name == "auto_cache_min_chars":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
            raise ValueError(f"auto_cache_min_chars must be a whole number from 1 to 10000000 (got {value!r}).")
        return str(value)
    raise ValueError(f"Unknown field {name!r}.")


def public_option(name: str, raw: str) -> Any:
    """A stored option as the API shows it (numbers as numbers, lists as lists, unset as null)."""
    if name not in OPTION_FIELDS:
        return raw
    if raw == "":
        return None
    try:
        if name in _INT_FIELDS:
            return int(raw)
        if name in ("cost_per_month", "fallback_budget_seconds"):
            return float(raw)
    except ValueError:
        return raw
    if name == "auto_cache_breakpoints":
        return raw.lower() in _TRUE
    if name == "fallback_models":
        return [m for m in raw.split(",") if m]
    return raw


@dataclass(frozen=True, slots=True)
class Limits:
    """Effective limits of a token (plan defaults with its explicit settings on top); None: no limit."""
    rpm: int | None = None
    tpm: int | None = None
    requests_per_month: int | None = None
    tokens_per_month: int | None = None
    cost_per_month: float | None = None
    plan: str | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}

    @property
    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in LIMIT_FIELDS)


@dataclass(frozen=True, slots=True)
class TokenOptions:
    limits: Limits | None  # None when the token has no limit at all: no Redis work for it
    fallback_models: tuple[str, ...] = ()
    fallback_budget_seconds: float | None = None
    auto_cache_breakpoints: bool = False
    auto_cache_min_chars: int | None = None


def _number(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _limits(h: Mapping[str, str]) -> Limits | None:
    plan = h.get("plan") or None
    base = PLANS.get(plan, {}) if plan else {}
    values: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        explicit = _number(h.get(name))
        value = explicit if explicit is not None else base.get(name)
        if value is None or value == 0:  # 0 means no limit
            values[name] = None
        else:
            values[name] = float(value) if name == "cost_per_month" else int(value)
    limits = Limits(plan=plan, **values)
    return limits if limits.any else None


@lru_cache(maxsize=4096)
def options_of(extra: tuple[tuple[str, str], ...]) -> TokenOptions:
    """Parsed options of a token, from ``Token.extra`` (memoised: tokens are immutable records)."""
    h = dict(extra)
    budget = _number(h.get("fallback_budget_seconds"))
    min_chars = _number(h.get("auto_cache_min_chars"))
    return TokenOptions(
        limits=_limits(h),
        fallback_models=tuple(m for m in (h.get("fallback_models") or "").split(",") if m),
        fallback_budget_seconds=budget if budget else None,
        auto_cache_breakpoints=(h.get("auto_cache_breakpoints") or "").lower() in _TRUE,
        auto_cache_min_chars=int(min_chars) if min_chars else None,
    )
