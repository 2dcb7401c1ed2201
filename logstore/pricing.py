"""Per-token prices from the upstream's ``GET /models``, for calls whose usage carries no ``cost``.

Loaded in the background at start-up and refreshed every ``pricing_refresh_seconds``; a failed load keeps
the previous table (or an empty one) and logs a warning. Nothing on the request path waits for it: the log
writer reads the table when it converts records to rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from logstore.usage import Usage
from proxy.keys import PRICING, SETTINGS, UPSTREAM

__all__ = ["ModelPrice", "PricingTable", "pricing_ctx"]

log = structlog.get_logger(__name__)


def _price(value: Any) -> float:
    """USD per unit; OpenRouter sends strings, and "-1" for variable-priced routers (treated as unknown)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) and f > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ModelPrice:
    prompt: float = 0.0
    completion: float = 0.0
    input_cache_read: float = 0.0
    input_cache_write: float = 0.0
    internal_reasoning: float = 0.0
    request: float = 0.0
    canonical_slug: str | None = None

    @classmethod
    def from_model(cls, model: dict[str, Any]) -> ModelPrice:
        p = model.get("pricing") if isinstance(model.get("pricing"), dict) else {}
        return cls(
            prompt=_price(p.get("prompt")),
            completion=_price(p.get("completion")),
            input_cache_read=_price(p.get("input_cache_read")),
            input_cache_write=_price(p.get("input_cache_write")),
            internal_reasoning=_price(p.get("internal_reasoning")),
            request=_price(p.get("request")),
            canonical_slug=model.get("canonical_slug") or None,
        )

    def cost(self, usage: Usage) -> float:
        # Cache reads/writes fall back to the prompt price when the model lists none.
        read_price = self.input_cache_read or self.prompt
        write_price = self.input_cache_write or self.prompt
        total = (usage.uncached_prompt_tokens * self.prompt
                 + usage.cache_read_tokens * read_price
                 + usage.cache_creation_tokens * write_price)
        reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
        if self.internal_reasoning and reasoning:
            # completion_tokens include the reasoning tokens; bill those at their own price
            total += (usage.completion_tokens - reasoning) * self.completion + reasoning * self.internal_reasoning
        else:
            total += usage.completion_tokens * self.completion
        return total + self.request


class PricingTable:
    """Model id (or canonical slug) -> prices. Replaced wholesale on refresh, so readers never see half."""

    def __init__(self, models: list[dict[str, Any]] | None = None) -> None:
        self._prices: dict[str, ModelPrice] = {}
        self.loaded_at: float | None = None
        if models is not None:
            self.load(models)

    def __len__(self) -> int:
        return len(self._prices)

    def load(self, models: list[dict[str, Any]]) -> None:
        prices: dict[str, ModelPrice] = {}
        for model in models:
            if not isinstance(model, dict) or not isinstance(model.get("id"), str):
                continue
            price = ModelPrice.from_model(model)
            prices[model["id"]] = price
            if price.canonical_slug:
                prices.setdefault(price.canonical_slug, price)
        self._prices = prices
        self.loaded_at = time.time()

    def get(self, model: str | None) -> ModelPrice | None:
        if not model:
            return None
        price = self._prices.get(model)
        if price is None and ":" in model:  # "vendor/model:variant" priced like the base when not listed
            price = self._prices.get(model.split(":", 1)[0])
        return price

    def permaslug(self, model: str | None) -> str | None:
        price = self.get(model)
        return price.canonical_slug if price else None

    def cost(self, model: str | None, usage: Usage) -> float | None:
        """USD for this usage, or None when the model has no known price."""
        price = self.get(model)
        return None if price is None else price.cost(usage)

    async def refresh(self, session: aiohttp.ClientSession, upstream_url: str, api_key: str | None = None,
                      *, timeout: float = 30.0, proxy: str | None = None) -> int:
        """Fetch ``{upstream_url}/models`` and replace the table; returns the number of models."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = upstream_url.rstrip("/") + "/models"
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout),
                               proxy=proxy) as resp:
            resp.raise_for_status()
            body = await resp.json(content_type=None)
        models = body.get("data") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise TypeError("models response has no 'data' list")
        self.load(models)
        return len(models)


async def _refresh_forever(table: PricingTable, session: aiohttp.ClientSession, upstream_url: str,
                           api_key: str | None, every: float, proxy: str | None) -> None:
    retry = 5.0
    while True:
        try:
            count = await table.refresh(session, upstream_url, api_key, proxy=proxy)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old table
            log.warning("pricing_load_failed", error=repr(exc), url=upstream_url, retry_in=retry)
            await asyncio.sleep(retry)
            retry = min(retry * 2, max(every, 5.0))
            continue
        log.info("pricing_loaded", models=count)
        retry = 5.0
        await asyncio.sleep(every)


async def pricing_ctx(app: web.Application) -> AsyncIterator[None]:
    """Owns the pricing table and its refresh task (needs the shared upstream session, if any)."""
    settings = app[SETTINGS]
    table = PricingTable()
    app[PRICING] = table
    session = app.get(UPSTREAM)
    task = None
    if session is None:
        log.warning("pricing_disabled", reason="no upstream session")
    else:
        task = asyncio.create_task(_refresh_forever(
            table, session, settings.upstream_url, settings.openrouter_api_key,
            max(settings.pricing_refresh_seconds, 1.0), settings.egress().for_url(settings.upstream_url)),
            name="pricing-refresh")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
