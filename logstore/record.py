"""What the request path hands to the log writer: one small object per call, filled as the call goes.

The request path only fills these fields and puts the object on the writer's queue; turning it into a
database row (usage extraction, cost from pricing, hashing, previews) happens in the background writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["METADATA_HEADER", "TAG_HEADERS", "CallRecord"]

# request header -> column; documented in the README
TAG_HEADERS: dict[str, str] = {
    "X-Orcache-Project-Id": "project_id",
    "X-Orcache-Task-Id": "task_id",
    "X-Orcache-Agent-Type": "agent_type",
    "X-Orcache-Agent-Id": "agent_id",
    "X-Orcache-Run-Id": "run_id",
    "X-Orcache-Query-Id": "query_id",
    "X-Orcache-Iteration": "iteration",
}
# free-form JSON object, stored in the metadata JSONB column
METADATA_HEADER = "X-Orcache-Metadata"


@dataclass(slots=True)
class CallRecord:
    request_id: str
    created_at: datetime
    method: str
    path: str
    token_id: str | None = None
    token_name: str | None = None
    upstream_id: str | None = None
    status: int = 0
    error: str | None = None
    duration_ms: float = 0.0
    ttfb_ms: float | None = None
    streamed: bool = False
    model_requested: str | None = None
    # the parsed request JSON (dict) when the proxy parsed it; used for prompt hashes off the hot path
    request_json: Any = None
    # the upstream's (or replayed) response JSON for non-streamed calls, or the final assembled fields
    response_model: str | None = None
    provider: str | None = None
    generation_id: str | None = None
    usage: dict[str, Any] | None = None  # raw usage block as the upstream sent it (OpenAI or Anthropic)
    response_preview: str | None = None
    cache_status: str = "bypass"  # miss | exact | semantic | bypass | off
    similarity: float | None = None
    saved_cost: float | None = None  # for hits: the cost of the original call
    saved_usage: dict[str, Any] | None = None  # for hits: the usage of the original call
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] | None = None  # fallback attempts (routing), when any
    # routing summary (strategy, fallback used, models tried, final model, preset); stored with the attempts
    routing: dict[str, Any] | None = None
    endpoint_id: str | None = None  # the provider endpoint, when the upstream (or enrichment) says
    # the full assistant text, only when settings.log_store_bodies (response_preview may be the full text too:
    # the writer truncates it to log_preview_chars)
    response_body: str | None = None
