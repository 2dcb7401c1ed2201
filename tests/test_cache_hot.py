"""The hot tier: bounded, short-lived, and cleared in every worker by a purge."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from cache.hot import HotEntries
from cache.response_cache import ResponseCache
from tests.test_cache_support import answer, chat_fp, make_settings_for, make_token

A = make_token("a" * 16)
B = make_token("b" * 16)


def _entry(size: int = 100) -> bytes:
    return b"x" * size


def test_bounded_in_number_and_size_least_recently_used_first() -> None:
    hot = HotEntries(max_entries=2, seconds=10, max_entry_bytes=1000)
    hot.put("a", _entry(), None, hot.generation)
    hot.put("b", _entry(), None, hot.generation)
    assert hot.get("a") is not None  # a is now the most recently used
    hot.put("c", _entry(), None, hot.generation)
    assert hot.get("b") is None and hot.get("a") is not None and hot.get("c") is not None
    hot.put("big", _entry(size=5000), None, hot.generation)
    assert hot.get("big") is None


def test_never_outlives_its_seconds_or_the_redis_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("cache.hot.time.monotonic", lambda: now[0])
    hot = HotEntries(max_entries=10, seconds=2.0)
    hot.put("long", _entry(), 600.0, hot.generation)
    hot.put("short", _entry(), 0.5, hot.generation)  # its Redis copy expires in half a second
    hot.put("gone", _entry(), -1.0, hot.generation)
    assert hot.get("gone") is None
    now[0] += 0.6
    assert hot.get("short") is None and hot.get("long") is not None
    now[0] += 1.5
    assert hot.get("long") is None


def test_a_value_read_before_a_clear_is_not_kept() -> None:
    hot = HotEntries(max_entries=10, seconds=2.0)
    seen = hot.generation
    hot.clear()  # a purge while the read was on its way
    hot.put("k", _entry(), None, seen)
    assert hot.get("k") is None
    assert not HotEntries(max_entries=0, seconds=2.0).enabled


async def _until(check, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_purge_in_one_worker_clears_the_hot_tier_of_the_others(redis: Redis, key_prefix: str) -> None:
    settings = make_settings_for(key_prefix, cache_hot_seconds=60.0)  # only the purge message can clear it in time
    one, two = ResponseCache(redis, settings), ResponseCache(redis, settings)
    try:
        for cache in (one, two):
            assert await cache.setup()
            cache.start_listening()
        await asyncio.sleep(0.2)  # both subscribed
        fp_a, fp_b = chat_fp("Purged?"), chat_fp("Kept?")
        assert await one.store(A, fp_a, None, answer("a"), 600)
        assert await one.store(B, fp_b, None, answer("b"), 600)
        for _ in range(2):  # the second lookup is served from worker two's hot tier
            assert (await two.lookup(A, fp_a)).status == "exact"
        assert two._hot.hits >= 1

        assert await one.purge_scope(A.cache_scope) == 1

        async def gone_in_two() -> bool:
            return (await two.lookup(A, fp_a)).status == "miss"

        assert await _until(gone_in_two)
        assert (await two.lookup(B, fp_b)).status == "exact"  # another token's entries stay
    finally:
        await one.close()
        await two.close()


async def test_an_entry_is_not_served_after_its_redis_copy_expired(redis: Redis, key_prefix: str) -> None:
    cache = ResponseCache(redis, make_settings_for(key_prefix, cache_hot_seconds=30.0))
    try:
        fp = chat_fp("Short-lived")
        assert await cache.store(A, fp, None, answer("soon gone"), 1)
        assert (await cache.lookup(A, fp)).status == "exact"
        await asyncio.sleep(1.1)
        assert (await cache.lookup(A, fp)).status == "miss"
    finally:
        await cache.close()


@pytest.mark.parametrize("response", [
    answer("Paris."),
    {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "é \"q\""},
                                               "finish_reason": "stop"}]},  # no id, no created, no usage
    {},
])
def test_a_ready_hit_renders_what_the_entry_renders(response: dict) -> None:
    import orjson

    from cache.entry import CachedEntry
    from cache.hot import ReadyHit
    from cache.replay import render_json

    entry = CachedEntry("e1", response, response.get("usage"), 0.5, time.time(), "token:a", "m")
    raw = entry.to_bytes()
    ready = ReadyHit(CachedEntry.from_bytes(raw), raw)
    fast, slow = orjson.loads(ready.render_json("req_1")), orjson.loads(render_json(entry, "req_1"))
    assert fast == slow and fast["id"] == "gen-cache-req_1" and abs(fast["created"] - time.time()) < 5
    assert ready.usage == response.get("usage") and ready.cost == 0.5 and len(ready) == len(raw)
    assert ready.model == response.get("model") and ready.entry() == CachedEntry.from_bytes(raw)
