"""Semantic cache with the local MiniLM model and the real RediSearch index: thresholds per token,
raise-only request threshold, the guard, filters (scope, model, parameters, context), batching."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

from cache import keys
from cache.embeddings import Embedder, LocalEmbedder
from cache.response_cache import ResponseCache
from proxy.tokens import Token
from tests.test_cache_support import answer, chat_fp, make_settings_for, make_token

FRANCE = "What is the capital of France?"
FRANCE_AGAIN = "Tell me the capital of France."  # MiniLM cosine ~0.95 to FRANCE; the guard allows it
GERMANY = "What is the capital of Germany?"  # ~0.66 to FRANCE: above 0.5, and a wrong answer

A = make_token("a" * 16, mode="semantic", threshold=0.5)


@pytest.fixture(scope="module")
async def embedder() -> AsyncIterator[LocalEmbedder]:
    e = LocalEmbedder()
    assert await e.wait_ready(180), "MiniLM did not load"
    yield e
    await e.close()


@pytest.fixture
async def cache(redis: Redis, key_prefix: str, embedder: LocalEmbedder) -> AsyncIterator[ResponseCache]:
    c = ResponseCache(redis, make_settings_for(key_prefix, embeddings="local"), embedder=embedder)
    assert await c.setup() and c.semantic_ready
    yield c
    await c.close()
    await redis.ft(keys.index_name(key_prefix)).dropindex(delete_documents=True)


async def seed(cache: ResponseCache, token: Token = A, question: str = FRANCE, content: str = "Paris.",
               **params: Any) -> None:
    fp = chat_fp(question, **params)
    lookup = await cache.lookup(token, fp)
    assert lookup.status == "miss"
    assert await cache.store(token, fp, lookup, answer(content), 600)


async def test_semantic_hit_above_the_token_threshold(cache: ResponseCache) -> None:
    await seed(cache)
    hit = await cache.lookup(A, chat_fp(FRANCE_AGAIN))
    assert hit.status == "semantic" and hit.entry is not None
    assert hit.entry.response["choices"][0]["message"]["content"] == "Paris."
    assert hit.similarity is not None and 0.9 < hit.similarity <= 1.0
    assert hit.matched_query == FRANCE
    assert cache.hits_semantic == 1


async def test_semantic_miss_below_the_token_threshold(cache: ResponseCache) -> None:
    await seed(cache)
    strict = make_token("a" * 16, mode="semantic", threshold=0.99)
    assert (await cache.lookup(strict, chat_fp(FRANCE_AGAIN))).status == "miss"
    # the same token with its threshold lowered again: the change applies to the very next lookup
    assert (await cache.lookup(A, chat_fp(FRANCE_AGAIN))).status == "semantic"


async def test_request_threshold_can_raise_but_never_lower(cache: ResponseCache) -> None:
    await seed(cache)
    assert (await cache.lookup(A, chat_fp(FRANCE_AGAIN), min_threshold=0.99)).status == "miss"
    assert (await cache.lookup(A, chat_fp(FRANCE_AGAIN), min_threshold=0.6)).status == "semantic"
    strict = make_token("a" * 16, mode="semantic", threshold=0.99)
    assert (await cache.lookup(strict, chat_fp(FRANCE_AGAIN), min_threshold=0.1)).status == "miss"


async def test_guard_refuses_a_near_miss_the_threshold_would_serve(cache: ResponseCache) -> None:
    await seed(cache)
    germany = await cache.lookup(A, chat_fp(GERMANY))  # similarity ~0.66 >= 0.5: only the guard stops Paris
    assert germany.status == "miss" and germany.entry is None
    assert cache.guard_refusals == 1
    assert germany.vector is not None  # kept for the store that follows, so the query is embedded once


async def test_a_refusing_guard_means_no_semantic_hits(redis: Redis, key_prefix: str,
                                                       embedder: LocalEmbedder) -> None:
    cache = ResponseCache(redis, make_settings_for(key_prefix), embedder=embedder, guard=lambda q, c: False)
    try:
        assert await cache.setup()
        await seed(cache)
        assert (await cache.lookup(A, chat_fp(FRANCE_AGAIN))).status == "miss"
        assert (await cache.lookup(A, chat_fp(FRANCE))).status == "exact"  # the guard is for semantic only
    finally:
        await cache.close()
        await redis.ft(keys.index_name(key_prefix)).dropindex(delete_documents=True)


@pytest.mark.parametrize("params", [
    {"model": "anthropic/claude-3.5-haiku"},
    {"temperature": 0.9},
    {"system": "Answer in French."},
], ids=["other-model", "other-params", "other-context"])
async def test_candidates_are_filtered_by_model_params_and_context(cache: ResponseCache,
                                                                   params: dict[str, Any]) -> None:
    await seed(cache)
    assert (await cache.lookup(A, chat_fp(FRANCE_AGAIN, **params))).status == "miss"
    assert (await cache.lookup(A, chat_fp(FRANCE_AGAIN))).status == "semantic"


async def test_semantic_entries_never_cross_tokens(cache: ResponseCache) -> None:
    await seed(cache, content="A's Paris")
    other = make_token("b" * 16, mode="semantic", threshold=0.5)
    assert (await cache.lookup(other, chat_fp(FRANCE_AGAIN))).status == "miss"
    assert (await cache.lookup(other, chat_fp(FRANCE))).status == "miss"

    team1 = make_token("c" * 16, mode="semantic", shared="team")
    team2 = make_token("d" * 16, mode="semantic", shared="team")
    await seed(cache, team1, content="team Paris")
    hit = await cache.lookup(team2, chat_fp(FRANCE_AGAIN))
    assert hit.status == "semantic" and hit.entry is not None
    assert hit.entry.response["choices"][0]["message"]["content"] == "team Paris"
    own = await cache.lookup(A, chat_fp(FRANCE_AGAIN))
    assert own.entry is not None and own.entry.response["choices"][0]["message"]["content"] == "A's Paris"


async def test_exact_mode_tokens_get_no_semantic_hits(cache: ResponseCache) -> None:
    exact = make_token("a" * 16, mode="exact")
    await seed(cache, exact)
    assert (await cache.lookup(exact, chat_fp(FRANCE_AGAIN))).status == "miss"
    assert (await cache.lookup(exact, chat_fp(FRANCE))).status == "exact"


async def test_store_reuses_the_lookup_vector(cache: ResponseCache, embedder: LocalEmbedder) -> None:
    fp = chat_fp("How do I reverse a list in Python?")
    lookup = await cache.lookup(A, fp)
    before = embedder.batches
    assert await cache.store(A, fp, lookup, answer("list.reverse()"), 600)
    assert embedder.batches == before
    hit = await cache.lookup(A, chat_fp("How can I reverse a Python list?"))
    assert hit.status == "semantic"


async def test_concurrent_embeddings_are_batched(embedder: LocalEmbedder) -> None:
    before = embedder.batches
    vectors = await asyncio.gather(*(embedder.embed(f"question number {i}") for i in range(8)))
    assert len({v for v in vectors}) == 8 and all(len(v) == 384 * 4 for v in vectors)
    assert embedder.batches - before <= 2


class NotReady(Embedder):
    name = "loading"
    dims = 384

    @property
    def ready(self) -> bool:
        return False


async def test_semantic_lookups_are_skipped_while_the_model_loads(redis: Redis, key_prefix: str) -> None:
    cache = ResponseCache(redis, make_settings_for(key_prefix), embedder=NotReady())
    try:
        assert await cache.setup() and not cache.semantic_ready
        fp = chat_fp(FRANCE)
        assert (await cache.lookup(A, fp)).status == "miss"
        assert cache.semantic_skipped == 1
        assert await cache.store(A, fp, None, answer("Paris."), 600)
        assert (await cache.lookup(A, fp)).status == "exact"
    finally:
        await cache.close()
        await redis.ft(keys.index_name(key_prefix)).dropindex(delete_documents=True)


async def test_int8_and_float32_vectors_never_meet_in_one_search(redis: Redis, key_prefix: str,
                                                                embedder: LocalEmbedder) -> None:
    assert embedder.name.endswith(":int8")  # the default
    full = LocalEmbedder(int8=False)
    assert await full.wait_ready(180)
    try:
        assert full.name == "local:all-MiniLM-L6-v2"
        vectors = {}
        for e in (embedder, full):
            raw = [np.frombuffer(await e.embed(t), dtype=np.float32) for t in (FRANCE, FRANCE_AGAIN, GERMANY)]
            vectors[e.name] = raw
            assert float(raw[0] @ raw[1]) > 0.85 > float(raw[0] @ raw[2]) > 0.5  # paraphrase vs near miss
        for a, b in zip(*vectors.values()):
            assert float(a @ b) > 0.95  # the int8 vector is close to, but not, the float32 one
        cache = ResponseCache(redis, make_settings_for(key_prefix), embedder=embedder)
        other = ResponseCache(redis, make_settings_for(key_prefix), embedder=full)
        try:
            assert await cache.setup() and await other.setup()
            await seed(cache)
            assert (await other.lookup(A, chat_fp(FRANCE_AGAIN))).status == "miss"  # stored by the int8 model
            assert (await cache.lookup(A, chat_fp(FRANCE_AGAIN))).status == "semantic"
        finally:
            await other.close()
            await cache.close()
            await redis.ft(keys.index_name(key_prefix)).dropindex(delete_documents=True)
    finally:
        await full.close()


class LearnsItsSize(Embedder):
    """A remote embedder before its first answer: its vector size (so the index's) is not known yet."""

    name = "remote:later"
    dims = 0

    @property
    def ready(self) -> bool:
        return self.dims > 0


async def test_an_index_that_could_not_be_made_at_start_is_made_in_the_background(
        redis: Redis, key_prefix: str) -> None:
    embedder = LearnsItsSize()
    cache = ResponseCache(redis, make_settings_for(key_prefix), embedder=embedder, setup_retry=0.05)
    try:
        assert not await cache.setup()
        cache.retry_setup_until_ready()
        await asyncio.sleep(0.2)
        assert not cache.semantic_ready  # still no size: still no index, and no error either
        with pytest.raises(Exception, match="(?i)no such index|unknown index"):
            await redis.ft(keys.index_name(key_prefix)).info()
        embedder.dims = 384
        for _ in range(250):  # no request, no admin call: the retry makes it
            if cache.semantic_ready:
                break
            await asyncio.sleep(0.02)
        assert cache.semantic_ready
        assert (await redis.ft(keys.index_name(key_prefix)).info())["index_name"] == keys.index_name(key_prefix)
    finally:
        await cache.close()
        await redis.ft(keys.index_name(key_prefix)).dropindex(delete_documents=True)


async def test_a_dropped_index_is_made_again_and_indexes_what_was_stored(
        redis: Redis, key_prefix: str, embedder: LocalEmbedder) -> None:
    cache = ResponseCache(redis, make_settings_for(key_prefix, embeddings="local"), embedder=embedder,
                          setup_retry=0.05)
    try:
        assert await cache.setup()
        await seed(cache)
        await redis.ft(keys.index_name(key_prefix)).dropindex(delete_documents=False)
        # the search finds no index: a miss, not an error for the caller
        assert (await cache.lookup(A, chat_fp(FRANCE_AGAIN))).status == "miss"
        info = None
        for _ in range(250):  # made again with no further request: poll Redis itself
            await asyncio.sleep(0.02)
            with suppress(Exception):
                info = await redis.ft(keys.index_name(key_prefix)).info()
                if int(info["num_docs"]) == 1:  # it scanned the answer stored before the drop
                    break
        assert info is not None and int(info["num_docs"]) == 1
        hit = await cache.lookup(A, chat_fp(FRANCE_AGAIN))
        assert hit.status == "semantic" and hit.matched_query == FRANCE
    finally:
        await cache.close()
        await redis.ft(keys.index_name(key_prefix)).dropindex(delete_documents=True)
