"""Exact cache against the real embedded Redis 8 + RediSearch: store, lookup, TTL, isolation, admin,
single flight, and a Redis that dies or hangs."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from cache import keys
from cache.canonical import fingerprint
from cache.response_cache import _LOOKUP_OR_LOCK, CacheUnavailable, ResponseCache
from proxy.embedded import EmbeddedRedis
from tests.test_cache_support import answer, chat_fp, make_settings_for, make_token

A = make_token("a" * 16)
B = make_token("b" * 16)


@pytest.fixture
async def cache(redis: Redis, key_prefix: str) -> AsyncIterator[ResponseCache]:
    c = ResponseCache(redis, make_settings_for(key_prefix))
    assert await c.setup()
    yield c
    await c.close()
    await redis.ft(keys.index_name(key_prefix)).dropindex(delete_documents=True)


async def test_exact_store_then_hit_with_usage_and_cost(cache: ResponseCache) -> None:
    fp = chat_fp("What is the capital of France?")
    first = await cache.lookup(A, fp)
    assert first.status == "miss" and first.entry is None
    assert await cache.store(A, fp, first, answer("Paris."), 600)
    hit = await cache.lookup(A, chat_fp("What is the capital of France?"))
    assert hit.status == "exact" and hit.entry is not None
    assert hit.entry.response["choices"][0]["message"]["content"] == "Paris."
    assert hit.entry.usage == answer("Paris.")["usage"] and hit.entry.cost == pytest.approx(0.00042)
    assert time.time() - hit.entry.stored_at < 60
    other_params = chat_fp("What is the capital of France?", temperature=0.5)
    assert (await cache.lookup(A, other_params)).status == "miss"
    assert (cache.hits_exact, cache.misses, cache.stores) == (1, 2, 1)


async def test_every_entry_has_a_ttl(cache: ResponseCache, redis: Redis, key_prefix: str) -> None:
    fp = chat_fp("ttl?")
    assert await cache.store(A, fp, None, answer("yes"), 120)
    exact = keys.exact_key(key_prefix, A.cache_scope, fp.exact_key)
    vec = keys.vector_key(key_prefix, A.cache_scope, fp.exact_key)
    for name in (exact, vec):
        ttl = await redis.pttl(name)
        assert 110_000 < ttl <= 120_000, name


@pytest.mark.parametrize("response", [
    answer("half", finish_reason=None),
    answer("broken", finish_reason="error"),
    {"error": {"message": "rate limited", "code": 429}},
    {"id": "x", "choices": []},
], ids=["no-finish", "finish-error", "error-body", "no-choices"])
async def test_only_complete_successful_answers_are_stored(cache: ResponseCache,
                                                            response: dict[str, Any]) -> None:
    fp = chat_fp("store me?")
    assert not await cache.store(A, fp, None, response, 600)
    assert (await cache.lookup(A, fp)).status == "miss"


async def test_cache_mode_off_and_zero_ttl_store_nothing(cache: ResponseCache) -> None:
    fp = chat_fp("off?")
    off = make_token("c" * 16, mode="off")
    assert not await cache.store(off, fp, None, answer("x"), 600)
    assert not await cache.store(A, fp, None, answer("x"), 0)
    assert (await cache.lookup(A, fp)).status == "miss"


async def test_tokens_never_see_each_others_entries(cache: ResponseCache) -> None:
    fp = chat_fp("Private question")
    assert await cache.store(A, fp, None, answer("A's answer"), 600)
    assert (await cache.lookup(A, fp)).status == "exact"
    assert (await cache.lookup(B, fp)).status == "miss"
    # a shared scope is shared only by the tokens that name it
    c = make_token("c" * 16, shared="team")
    d = make_token("d" * 16, shared="team")
    e = make_token("e" * 16, shared="other")
    assert await cache.store(c, fp, None, answer("team answer"), 600)
    hit = await cache.lookup(d, fp)
    assert hit.status == "exact" and hit.entry is not None
    assert hit.entry.response["choices"][0]["message"]["content"] == "team answer"
    assert (await cache.lookup(e, fp)).status == "miss"
    assert (await cache.lookup(B, fp)).status == "miss"
    a_hit = await cache.lookup(A, fp)
    assert a_hit.entry is not None
    assert a_hit.entry.response["choices"][0]["message"]["content"] == "A's answer"


async def test_stats_purge_and_delete(cache: ResponseCache, redis: Redis, key_prefix: str) -> None:
    for i in range(3):
        assert await cache.store(A, chat_fp(f"question {i}"), None, answer(f"answer {i}"), 600)
    assert await cache.store(B, chat_fp("question 0"), None, answer("b"), 600)

    stats = {row["scope"]: row for row in await cache.stats()}
    assert stats[A.cache_scope]["entries"] == 3 and stats[A.cache_scope]["token_id"] == A.id
    assert stats[B.cache_scope]["entries"] == 1
    assert stats[A.cache_scope]["bytes"] > stats[B.cache_scope]["bytes"] > 0

    hit = await cache.lookup(A, chat_fp("question 1"))
    assert hit.entry is not None
    assert await cache.delete_entry(hit.entry.id)
    assert not await cache.delete_entry(hit.entry.id)
    assert not await cache.delete_entry("not-an-id")
    assert (await cache.lookup(A, chat_fp("question 1"))).status == "miss"

    assert await cache.purge_scope(A.cache_scope) == 2
    assert (await cache.lookup(A, chat_fp("question 0"))).status == "miss"
    assert (await cache.lookup(B, chat_fp("question 0"))).status == "exact"
    assert [row["scope"] for row in await cache.stats()] == [B.cache_scope]
    assert not await redis.keys(f"{key_prefix}:cache:*:{A.cache_scope}:*")


async def test_single_flight_one_upstream_call_for_ten_identical_misses(cache: ResponseCache) -> None:
    fp = chat_fp("Expensive question")
    upstream_calls = 0
    leaders = 0

    async def request() -> str:
        nonlocal upstream_calls, leaders
        lookup = await cache.lookup(A, fp)
        if lookup.entry is not None:
            return lookup.entry.response["choices"][0]["message"]["content"]
        flight = cache.single_flight(fp.exact_key, scope=A.cache_scope)
        async with flight as leader:
            leaders += leader
            again = await cache.lookup(A, fp, exact_only=True)
            if again.entry is not None:
                return again.entry.response["choices"][0]["message"]["content"]
            upstream_calls += 1
            await asyncio.sleep(0.05)  # the upstream thinking
            response = answer("Deep answer.")
            # stored in the background, as the proxy does: the store releases the waiters once it is in Redis
            cache.schedule_store(A, fp, lookup, response, 600, flight=flight)
            return response["choices"][0]["message"]["content"]

    results = await asyncio.wait_for(asyncio.gather(*(request() for _ in range(10))), 5)
    assert results == ["Deep answer."] * 10
    assert upstream_calls == 1 and leaders == 1
    assert cache.flight_waits == 9


async def test_single_flight_waits_for_another_process(cache: ResponseCache, redis: Redis,
                                                        key_prefix: str) -> None:
    fp = chat_fp("Across workers")
    lock = keys.lock_key(key_prefix, fp.exact_key)
    await redis.set(lock, "other-worker", px=5000)
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, lambda: loop.create_task(redis.delete(lock)))
    started = time.monotonic()
    async with cache.single_flight(fp.exact_key) as leader:
        waited = time.monotonic() - started
    assert leader is False and 0.15 < waited < 2.0
    # a leader holds the Redis lock while in the block and releases it after
    async with cache.single_flight(fp.exact_key) as leader:
        assert leader is True and await redis.get(lock) is not None
    assert await redis.get(lock) is None


async def test_single_flight_is_per_scope_and_sees_an_answer_stored_meanwhile(cache: ResponseCache, redis: Redis,
                                                                             key_prefix: str) -> None:
    fp = chat_fp("Scoped flight")
    # another token's call of the same request holds its own lock: it must not hold this token up
    other_lock = keys.lock_key(key_prefix, f"{B.cache_scope}:{fp.exact_key}")
    await redis.set(other_lock, "worker-of-b", px=5000)
    started = time.monotonic()
    async with cache.single_flight(fp.exact_key, scope=A.cache_scope) as leader:
        assert leader is True
    assert time.monotonic() - started < 0.5
    # an answer stored between our lookup and the lock: no lock taken, look it up again
    assert await cache.store(A, fp, None, answer("meanwhile"), 600)
    async with cache.single_flight(fp.exact_key, scope=A.cache_scope) as leader:
        assert leader is False
        assert not await redis.exists(keys.lock_key(key_prefix, f"{A.cache_scope}:{fp.exact_key}"))
    assert (await cache.lookup(A, fp, exact_only=True)).status == "exact"


async def test_the_leaders_store_releases_its_lock(cache: ResponseCache, redis: Redis, key_prefix: str) -> None:
    fp = chat_fp("Store and release")
    lock = keys.lock_key(key_prefix, f"{A.cache_scope}:{fp.exact_key}")
    flight = cache.single_flight(fp.exact_key, scope=A.cache_scope)
    assert await flight.__aenter__() is True and await redis.get(lock) is not None
    assert await cache.store(A, fp, None, answer("stored"), 600, flight=flight)
    assert await redis.get(lock) is None  # in the store's own round trip
    await flight.__aexit__(None, None, None)
    assert (await cache.lookup(A, fp)).status == "exact"
    # an answer that is not stored leaves the lock to the flight, which releases it on the way out
    fp2 = chat_fp("Not storable")
    lock2 = keys.lock_key(key_prefix, f"{A.cache_scope}:{fp2.exact_key}")
    flight = cache.single_flight(fp2.exact_key, scope=A.cache_scope)
    assert await flight.__aenter__() is True
    assert not await cache.store(A, fp2, None, {"error": {"message": "no"}}, 600, flight=flight)
    assert await redis.get(lock2) is not None
    await flight.__aexit__(None, None, None)
    assert await redis.get(lock2) is None


async def test_a_lock_left_by_a_timed_out_call_is_cleared(cache: ResponseCache, redis: Redis,
                                                         key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SET of a call that timed out may still have reached Redis; its lock must not stall the key."""
    fp = chat_fp("Ghost lock")
    lock = keys.lock_key(key_prefix, f"{A.cache_scope}:{fp.exact_key}")
    commands = cache._commands
    real = commands.run_script
    monkeypatch.setattr("cache.response_cache._GHOST_RETRIES", (0.05, 0.2))

    async def lands_then_times_out(script: Any, keys: list[str], args: list[Any], *, timeout: float) -> Any:
        result = await real(script, keys, args, timeout=timeout)  # Redis takes the lock...
        if script is _LOOKUP_OR_LOCK:  # ...but the reply comes too late
            await asyncio.sleep(timeout)
            raise TimeoutError
        return result

    monkeypatch.setattr(commands, "run_script", lands_then_times_out)
    async with cache.single_flight(fp.exact_key, scope=A.cache_scope) as leader:
        assert leader is True  # Redis too slow: proceed without the lock
    assert await redis.exists(lock)
    await asyncio.sleep(0.2)
    assert not await redis.exists(lock)


