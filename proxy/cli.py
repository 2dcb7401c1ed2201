"""The `orcache` command: serve, and manage tokens and the cache without the server running."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from proxy.cli_extras import add_preset_parser, add_token_option_flags, preset_command, token_option_fields
from proxy.settings import ENV_NAMES, SettingsError, load_settings
from proxy.tokens import CACHE_HELP, CACHE_MODES, TokenStore, TokenValidationError

__all__ = ["main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help=f"state directory (env {ENV_NAMES['data_dir']}, default .orcache)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orcache", description="OpenAI-compatible caching proxy for OpenRouter")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy (starts embedded Redis/Postgres unless URLs are set)")
    serve.add_argument("--host", help="bind address (env ORCACHE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env ORCACHE_PORT, default 8080)")
    serve.add_argument("--upstream", dest="upstream_url",
                       help="upstream OpenAI-compatible base URL (env ORCACHE_UPSTREAM_URL, default OpenRouter)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (env ORCACHE_WORKERS)")
    _common(serve)

    token = sub.add_parser("token", help="manage proxy tokens", description=CACHE_HELP)
    tsub = token.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="issue a new token (its secret is printed once)", description=CACHE_HELP)
    create.add_argument("--name", required=True)
    for p in (create, update := tsub.add_parser("update", help="change a token's name or cache settings",
                                                 description=CACHE_HELP)):
        p.add_argument("--cache-mode", choices=CACHE_MODES,
                       help="off: pass-through; exact: identical requests only, no threshold needed; "
                            "semantic: also similar questions above the threshold")
        p.add_argument("--threshold", type=float, dest="similarity_threshold",
                       help="semantic similarity threshold 0-1 (0.7 = 70%%; default 0.5)")
        p.add_argument("--ttl", type=int, dest="cache_ttl_seconds", help="cache entry lifetime in seconds")
        p.add_argument("--shared-scope", dest="cache_shared_scope",
                       help="share cache entries with other tokens naming the same scope")
        add_token_option_flags(p)  # quotas, plan, fallbacks, breakpoints
        _common(p)
    update.add_argument("id")
    update.add_argument("--name")
    for name in ("show", "revoke"):
        p = tsub.add_parser(name, help=f"{name} a token")
        p.add_argument("id")
        _common(p)
    _common(tsub.add_parser("list", help="list tokens"))

    cache = sub.add_parser("cache", help="inspect or purge the response cache")
    csub = cache.add_subparsers(dest="action", required=True)
    _common(csub.add_parser("stats", help="entries and bytes per cache scope"))
    purge = csub.add_parser("purge", help="delete a token's cached answers, or one entry")
    group = purge.add_mutually_exclusive_group(required=True)
    group.add_argument("--token", dest="token_id")
    group.add_argument("--entry", dest="entry_id")
    _common(purge)
    add_preset_parser(sub, _common)
    return parser


def _print(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


async def _with_redis(settings, fn):
    redis = Redis.from_url(settings.redis_url, decode_responses=False)
    try:
        return await fn(redis)
    finally:
        await redis.aclose()


async def _token_command(args: argparse.Namespace, settings) -> int:
    async def run(redis: Redis) -> int:
        store = TokenStore(redis, settings.key_prefix)
        fields = {k: getattr(args, k) for k in ("name", "cache_mode", "similarity_threshold", "cache_ttl_seconds",
                                                "cache_shared_scope") if getattr(args, k, None) is not None}
        fields.update(token_option_fields(args))
        if args.action == "create":
            token, secret = await store.create(fields)
            _print({**token.public(), "token": secret})
            print(f"\nStore this token now: it is shown only once.\n{CACHE_HELP}", file=sys.stderr)
            return 0
        if args.action == "list":
            _print([t.public() for t in await store.list()])
            return 0
        if args.action == "show":
            token = await store.get(args.id)
        elif args.action == "update":
            token = await store.update(args.id, fields)
        else:
            token = await store.revoke(args.id)
        if token is None:
            print(f"no token with id {args.id!r}", file=sys.stderr)
            return 1
        _print(token.public())
        return 0

    return await _with_redis(settings, run)


async def _cache_command(args: argparse.Namespace, settings) -> int:
    from cache.response_cache import ResponseCache

    async def run(redis: Redis) -> int:
        cache = ResponseCache(redis, settings, embedder=None)
        if args.action == "stats":
            _print(await cache.stats())
        elif args.token_id:
            store = TokenStore(redis, settings.key_prefix)
            token = await store.get(args.token_id)
            scope = token.cache_scope if token else f"token:{args.token_id}"
            _print({"deleted": await cache.purge_scope(scope)})
        else:
            _print({"deleted": int(await cache.delete_entry(args.entry_id))})
        return 0

    return await _with_redis(settings, run)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items()
                 if k in {"host", "port", "upstream_url", "workers", "data_dir"} and v is not None}
    try:
        settings = load_settings(overrides)
    except SettingsError as exc:
        print(f"orcache: {exc}", file=sys.stderr)
        return 2
    from proxy.logs import configure_logging
    from proxy.server import backing_services, serve

    if args.command == "serve":
        return serve(settings)
    configure_logging("warning", settings.log_format, stream=sys.stderr)
    with backing_services(settings, need_postgres=False) as resolved:
        try:
            if args.command == "token":
                return asyncio.run(_token_command(args, resolved))
            if args.command == "preset":
                return asyncio.run(preset_command(args, resolved))
            return asyncio.run(_cache_command(args, resolved))
        except TokenValidationError as exc:
            print(f"orcache: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
