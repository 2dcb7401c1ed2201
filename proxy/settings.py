"""Settings: one frozen dataclass, built in one place from flags and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from proxy.egress import EgressProxy, normalise_proxy_url

__all__ = ["Settings", "SettingsError", "load_settings", "OPENROUTER_BASE_URL"]

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"


class SettingsError(ValueError):
    """A setting is missing or has a value we cannot use; the message names the key."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    upstream_url: str = OPENROUTER_BASE_URL
    workers: int = 1
    data_dir: Path = Path(".orcache")
    redis_url: str | None = None
    database_url: str | None = None
    openrouter_api_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    key_prefix: str = "orcache"

    # HTTP limits and upstream behaviour
    max_body_bytes: int = 8 * 1024 * 1024
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 300.0
    upstream_pool_size: int = 256
    upstream_keepalive_seconds: float = 60.0
    # an answer read whole (not streamed) over this is a 502, not a worker out of memory
    upstream_max_response_bytes: int = 256 * 1024 * 1024
    http_referer: str | None = None
    x_title: str | None = "orcache"
    # outbound proxies (proxy.egress), from the variables curl reads; the URLs may carry credentials
    https_proxy: str | None = field(default=None, repr=False)
    http_proxy: str | None = field(default=None, repr=False)
    no_proxy: str | None = None

    # token lookups: seconds a token record is trusted in-process (pub/sub invalidates sooner)
    token_cache_seconds: float = 1.0

    # response cache
    cache_enabled: bool = True
    cache_timeout_ms: float = 100.0
    embeddings: str = "local"  # "local" (MiniLM), "off", or an OpenAI-compatible base URL
    embeddings_model: str = "text-embedding-3-small"
    embeddings_api_key: str | None = field(default=None, repr=False)
    # the local model with int8 weights (about 3x faster here; vectors within a few hundredths of float32)
    embeddings_int8: bool = True
    single_flight_timeout: float = 60.0
    # the hot tier: exact entries served a moment ago, kept in each worker (0 entries or seconds: off)
    cache_hot_entries: int = 4096
    cache_hot_seconds: float = 2.0

    # proxy-side fallbacks (tokens' fallback_models / X-Orcache-Fallback-Models): retries of the same model,
    # the first backoff (doubled each retry), the longest Retry-After honoured, the total time for all attempts
    fallback_retries: int = 1
    fallback_backoff_seconds: float = 0.25
    fallback_retry_after_cap_seconds: float = 5.0
    fallback_budget_seconds: float = 60.0
    # automatic provider prompt-cache breakpoints: the shortest system prompt (characters) worth one
    auto_cache_min_chars: int = 4000

    # usage logging
    logging_enabled: bool = True
    log_queue_size: int = 50_000
    log_batch_size: int = 2_000
    log_flush_interval: float = 0.2
    log_preview_chars: int = 200
    log_store_bodies: bool = False
    log_retention_days: int = 0  # 0 keeps rows for ever
    pricing_refresh_seconds: float = 3600.0
    enrich_generations: bool = False

    # process-level logging
    log_level: str = "info"
    log_format: str = "auto"  # "json", "console", or "auto" (console when stdout is a terminal)

    ui_dir: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent / "ui_static")
    # a browser session cookie lives this long
    session_ttl_seconds: int = 12 * 3600

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    def egress(self) -> EgressProxy:
        """The outbound proxies; raises ValueError for a proxy URL that cannot be used."""
        return EgressProxy(normalise_proxy_url(self.https_proxy) if self.https_proxy else None,
                           normalise_proxy_url(self.http_proxy) if self.http_proxy else None, self.no_proxy or "")

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


# setting name -> environment variable. Flags of `orcache serve` use the same names.
ENV_NAMES: dict[str, str] = {
    "host": "ORCACHE_HOST",
    "port": "ORCACHE_PORT",
    "upstream_url": "ORCACHE_UPSTREAM_URL",
    "workers": "ORCACHE_WORKERS",
    "data_dir": "ORCACHE_DATA_DIR",
    "redis_url": "REDIS_URL",
    "database_url": "DATABASE_URL",
    "openrouter_api_key": "OPENROUTER_API_KEY",
    "admin_token": "ORCACHE_ADMIN_TOKEN",
    "https_proxy": "HTTPS_PROXY",
    "http_proxy": "HTTP_PROXY",
    "no_proxy": "NO_PROXY",
}
# settings whose own name, in lower case, is read before the variable above (curl's order for proxies)
_LOWER_CASE_FIRST = frozenset({"https_proxy", "http_proxy", "no_proxy"})