async def test_a_request_cancelled_while_taking_the_lock_gives_it_back(cache: ResponseCache, redis: Redis,
                                                                    key_prefix: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fp = chat_fp("Client gone")
    lock = keys.lock_key(key_prefix, f"{A.cache_scope}:{fp.exact_key}")
    commands = cache._commands
    real = commands.run_script
    taken = asyncio.Event()

    async def slow_reply(script: Any, keys: list[str], args: list[Any], *, timeout: float) -> Any:
        result = await real(script, keys, args, timeout=timeout)
        if script is _LOOKUP_OR_LOCK:
            taken.set()
            await asyncio.sleep(10)
        return result

    monkeypatch.setattr(commands, "run_script", slow_reply)

    async def request() -> None:
        async with cache.single_flight(fp.exact_key, scope=A.cache_scope):
            await asyncio.sleep(10)

    task = asyncio.create_task(request())
    await taken.wait()
    assert await redis.exists(lock)
    task.cancel()  # aiohttp cancels the handler when the client disconnects
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert not await redis.exists(lock)


async def test_single_flight_wait_is_bounded(redis: Redis, key_prefix: str) -> None:
    cache = ResponseCache(redis, make_settings_for(key_prefix, single_flight_timeout=0.2))
    started = time.monotonic()

    async def slow_leader() -> None:
        async with cache.single_flight("k"):
            await asyncio.sleep(2)

    task = asyncio.create_task(slow_leader())
    await asyncio.sleep(0.02)
    async with cache.single_flight("k") as leader:
        assert leader is False
    assert time.monotonic() - started < 1.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "k" not in cache._flights  # a cancelled leader releases its key


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of our own, so this test can stop it."""
    directory = Path(tempfile.mkdtemp(prefix="orc-down-"))
    server = EmbeddedRedis(directory).start()
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


async def test_redis_down_or_hanging_means_miss_not_failure(private_redis: EmbeddedRedis,
                                                             key_prefix: str) -> None:
    client = Redis.from_url(private_redis.url)
    cache = ResponseCache(client, make_settings_for(key_prefix, cache_timeout_ms=50.0), retry_after=0.0)
    try:
        assert await cache.setup()
        fp = chat_fp("Still there?")
        assert await cache.store(A, fp, None, answer("yes"), 600)
        assert (await cache.lookup(A, fp)).status == "exact"

        assert private_redis.process is not None
        os.kill(private_redis.process.pid, signal.SIGSTOP)  # hanging: every call times out
        with capture_logs() as logs:
            # what this worker served a moment ago needs no Redis (the hot tier)...
            assert (await cache.lookup(A, fp)).status == "exact"
            started = time.monotonic()
            # ...anything else is a miss, quickly
            assert (await cache.lookup(A, chat_fp("Not asked before"))).status == "miss"
            assert time.monotonic() - started < 0.5
            assert await cache.store(A, chat_fp("new"), None, answer("n"), 600) is False
            async with cache.single_flight(fp.exact_key) as leader:
                assert leader is True
        assert any(e["event"] == "cache_unavailable" and e["log_level"] == "warning" for e in logs)
        os.kill(private_redis.process.pid, signal.SIGCONT)

        private_redis.stop()  # gone: connections refused
        errors = cache.errors
        started = time.monotonic()
        for _ in range(5):
            assert (await cache.lookup(A, chat_fp("Not asked before"))).status == "miss"
            assert await cache.store(A, fp, None, answer("x"), 600) is False
        assert time.monotonic() - started < 2.0
        assert cache.errors > errors
        with pytest.raises(CacheUnavailable):
            await cache.stats()
    finally:
        await cache.close()
        await client.aclose()


async def test_after_an_outage_the_cache_rests_then_recovers(private_redis: EmbeddedRedis,
                                                             key_prefix: str) -> None:
    client = Redis.from_url(private_redis.url)
    # the hot tier off: this is about Redis coming back
    cache = ResponseCache(client, make_settings_for(key_prefix, cache_timeout_ms=50.0, cache_hot_entries=0),
                          retry_after=0.3)
    try:
        assert await cache.setup()
        fp = chat_fp("Recover?")
        assert await cache.store(A, fp, None, answer("yes"), 600)
        assert private_redis.process is not None
        os.kill(private_redis.process.pid, signal.SIGSTOP)
        # one slow reply is not an outage: the next call tries Redis again
        assert (await cache.lookup(A, fp)).status == "miss"
        assert not cache._down()
        for _ in range(2):  # three timeouts in a row are
            assert (await cache.lookup(A, fp)).status == "miss"
        assert cache._down()
        errors = cache.errors
        os.kill(private_redis.process.pid, signal.SIGCONT)
        # within retry_after the cache does not even try: no new errors, instant misses
        assert (await cache.lookup(A, fp)).status == "miss" and cache.errors == errors
        await asyncio.sleep(0.35)
        assert (await cache.lookup(A, fp)).status == "exact"
    finally:
        await cache.close()
        await client.aclose()


def test_fingerprints_are_remembered_by_body(cache: ResponseCache) -> None:
    payload = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Remember me"}]}
    body = orjson.dumps(payload)
    first = cache.fingerprint("/chat/completions", payload, body)
    assert first == fingerprint("/chat/completions", payload)
    assert cache.fingerprint("/chat/completions", payload, body) is first  # not computed again
    assert cache.fingerprint("/completions", {"model": "m", "prompt": "Remember me"},
                             b'{"model":"m","prompt":"Remember me"}') != first
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 10_000}]}
    big_body = orjson.dumps(big)
    assert cache.fingerprint("/chat/completions", big, big_body) is not cache.fingerprint("/chat/completions", big,
                                                                                          big_body)


async def test_a_miss_to_be_stored_takes_the_lock_in_the_lookups_round_trip(cache: ResponseCache, redis: Redis,
                                                                          key_prefix: str) -> None:
    fp = chat_fp("One round trip")
    lock = keys.lock_key(key_prefix, f"{A.cache_scope}:{fp.exact_key}")
    flight = cache.single_flight(fp.exact_key, scope=A.cache_scope)
    assert (await cache.lookup(A, fp, flight=flight)).status == "miss"
    assert await redis.get(lock) is not None  # taken by the lookup itself
    started = time.monotonic()
    async with flight as leader:
        assert leader is True and time.monotonic() - started < 0.05
    assert await redis.get(lock) is None

    # a hit leaves the flight: no lock, nothing registered
    assert await cache.store(A, fp, None, answer("there"), 600)
    flight = cache.single_flight(fp.exact_key, scope=A.cache_scope)
    cache._hot.clear()
    assert (await cache.lookup(A, fp, flight=flight)).status == "exact"
    assert await redis.get(lock) is None and not cache._flights


async def test_the_lookup_sees_another_process_leading_and_waits_for_it(cache: ResponseCache, redis: Redis,
                                                                        key_prefix: str) -> None:
    fp = chat_fp("Someone else leads")
    lock = keys.lock_key(key_prefix, f"{A.cache_scope}:{fp.exact_key}")
    await redis.set(lock, "other-worker", px=5000)
    flight = cache.single_flight(fp.exact_key, scope=A.cache_scope)
    assert (await cache.lookup(A, fp, flight=flight)).status == "miss"
    loop = asyncio.get_running_loop()

    async def other_worker_answers() -> None:
        await cache.store(A, fp, None, answer("from the other worker"), 600)
        await redis.delete(lock)

    loop.call_later(0.2, lambda: loop.create_task(other_worker_answers()))
    started = time.monotonic()
    async with flight as leader:
        assert leader is False and 0.15 < time.monotonic() - started < 2.0
    assert (await cache.lookup(A, fp, exact_only=True)).status == "exact"
    assert not cache._flights


async def test_an_unreadable_stored_value_is_a_miss_that_leads(cache: ResponseCache, redis: Redis,
                                                               key_prefix: str) -> None:
    fp = chat_fp("Garbled")
    await redis.set(keys.exact_key(key_prefix, A.cache_scope, fp.exact_key), b"not an entry")
    flight = cache.single_flight(fp.exact_key, scope=A.cache_scope)
    assert (await cache.lookup(A, fp, flight=flight)).status == "miss"
    async with asyncio.timeout(1.0):  # never waiting on itself
        async with flight as leader:
            assert leader is True
    assert not cache._flights


class _SlowEmbedder:
    """Ready, but every embedding takes ten seconds: a semantic lookup is under way."""

    name = "slow"
    dims = 384
    ready = True

    async def embed(self, text: str) -> bytes:
        await asyncio.sleep(10)
        return b"\0" * (4 * self.dims)


async def test_a_request_cancelled_during_its_semantic_lookup_gives_the_flight_back(redis: Redis,
                                                                                  key_prefix: str) -> None:
    cache = ResponseCache(redis, make_settings_for(key_prefix), embedder=_SlowEmbedder())  # type: ignore[arg-type]
    try:
        assert await cache.setup()
        token = make_token("c" * 16, mode="semantic")
        fp = chat_fp("Cancelled while embedding")
        lock = keys.lock_key(key_prefix, f"{token.cache_scope}:{fp.exact_key}")
        flight = cache.single_flight(fp.exact_key, scope=token.cache_scope)
        task = asyncio.create_task(cache.lookup(token, fp, flight=flight))
        for _ in range(100):
            if await redis.exists(lock):
                break
            await asyncio.sleep(0.01)
        assert await redis.exists(lock)  # taken by the exact step; the semantic step is embedding now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)
        assert not await redis.exists(lock) and not cache._flights
    finally:
        await cache.close()
