"""Command-line parts for quotas, fallbacks, breakpoints (``orcache token create|update`` flags) and presets
(``orcache preset create|list|show|update|delete``). ``proxy.cli`` wires them in.

A quota, plan or fallback flag given as ``none`` removes the token's setting (the plan's default applies).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from proxy.presets import PresetStore, PresetValidationError
from proxy.token_options import PLANS

__all__ = ["add_preset_parser", "add_token_option_flags", "preset_command", "token_option_fields"]


class _Clear:
    """A flag given as 'none': remove the setting."""


CLEAR = _Clear()
_OPTION_DESTS = ("rpm", "tpm", "requests_per_month", "tokens_per_month", "cost_per_month", "plan", "fallback_models",
                 "fallback_budget_seconds", "auto_cache_breakpoints", "auto_cache_min_chars")


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        if raw.strip().lower() == "none":
            return CLEAR
        try:
            return convert(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or 'none', got {raw!r}") from None
    parse.__name__ = convert.__name__
    return parse


def add_token_option_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quotas and rate limits (0 = no limit; 'none' = the plan's default)")
    g.add_argument("--rpm", type=_or_none(int), help="requests per minute")
    g.add_argument("--tpm", type=_or_none(int), help="tokens per minute")
    g.add_argument("--requests-per-month", type=_or_none(int), help="requests per UTC calendar month")
    g.add_argument("--tokens-per-month", type=_or_none(int), help="tokens per UTC calendar month")
    g.add_argument("--cost-per-month", type=_or_none(float), help="USD per UTC calendar month")
    g.add_argument("--plan", type=_or_none(str.lower), help=f"default limits: {', '.join(PLANS)} (or none)")
    g = p.add_argument_group("fallbacks and provider prompt caching")
    g.add_argument("--fallback-models", type=_or_none(str),
                   help="comma-separated models tried after the requested one on 429/5xx/timeouts (or none)")
    g.add_argument("--fallback-budget", dest="fallback_budget_seconds", type=_or_none(float),
                   help="seconds all attempts of one request may take together")
    g.add_argument("--auto-cache-breakpoints", action=argparse.BooleanOptionalAction, default=None,
                   help="add a cache_control breakpoint to long system prompts (anthropic/*, google/gemini*)")
    g.add_argument("--auto-cache-min-chars", type=_or_none(int),
                   help="shortest system prompt (characters) that gets a breakpoint")


def token_option_fields(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _OPTION_DESTS:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = None if value is CLEAR else value
    return out


# --- presets -------------------------------------------------------------------------------------------

def add_preset_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    preset = sub.add_parser("preset", help="manage presets (\"model\": \"@preset/<slug>\")")
    psub = preset.add_subparsers(dest="action", required=True)
    create = psub.add_parser("create", help="create a preset")
    update = psub.add_parser("update", help="change a preset ('none' removes a field)")
    for p in (create, update):
        p.add_argument("slug")
        p.add_argument("--model", required=p is create, help="model id, e.g. anthropic/claude-sonnet-4")
        p.add_argument("--system-prompt", help="system prompt prepended when a request has none")
        p.add_argument("--system-prompt-file", type=Path, help="read the system prompt from a file")
        p.add_argument("--temperature", type=_or_none(float))
        p.add_argument("--top-p", dest="top_p", type=_or_none(float))
        p.add_argument("--max-tokens", type=_or_none(int))
        p.add_argument("--description")
        common(p)
    for name in ("show", "delete"):
        p = psub.add_parser(name, help=f"{name} a preset")
        p.add_argument("slug")
        common(p)
    common(psub.add_parser("list", help="list presets"))


def _preset_fields(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("model", "system_prompt", "temperature", "top_p", "max_tokens", "description"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = None if value is CLEAR or (isinstance(value, str) and value.lower() == "none"
                                                   and name != "model") else value
    path = getattr(args, "system_prompt_file", None)
    if path is not None:
        out["system_prompt"] = path.read_text()
    return out


def _print(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


async def preset_command(args: argparse.Namespace, settings: Any) -> int:
    redis = Redis.from_url(settings.redis_url, decode_responses=False)
    store = PresetStore(redis, settings.key_prefix)
    try:
        if args.action == "list":
            _print([p.public() for p in await store.list()])
            return 0
        if args.action == "create":
            _print((await store.create({"slug": args.slug, **_preset_fields(args)})).public())
            return 0
        if args.action == "delete":
            if not await store.delete(args.slug):
                print(f"no preset named {args.slug!r}", file=sys.stderr)
                return 1
            _print({"slug": args.slug, "deleted": True})
            return 0
        preset = await store.get(args.slug) if args.action == "show" else await store.update(args.slug,
                                                                                              _preset_fields(args))
        if preset is None:
            print(f"no preset named {args.slug!r}", file=sys.stderr)
            return 1
        _print(preset.public())
        return 0
    except PresetValidationError as exc:
        print(f"orcache: {exc}", file=sys.stderr)
        return 2
    finally:
        await redis.aclose()
