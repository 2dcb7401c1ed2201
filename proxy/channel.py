"""Follow a Redis pub/sub channel whose messages all mean "forget what you cached" (tokens, hot entries)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress

import structlog
from redis.asyncio import Redis

__all__ = ["follow_channel"]

log = structlog.get_logger("orcache.channel")


async def follow_channel(redis: Redis, channel: str, forget: Callable[[], None],
                         running: Callable[[], bool] = lambda: True) -> None:
    """Call ``forget`` on every message, and after every (re)subscription: what was published while we
    were not listening is lost, so nothing cached meanwhile can be trusted. Runs until cancelled (or
    ``running()`` turns False); a lost connection is retried every half second."""
    while running():
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            forget()
            while running():
                if await pubsub.get_message(timeout=1.0) is not None:
                    forget()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis restarts: resubscribe
            forget()
            log.warning("channel_disconnected", channel=channel, error=str(exc))
            await asyncio.sleep(0.5)
        finally:
            # bounded: a connection stuck in a dead socket must not hold up shutdown
            with suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)
