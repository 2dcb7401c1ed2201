"""What the proxy's own logs may contain: never secrets, not even in a traceback."""

from __future__ import annotations

import io

import structlog

from proxy.logs import configure_logging
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
        structlog.reset_defaults()
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
