"""What the proxy's own logs may contain: never secrets, not even in a traceback."""

from __future__ import annotations

import asyncio
import io

import orjson
import structlog

from proxy.logs import FLUSH_SECONDS, LineSink, configure_logging, log_request, reset_logging
from proxy.settings import load_settings


def _log_a_failure(fmt: str) -> str:
    stream = io.StringIO() if fmt == "console" else io.TextIOWrapper(io.BytesIO(), write_through=True)
    configure_logging("info", fmt, stream=stream)
    try:
        settings = load_settings({"openrouter_api_key": "sk-or-v1-very-secret", "admin_token": "adm-secret-123"},
                                 env={})
        upstream_key = settings.openrouter_api_key  # noqa: F841 - a local that a traceback could show
        raise RuntimeError("boom while calling with sk-orc-0123456789abcdef-secretsecretsecret")
    except RuntimeError:
        structlog.get_logger("test").exception("unhandled_error")
    finally:
        reset_logging()
    if fmt == "console":
        return stream.getvalue()
    stream.seek(0)
    return stream.buffer.getvalue().decode()


def test_tracebacks_carry_no_locals_and_secrets_are_redacted():
    for fmt in ("json", "console"):
        out = _log_a_failure(fmt)
        assert "RuntimeError" in out and "unhandled_error" in out
        for secret in ("sk-or-v1-very-secret", "adm-secret-123", "secretsecretsecret"):
            assert secret not in out, (fmt, secret)


def test_settings_repr_hides_secrets():
    settings = load_settings({"openrouter_api_key": "sk-or-v1-very-secret", "admin_token": "adm-secret-123"},
                             env={})
    assert "very-secret" not in repr(settings) and "adm-secret" not in repr(settings)


async def test_request_lines_are_json_in_order_with_other_events_and_the_request_id() -> None:
    """The request line skips structlog's chain but not its shape, its order, or redaction."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, write_through=True)
    configure_logging("info", "json", stream=stream)
    try:
        structlog.contextvars.bind_contextvars(request_id="req_abc")
        structlog.get_logger("test").warning("before", detail="sk-orc-0123456789abcdef-secretsecret")
        log_request("POST", "/v1/chat/completions", 200, 1.25, "miss", "0123456789abcdef")
        structlog.get_logger("test").info("after")
        await asyncio.sleep(0)
        assert raw.getvalue() == b""  # written together a moment later...
        await asyncio.sleep(FLUSH_SECONDS * 2)
        lines = [orjson.loads(line) for line in raw.getvalue().splitlines()]
    finally:
        structlog.contextvars.clear_contextvars()
        reset_logging()
    assert [line["event"] for line in lines] == ["before", "request", "after"]  # ...in order
    request = lines[1]
    assert request["request_id"] == "req_abc" and request["level"] == "info" and request["status"] == 200
    assert request["path"] == "/v1/chat/completions" and request["cache"] == "miss"
    assert request["timestamp"].endswith("Z")
    assert "secretsecret" not in raw.getvalue().decode()


def test_the_sink_writes_whole_lines_at_most_a_pipe_buffer_at_a_time() -> None:
    """Several workers share stdout: a pipe write of at most PIPE_BUF bytes is atomic, so lines never mix."""

    class Recorder(io.RawIOBase):
        def __init__(self) -> None:
            self.writes: list[bytes] = []

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:  # type: ignore[override]
            self.writes.append(bytes(data))
            return len(data)

    out = Recorder()
    sink = LineSink(out)  # no running loop here: written at once...
    sink.write(b"short\n")
    assert out.writes == [b"short\n"]
    out.writes.clear()
    sink._pending = [b"%d %s\n" % (i, b"x" * 300) for i in range(40)] + [b"y" * 5000 + b"\n"]  # ...or in bulk
    sink.flush()
    assert all(len(w) <= 4096 or w.count(b"\n") == 1 for w in out.writes) and len(out.writes) < 10
    assert all(w.endswith(b"\n") for w in out.writes)
    assert b"".join(out.writes).count(b"\n") == 41