def _env_name(name: str) -> str:
    return ENV_NAMES.get(name, "ORCACHE_" + name.upper())


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(name: str, raw: str, default: Any) -> Any:
    key = _env_name(name)
    try:
        if isinstance(default, bool):
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw).expanduser()
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a valid {type(default).__name__}") from None
    return raw


def load_settings(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build settings: defaults < environment < explicit overrides (command-line flags)."""
    env = os.environ if env is None else env
    defaults = Settings()
    values: dict[str, Any] = {}
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        raw = env.get(f.name) if f.name in _LOWER_CASE_FIRST else None
        if not raw:
            raw = env.get(_env_name(f.name))
        if raw is not None and raw != "":
            values[f.name] = _convert(f.name, raw, default if default is not None else "")
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    settings = replace(defaults, **values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not (0 < s.port < 65536):
        raise SettingsError(f"ORCACHE_PORT={s.port} must be between 1 and 65535")
    if s.workers < 1:
        raise SettingsError(f"ORCACHE_WORKERS={s.workers} must be at least 1")
    if not s.upstream_url.startswith(("http://", "https://")):
        raise SettingsError(f"ORCACHE_UPSTREAM_URL={s.upstream_url!r} must be an http(s) URL")
    for name in ("https_proxy", "http_proxy"):
        value = getattr(s, name)
        try:
            normalise_proxy_url(value) if value else None
        except ValueError as exc:
            raise SettingsError(f"{_env_name(name)}: {exc}") from None
    if s.max_body_bytes < 1024:
        raise SettingsError("ORCACHE_MAX_BODY_BYTES must be at least 1024")
    if s.upstream_max_response_bytes < 1024:
        raise SettingsError("ORCACHE_UPSTREAM_MAX_RESPONSE_BYTES must be at least 1024")
    if s.upstream_pool_size < 1:
        raise SettingsError(f"ORCACHE_UPSTREAM_POOL_SIZE={s.upstream_pool_size} must be at least 1")
    for name in ("http_referer", "x_title", "openrouter_api_key"):
        value = getattr(s, name)
        if value and ("\r" in value or "\n" in value):
            raise SettingsError(f"{_env_name(name)} must not contain a line break (it is sent as a header)")
    if s.embeddings not in {"local", "off", ""} and not s.embeddings.startswith(("http://", "https://")):
        raise SettingsError(f"ORCACHE_EMBEDDINGS={s.embeddings!r} must be local, off or an http(s) base URL")
    if s.fallback_retries < 0 or s.fallback_backoff_seconds < 0 or s.fallback_retry_after_cap_seconds < 0:
        raise SettingsError("ORCACHE_FALLBACK_RETRIES, ORCACHE_FALLBACK_BACKOFF_SECONDS and "
                            "ORCACHE_FALLBACK_RETRY_AFTER_CAP_SECONDS must not be negative")
    if s.fallback_budget_seconds <= 0:
        raise SettingsError(f"ORCACHE_FALLBACK_BUDGET_SECONDS={s.fallback_budget_seconds} must be positive")
    if s.cache_hot_entries < 0 or s.cache_hot_seconds < 0:
        raise SettingsError("ORCACHE_CACHE_HOT_ENTRIES and ORCACHE_CACHE_HOT_SECONDS must not be negative")
    if s.auto_cache_min_chars < 1:
        raise SettingsError(f"ORCACHE_AUTO_CACHE_MIN_CHARS={s.auto_cache_min_chars} must be at least 1")
    if s.log_format not in {"auto", "json", "console"}:
        raise SettingsError(f"ORCACHE_LOG_FORMAT={s.log_format!r} must be auto, json or console")
