"""Provider prompt-cache savings, and a token's totals over a span of days (both from the ``usage_daily`` rollup).

Two kinds of cache save money, and they are reported apart:

* the proxy's own response cache: a hit makes no upstream call; its ``saved_cost`` is what the original call
  cost (``cache_stats`` in ``logstore.queries``);
* the provider's prompt cache (Anthropic, Gemini, OpenAI, DeepSeek ...): a call still happens, but prompt
  tokens read from the provider's cache are billed at the cheaper cache-read price. Savings are
  ``cache_read_tokens x (prompt price - cache-read price)`` per model, from the pricing table; writing to the
  cache can cost more than a plain prompt token (Anthropic: 1.25x), shown as ``write_premium``, and
  ``net_savings`` is the difference. Models without a known price count their tokens but no money.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from logstore.pricing import PricingTable

__all__ = ["provider_cache_savings", "token_totals"]

_HITS = "('exact', 'semantic')"


def _where(start: date | None, end: date | None, token_id: str | None) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for template, value in (("day >= ", start), ("day <= ", end), ("token_id = ", token_id)):
        if value is not None:
            args.append(value)
            clauses.append(f"{template}${len(args)}")
    return " AND ".join(clauses) or "TRUE", args


async def provider_cache_savings(pool: asyncpg.Pool, start: date | None, end: date | None, token_id: str | None,
                                 pricing: PricingTable | None) -> dict[str, Any]:
    """Tokens read from and written to provider prompt caches, and what that saved, over inclusive UTC days."""
    where, args = _where(start, end, token_id)
    rows = await pool.fetch(
        f"SELECT model, coalesce(sum(cache_read_tokens), 0)::int8 AS cache_read_tokens, "
        f"coalesce(sum(cache_creation_tokens), 0)::int8 AS cache_write_tokens FROM usage_daily "
        f"WHERE {where} AND cache_status NOT IN {_HITS} AND (cache_read_tokens > 0 OR cache_creation_tokens > 0) "
        f"GROUP BY model ORDER BY cache_read_tokens DESC, model LIMIT 500", *args)
    by_model = []
    totals = {"cache_read_tokens": 0, "cache_write_tokens": 0, "savings": 0.0, "write_premium": 0.0}
    for r in rows:
        model, reads, writes = r["model"] or None, r["cache_read_tokens"], r["cache_write_tokens"]
        price = pricing.get(model) if pricing is not None else None
        savings = premium = None
        if price is not None:
            read_price = price.input_cache_read or price.prompt
            write_price = price.input_cache_write or price.prompt
            savings = reads * max(price.prompt - read_price, 0.0)
            premium = writes * max(write_price - price.prompt, 0.0)
            totals["savings"] += savings
            totals["write_premium"] += premium
        totals["cache_read_tokens"] += reads
        totals["cache_write_tokens"] += writes
        by_model.append({"model": model, "cache_read_tokens": reads, "cache_write_tokens": writes,
                         "savings": savings, "write_premium": premium, "priced": price is not None})
    return {**totals, "net_savings": totals["savings"] - totals["write_premium"], "by_model": by_model}


async def token_totals(pool: asyncpg.Pool, token_id: str, start: date, end: date) -> dict[str, Any]:
    """Requests, tokens, cost and response-cache savings of one token over inclusive UTC days."""
    row = await pool.fetchrow(
        f"""SELECT coalesce(sum(requests), 0)::int8 AS requests,
            coalesce(sum(requests) FILTER (WHERE cache_status NOT IN {_HITS}), 0)::int8 AS upstream_requests,
            coalesce(sum(total_tokens), 0)::int8 AS tokens,
            coalesce(sum(cost), 0)::float8 AS cost,
            coalesce(sum(saved_cost), 0)::float8 AS saved_cost,
            coalesce(sum(requests) FILTER (WHERE cache_status IN {_HITS}), 0)::int8 AS cache_hits
        FROM usage_daily WHERE token_id = $1 AND day >= $2 AND day <= $3""", token_id, start, end)
    return dict(row.items())
