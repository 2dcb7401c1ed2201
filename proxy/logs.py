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
_SECRET_BYTES = re.compile(_SECRET.pattern.encode())


def _redact_rendered(_: Any, __: str, line: str | bytes) -> str | bytes:
    """Last step, on the rendered line, so messages and tracebacks alike lose any key pasted into them."""
    if isinstance(line, bytes):
        return _SECRET_BYTES.sub(rb"\1...", line) if b"sk-" in line else line
    return _SECRET.sub(r"\1...", line) if "sk-" in line else line


def configure_logging(level: str = "info", fmt: str = "auto", *, stream: Any = None) -> None:
    """Logs go to stdout for the server (12-factor) and to stderr for CLI commands (stdout is their output)."""
    stream = stream or sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        # tracebacks without local variables: locals hold settings, tokens and request bodies
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        processors += [tracebacks, structlog.processors.JSONRenderer(serializer=orjson.dumps), _redact_rendered]
        factory: Any = structlog.BytesLoggerFactory(getattr(stream, "buffer", stream))
    else:
        processors += [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
                       _redact_rendered]
        factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
