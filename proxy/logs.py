"""structlog configuration: JSON lines in production, readable output in a terminal."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson
import structlog

__all__ = ["configure_logging"]

_SECRET = re.compile(r"(sk-(?:orc|or)-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]+")


def _redact_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Belt and braces: a key pasted into an error message is cut to its first characters."""
    for k, v in event.items():
        if type(v) is str and "sk-" in v:
            event[k] = _SECRET.sub(r"\1…", v)
    return event


def configure_logging(level: str = "info", fmt: str = "auto", *, stream: Any = None) -> None:
    """Logs go to stdout for the server (12-factor) and to stderr for CLI commands (stdout is their output)."""
    stream = stream or sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    if as_json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        factory: Any = structlog.BytesLoggerFactory(getattr(stream, "buffer", stream))
    else:
        processors += [structlog.dev.ConsoleRenderer()]
        factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
