"""The response cache: exact entries in Redis, semantic candidates from a RediSearch vector index.

Lookup order: the worker's hot tier (``cache.hot``), one GET of the exact key (through the lean client,
``proxy.resp``); then, for ``cache_mode = semantic`` with the embedder ready, a
KNN query filtered inside RediSearch by scope, model, parameters and conversation context. A
candidate is served only when its cosine similarity reaches the token's threshold (raised, never
lowered, by ``min_threshold``) and the semantic guard accepts the pair of questions.

The cache never fails a request: every Redis call is bounded by ``settings.cache_timeout_ms``; a call
over it, or a connection error, logs ``cache_unavailable``, counts ``errors`` and answers a miss (or
skips the store). A lost connection, or ``_TRIP_AFTER`` timeouts in a row, then leave Redis alone for
``retry_after`` seconds: one slow reply on a busy event loop is not an outage, and resting the cache
turns every request into an upstream call. Key layout: see ``cache.keys``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import structlog
from aiohttp import web
from redis.asyncio import Redis
from redis.commands.search import reducers
from redis.commands.search.aggregation import AggregateRequest
from redis.commands.search.query import Query
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redisvl.index import AsyncSearchIndex
from redisvl.schema import IndexSchema

from cache import keys
from cache.canonical import Fingerprint, fingerprint
from cache.embeddings import EMBEDDER, LOCAL_DIMS, Embedder, make_embedder
from cache.entry import CachedEntry, is_storable
from cache.guard import guard_allows
from cache.hot import HotEntries, ReadyHit
from proxy.channel import follow_channel
from proxy.keys import REDIS, REDIS_COMMANDS, RESPONSE_CACHE, SETTINGS, UPSTREAM
from proxy.resp import Commands, Script, commands_for
from proxy.settings import Settings
from proxy.tokens import Token

__all__ = ["CacheLookup", "CacheUnavailable", "CachedEntry", "ResponseCache", "build_schema", "cache_ctx"]

log = structlog.get_logger("orcache.cache")

CACHING_MODES = ("exact", "semantic")
_ADMIN_TIMEOUT = 10.0  # admin operations (purge, stats) may touch many keys
_SETUP_TIMEOUT = 5.0
_ENTRY_ID = re.compile(r"[0-9a-f]{32}")
_FINGERPRINT_MEMO_SIZE = 1024  # requests whose fingerprints are remembered, by body...
_FINGERPRINT_MEMO_BODY = 8192  # ...of at most this many bytes
_TRIP_AFTER = 3  # timeouts in a row that rest the cache (a refused or lost connection rests it at once)
# when to try removing a lock a SET may have taken after its caller stopped waiting (a timeout, a cancelled
# request): at once (the lean client's one connection keeps commands in order), then again while Redis is away
_GHOST_RETRIES = (0.0, 0.2, 1.0, 5.0)
# the exact lookup of a miss that will be stored: the answer, or else the single-flight lock taken (1) or held
# by another process (0), in one round trip
_LOOKUP_OR_LOCK = Script("""
local v = redis.call('get', KEYS[1])
if v then return v end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
""")
# the entry, its index row (a row left from an earlier store must not keep an old vector) and, when the
# storing request led the single flight, its lock
_STORE = Script("""
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('del', KEYS[2])
redis.call('hset', KEYS[2], unpack(ARGV, 4))
redis.call('pexpire', KEYS[2], ARGV[2])
if ARGV[3] ~= '' and redis.call('get', KEYS[3]) == ARGV[3] then redis.call('del', KEYS[3]) end
return 1
""")
_RELEASE = Script("""
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
""")


class Failed:
    """The result of a cache call that failed (already logged and counted)."""


FAILED = Failed()
T = TypeVar("T")


class CacheUnavailable(RuntimeError):
    """An admin operation could not reach the cache (lookups and stores never raise this)."""


@dataclass(slots=True)
class CacheLookup:
    status: str  # "exact" | "semantic" | "miss"
    found: CachedEntry | None = None
    similarity: float | None = None  # cosine similarity of a semantic hit
    vector: bytes | None = None  # the query's embedding, reused by store()
    scope: str = ""
    matched_query: str | None = None  # the cached question a semantic hit answered
    ready: ReadyHit | None = None  # an exact hit from the hot tier: parsed into ``entry`` only when asked

    @property
    def entry(self) -> CachedEntry | None:
        if self.found is None and self.ready is not None:
            self.found = self.ready.entry()
        return self.found

    @property
    def hit(self) -> bool:
        return self.found is not None or self.ready is not None


def build_schema(prefix: str, dims: int) -> IndexSchema:
    """Only what a search filters on is indexed: the tags, and the vector. The question, the size and the
    time are kept in the same hash but left out of the index (a search returns them, and the stats sum
    the size, all from the hash): indexing them cost Redis 40% more CPU per stored answer."""
    return IndexSchema.from_dict({
        "index": {"name": keys.index_name(prefix), "prefix": keys.vector_prefix(prefix),
                  "storage_type": "hash"},
        "fields": [
            {"name": "entry_id", "type": "tag"},
            {"name": "scope", "type": "tag"},
            {"name": "model", "type": "tag"},
            {"name": "params_hash", "type": "tag"},
            {"name": "context_hash", "type": "tag"},
            {"name": "embedder", "type": "tag"},
            {"name": "embedding", "type": "vector",
             "attrs": {"dims": dims, "algorithm": "hnsw", "distance_metric": "cosine",
                       "datatype": "float32"}},
        ],
    })


def _unavailable(exc: BaseException | None) -> bool:
    """A timeout or a lost connection (possibly wrapped by redisvl), as opposed to a bug or a bad reply."""
    while exc is not None:
        if isinstance(exc, (TimeoutError, RedisTimeoutError, RedisConnectionError, OSError)):
            return True
        exc = exc.__cause__
    return False


def _timed_out(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, (TimeoutError, RedisTimeoutError)):
            return True
        exc = exc.__cause__
    return False


def _as_bytes(vector: list[float] | bytes) -> bytes:
    return vector if isinstance(vector, bytes) else np.asarray(vector, dtype=np.float32).tobytes()


class ResponseCache:
    def __init__(self, redis: Redis, settings: Settings, embedder: Embedder | None = None, *,
                 guard: Callable[[str, str], bool] | None = None, retry_after: float = 1.0,
                 candidates: int = 3, embed_timeout: float = 2.0, commands: Commands | None = None,
                 setup_retry: float = 5.0) -> None:
        self._redis = redis  # the index, admin work
        # lookups, locks and stores: the lean client (``commands_for``), shared with auth when the app gives it
        self._owns_commands = commands is None
        self._commands = commands or commands_for(redis)
        self._prefix = settings.key_prefix
        self._enabled = settings.cache_enabled
        self._timeout = settings.cache_timeout_ms / 1000.0
        self._flight_timeout = settings.single_flight_timeout
        self._flight_ttl_ms = max(1, int(self._flight_timeout * 1000))
        self._embedder = embedder
        self._guard = guard or guard_allows
        self._retry_after = retry_after
        self._candidates = candidates
        self._embed_timeout = embed_timeout
        self._index: AsyncSearchIndex | None = None
        self._index_ready = False
        self._semantic_ok = False  # index dims match the embedder's
        self._next_setup = 0.0
        self._setup_retry = setup_retry
        self._setup_lock = asyncio.Lock()
        self._down_until = 0.0
        self._timeouts_in_row = 0
        self._next_warning = 0.0
        self._suppressed = 0
        self._hot = HotEntries(max_entries=settings.cache_hot_entries, seconds=settings.cache_hot_seconds)
        self._listener: asyncio.Task[None] | None = None
        self._index_retry: asyncio.Task[None] | None = None
        self._fingerprints: dict[tuple[str, bytes], Fingerprint | None] = {}
        self._flights: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # counters, read by the metrics endpoint
        self.hits_exact = 0
        self.hits_semantic = 0
        self.misses = 0
        self.stores = 0
        self.errors = 0
        self.guard_refusals = 0
        self.semantic_skipped = 0  # semantic lookups skipped: embedder loading or failing
        self.flight_waits = 0

    # ---- set-up -------------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    @property
    def semantic_ready(self) -> bool:
        return self._embedder is not None and self._embedder.ready and self._index_ready and self._semantic_ok

    def _dims(self) -> int:
        return self._embedder.dims if self._embedder is not None and self._embedder.dims else LOCAL_DIMS

    async def setup(self, *, timeout: float = _SETUP_TIMEOUT) -> bool:
        """Create the search index if it is missing (never overwrites); False when Redis is not usable."""
        async with self._setup_lock:
            if self._index_ready:
                return True
            if self._embedder is not None and not self._embedder.dims:
                return False  # a remote embedder still learning its vector size: try again later
            dims = self._dims()
            index = AsyncSearchIndex(build_schema(self._prefix, dims), redis_client=self._redis)
            try:
                async with asyncio.timeout(timeout):
                    await index.create(overwrite=False)
                    existing = await self._index_dims()
            except Exception as exc:  # noqa: BLE001 -- exact caching works without the index
                self._next_setup = time.monotonic() + self._setup_retry
                log.warning("cache_index_unavailable", index=keys.index_name(self._prefix), error=repr(exc))
                return False
            self._semantic_ok = existing == dims
            if not self._semantic_ok:
                log.error("cache_index_dims_mismatch", index=keys.index_name(self._prefix),
                          index_dims=existing, embedder_dims=dims,
                          hint="drop the index (FT.DROPINDEX) to rebuild it for this embedder")
            self._index = index
            self._index_ready = True
            return True

    async def _index_dims(self) -> int | None:
        info = await self._redis.ft(keys.index_name(self._prefix)).info()
        attributes = info.get("attributes") or info.get(b"attributes") or []
        for attr in attributes:
            if isinstance(attr, dict):
                fields = {_s(k).lower(): v for k, v in attr.items()}
            else:
                fields = {_s(attr[i]).lower(): attr[i + 1] for i in range(0, len(attr) - 1, 2)}
            if _s(fields.get("type", b"")) == "VECTOR":
                return int(fields.get("dim", 0))
        return None

    async def _ensure_index(self, timeout: float | None = None) -> bool:
        """The index, created on first need after a failed start-up (bounded like any cache call)."""
        if self._index_ready:
            return True
        if time.monotonic() < self._next_setup or self._down():
            return False
        return await self.setup(timeout=self._timeout if timeout is None else timeout)

    def retry_setup_until_ready(self) -> None:
        """After a failed ``setup`` (Redis still loading its dataset, the query engine missing, a remote
        embedder not yet telling its vector size), keep trying in the background, so the index does not
        wait for the first semantic request or admin call to be created."""
        if self._index_ready or (self._index_retry is not None and not self._index_retry.done()):
            return

        async def retry() -> None:
            while not self._index_ready:
                await asyncio.sleep(self._setup_retry)
                if await self.setup():
                    log.info("cache_index_ready", index=keys.index_name(self._prefix))

        self._index_retry = asyncio.create_task(retry(), name="cache-index-setup")

    async def close(self) -> None:
        for task in (self._listener, self._index_retry):
            if task is None:
                continue
            task.cancel()
            with suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 2.0)
        for fut in self._flights.values():
            if not fut.done():
                fut.set_result(None)
        self._flights.clear()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        if self._owns_commands:
            await self._commands.close()

    # ---- failures -----------------------------------------------------------------------------------

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        if any(text in str(exc).lower() for text in ("no such index", "unknown index")):
            self._index_ready = False  # dropped, or Redis restarted empty: recreate it
            self.retry_setup_until_ready()
        if not _unavailable(exc):
            log.error("cache_error", op=op, error=repr(exc))
            return
        now = time.monotonic()
        if _timed_out(exc):
            self._timeouts_in_row += 1
            if self._timeouts_in_row >= _TRIP_AFTER:
                self._down_until = now + self._retry_after
        else:
            self._down_until = now + self._retry_after
        if now >= self._next_warning:
            # one warning a second at most: a Redis outage must not flood the logs
            log.warning("cache_unavailable", op=op, error=repr(exc),
                        suppressed=self._suppressed)
            self._next_warning = now + 1.0
            self._suppressed = 0
        else:
            self._suppressed += 1

    async def _call(self, op: str, aw: Awaitable[T], *, bounded: bool = False) -> T | Failed:
        """One Redis round trip, bounded; a failure is logged and counted, never raised. ``bounded``: the
        call carries its own deadline (the lean client's ``timeout=``), cheaper than an asyncio timeout."""
        try:
            if bounded:
                result = await aw
            else:
                async with asyncio.timeout(self._timeout):
                    result = await aw
        except Exception as exc:  # noqa: BLE001 -- the cache must never fail a request
            self._failed(op, exc)
            return FAILED
        self._timeouts_in_row = 0
        return result

    # ---- lookup -------------------------------------------------------------------------------------

    def fingerprint(self, path: str, payload: dict[str, Any], body: bytes) -> Fingerprint | None:
        """``canonical.fingerprint`` of ``payload``, remembered by ``body``, the bytes it was parsed from (or
        serialised to): a repeated request, the cache's whole point, skips the canonical form and digests."""
        key = (path, body)
        try:
            return self._fingerprints[key]
        except KeyError:
            pass
        fp = fingerprint(path, payload)
        if len(body) <= _FINGERPRINT_MEMO_BODY:
            if len(self._fingerprints) >= _FINGERPRINT_MEMO_SIZE:
                self._fingerprints.clear()
            self._fingerprints[key] = fp
        return fp

    async def lookup(self, token: Token, fp: Fingerprint, *, min_threshold: float | None = None,
                     exact_only: bool = False, flight: SingleFlight | None = None) -> CacheLookup:
        """The cached answer, or a miss. With ``flight`` (this request will store what it gets), a miss in
        Redis also enters the single flight in the same round trip: ``async with flight`` then only waits,
        if another request leads. A hit leaves the flight."""
        scope = token.cache_scope
        result = CacheLookup("miss", scope=scope)
        if not self._enabled or token.cache_mode not in CACHING_MODES:
            return result
        name = keys.exact_key(self._prefix, scope, fp.exact_key)
        ready = self._hot.get(name)
        if ready is not None:
            self.hits_exact += 1
            return CacheLookup("exact", scope=scope, ready=ready)
        if self._down():
            self.misses += 1
            return result
        generation = self._hot.generation
        if flight is not None and flight.begin():
            owner = secrets.token_hex(8)
            command = self._commands.run_script(_LOOKUP_OR_LOCK, [name, flight.lock],
                                                [owner, self._flight_ttl_ms], timeout=self._timeout)
            try:
                got = await self._call("lookup", command, bounded=True)
            except asyncio.CancelledError:  # the client went away: the lock may be taken all the same
                self.in_background(self._clear_ghost(flight.lock, owner))
                flight.release()
                raise
            if got is FAILED:
                self.in_background(self._clear_ghost(flight.lock, owner))
            raw = flight.entered(got, owner)
        else:
            raw = await self._call("lookup", self._commands.get(name, timeout=self._timeout), bounded=True)
        if raw is FAILED:
            self.misses += 1
            return result
        if raw is not None:
            entry = CachedEntry.from_bytes(raw)
            if entry is not None:
                self.hits_exact += 1
                self._keep_hot(name, raw, entry, generation)
                if flight is not None:
                    flight.release()
                return CacheLookup("exact", entry, scope=scope)
        if not exact_only and token.cache_mode == "semantic" and fp.query_text is not None:
            try:
                hit = await self._semantic(token, fp, min_threshold, result)
            except BaseException:  # cancelled (the client went away) while holding the flight: give it back
                if flight is not None:
                    flight.release()
                raise
            if hit is not None:
                self.hits_semantic += 1
                if flight is not None:
                    flight.release()
                return hit
        self.misses += 1
        return result

    async def _embed(self, text: str) -> bytes | None:
        embedder = self._embedder
        if embedder is None or not embedder.ready:
            self.semantic_skipped += 1
            return None
        try:
            async with asyncio.timeout(self._embed_timeout):
                return _as_bytes(await embedder.embed(text))
        except Exception as exc:  # noqa: BLE001 -- no embedding means no semantic lookup, not an error
            self.semantic_skipped += 1
            log.warning("embedding_failed", embedder=embedder.name, error=repr(exc))
            return None

    def _knn_query(self, scope: str, fp: Fingerprint) -> str:
        """The nearest stored questions among this scope's, model's, parameters' and context's, by this
        embedder: the filter runs inside RediSearch. Every tag value is a hex digest: nothing to escape."""
        return (f"(@scope:{{{keys.tag_digest(scope)}}} @model:{{{keys.tag_digest(fp.model)}}} "
                f"@params_hash:{{{fp.params_hash}}} @context_hash:{{{fp.context_hash}}} "
                f"@embedder:{{{self._embedder_tag()}}})=>[KNN {self._candidates} @embedding $vector AS distance]")

    async def _nearest(self, scope: str, fp: Fingerprint, vector: bytes) -> list[tuple[str, float, Any]] | Failed:
        """(vector key, cosine distance, stored question) of the nearest candidates, best first: one FT.SEARCH
        through the lean client (redisvl's query objects and result parsing took ~1 ms of the ~1.3 here)."""
        reply = await self._call("semantic_lookup", self._commands.execute(
            "FT.SEARCH", keys.index_name(self._prefix), self._knn_query(scope, fp), "PARAMS", 2, "vector", vector,
            "RETURN", 2, "query", "distance", "SORTBY", "distance", "ASC", "DIALECT", 2, "LIMIT", 0,
            self._candidates, timeout=self._timeout), bounded=True)
        if isinstance(reply, Failed):
            return reply
        rows = []
        for i in range(1, len(reply) - 1, 2):  # [total, key, [field, value, ...], key, [...], ...]
            flat = reply[i + 1]
            fields = {_s(flat[j]): flat[j + 1] for j in range(0, len(flat) - 1, 2)}
            distance = fields.get("distance")
            if distance is None:
                continue
            query = fields.get("query")
            rows.append((_s(reply[i]), float(distance), _s(query) if query is not None else None))
        return rows

    def _embedder_tag(self) -> str:
        assert self._embedder is not None
        return keys.tag_digest(f"{self._embedder.name}/{self._embedder.dims}")

    async def _semantic(self, token: Token, fp: Fingerprint, min_threshold: float | None,
                        result: CacheLookup) -> CacheLookup | None:
        assert fp.query_text is not None
        if self._embedder is None or not self._embedder.ready:
            self.semantic_skipped += 1
            return None
        if not await self._ensure_index() or not self._semantic_ok or self._index is None:
            return None
        vector = await self._embed(fp.query_text)
        if vector is None:
            return None
        result.vector = vector
        threshold = max(token.similarity_threshold, min_threshold or 0.0)
        rows = await self._nearest(result.scope, fp, vector)
        if isinstance(rows, Failed):
            return None
        for vec_key, distance, candidate in rows:  # best first
            similarity = min(1.0, 1.0 - distance)
            if similarity < threshold:
                break
            if not isinstance(candidate, str) or not self._guard(fp.query_text, candidate):
                self.guard_refusals += 1
                log.info("semantic_guard_refused", similarity=round(similarity, 4), scope=result.scope)
                continue
            exact_name = keys.exact_key_for_vector(self._prefix, vec_key)
            raw = await self._call("semantic_lookup", self._commands.get(exact_name, timeout=self._timeout),
                                   bounded=True)
            if raw is FAILED:
                return None
            entry = CachedEntry.from_bytes(raw) if raw is not None else None
            # the tags are digests: check the entry really is this scope's and model's
            if entry is None or entry.scope != result.scope or entry.model != fp.model:
                continue
            return CacheLookup("semantic", entry, similarity, vector, result.scope, candidate)
        return None

    # ---- store --------------------------------------------------------------------------------------

    def schedule_store(self, token: Token, fp: Fingerprint, lookup: CacheLookup | None,
                       response: dict[str, Any], ttl_seconds: int, *, cost: float | None = None,
                       flight: SingleFlight | None = None) -> asyncio.Task[bool]:
        """``store`` in a background task the cache keeps a reference to (``close`` waits for it)."""
        if flight is not None:
            flight.store_begins()  # from now on the store finishes the flight, whatever happens first
        return self.in_background(self.store(token, fp, lookup, response, ttl_seconds, cost=cost, flight=flight))

    def in_background(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run cache work off the response path, referenced until done (the loop keeps only weak ones)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def store(self, token: Token, fp: Fingerprint, lookup: CacheLookup | None, response: dict[str, Any],
                    ttl_seconds: int, *, cost: float | None = None, flight: SingleFlight | None = None) -> bool:
        """Store a complete successful answer; True when it was written. Never raises. The ``flight`` this
        request leads is finished here, when the answer is in Redis; its lock goes in the same script."""
        try:
            if (not self._enabled or token.cache_mode not in CACHING_MODES or ttl_seconds <= 0
                    or not is_storable(response) or self._down()):
                return False
            return await self._store(token, fp, lookup, response, ttl_seconds, cost, flight)
        finally:
            if flight is not None:
                flight.release()

    async def _store(self, token: Token, fp: Fingerprint, lookup: CacheLookup | None,
                     response: dict[str, Any], ttl_seconds: int, cost: float | None,
                     flight: SingleFlight | None) -> bool:
        scope = token.cache_scope
        vector = lookup.vector if lookup is not None and lookup.scope == scope else None
        if vector is None and token.cache_mode == "semantic" and fp.query_text is not None:
            vector = await self._embed(fp.query_text)
        usage = response.get("usage") if isinstance(response.get("usage"), dict) else None
        if cost is None and usage is not None and isinstance(usage.get("cost"), (int, float)):
            cost = float(usage["cost"])
        now = time.time()
        entry = CachedEntry(keys.entry_id(scope, fp.exact_key), response, usage, cost, now, scope, fp.model,
                            fp.query_text, expires_at=now + ttl_seconds)
        blob = entry.to_bytes()
        exact_name = keys.exact_key(self._prefix, scope, fp.exact_key)
        row: dict[str, Any] = {
            "entry": exact_name, "entry_id": entry.id, "scope": keys.tag_digest(scope), "scope_name": scope,
            "model": keys.tag_digest(fp.model), "params_hash": fp.params_hash,
            "context_hash": fp.context_hash, "bytes": len(blob) + (len(vector) if vector else 0),
            "stored_at": int(now),
        }
        if fp.query_text is not None:
            row["query"] = fp.query_text
        if vector is not None and self._embedder is not None:
            row["embedding"] = vector
            row["embedder"] = self._embedder_tag()
        ttl_ms = int(ttl_seconds * 1000)
        vec_key = keys.vector_key(self._prefix, scope, fp.exact_key)
        lock, owner = flight.take_lock() if flight is not None else ("", "")
        args = [blob, ttl_ms, owner, *(part for name, value in row.items() for part in (name, value))]
        stored = self._commands.run_script(_STORE, [exact_name, vec_key, lock], args, timeout=self._timeout)
        if await self._call("store", stored, bounded=True) is FAILED:
            if owner:
                self.in_background(self._clear_ghost(lock, owner))
            return False
        self.stores += 1
        return True

    def _keep_hot(self, name: str, raw: bytes, entry: CachedEntry, generation: int) -> None:
        if not self._hot.enabled:
            return
        self._hot.put(name, ReadyHit(entry, raw), None if entry.expires_at is None else entry.expires_at - time.time(),
                      generation)

    def start_listening(self) -> None:
        """Drop the hot tier whenever any worker purges or deletes entries (``cache.hot``)."""
        if self._hot.enabled and self._listener is None:
            self._listener = asyncio.create_task(
                follow_channel(self._redis, keys.events_channel(self._prefix), self._hot.clear), name="cache-events")

    async def _forget_everywhere(self) -> None:
        self._hot.clear()
        with suppress(Exception):  # the hot tier's own expiry bounds what a lost message costs
            async with asyncio.timeout(_SETUP_TIMEOUT):
                await self._redis.publish(keys.events_channel(self._prefix), b"purge")

    # ---- single flight ------------------------------------------------------------------------------

    def single_flight(self, key: str, *, scope: str | None = None) -> SingleFlight:
        """``async with cache.single_flight(fp.exact_key) as leader:`` -- one caller per key at a time.

        The first caller proceeds at once (``leader`` True). Concurrent callers with the same key, in
        this process or in another worker (Redis lock), wait until the leader's block is over and its
        answer stored, at most ``settings.single_flight_timeout`` seconds, then proceed with ``leader``
        False: they should look the key up again before calling the upstream themselves.
        """
        entry = keys.exact_key(self._prefix, scope, key) if scope else None
        return SingleFlight(self, f"{scope}:{key}" if scope else key, entry)

    async def _acquire(self, lock: str, owner: str, entry: str | None) -> int | None:
        """1: the lock is ours. 0: another process holds it. 2: the answer is stored already.
        None: Redis is not usable (and a lock the failed call may still have set is cleared later)."""
        if self._down():
            return None
        ttl_ms = self._flight_ttl_ms
        if entry is None:
            command = self._commands.execute("SET", lock, owner, "NX", "PX", ttl_ms, timeout=self._timeout)
        else:
            # the lookup's own script: a request that saw a miss a moment ago and finds the lock free may be
            # just behind a leader that has stored and released, so the answer counts too
            command = self._commands.run_script(_LOOKUP_OR_LOCK, [entry, lock], [owner, ttl_ms],
                                                timeout=self._timeout)
        got = await self._call("single_flight", command, bounded=True)
        if got is FAILED:
            # the SET may have reached Redis before the timeout: left alone, that lock would hold every
            # identical request in every worker for the whole flight timeout
            self.in_background(self._clear_ghost(lock, owner))
            return None
        if isinstance(got, bytes):
            return 2 if entry is not None else 1  # the stored answer; or SET's OK
        return int(bool(got))

    async def _clear_ghost(self, lock: str, owner: str) -> None:
        for delay in _GHOST_RETRIES:
            await asyncio.sleep(delay)
            try:
                await self._commands.run_script(_RELEASE, [lock], [owner], timeout=max(self._timeout, 1.0))
                return
            except Exception:  # noqa: BLE001,S112 -- Redis still away: try again later; the lock expires anyway
                continue

    async def _wait_unlocked(self, lock: str) -> None:
        deadline = time.monotonic() + self._flight_timeout
        delay = 0.01
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
            held = await self._call("single_flight", self._commands.execute("EXISTS", lock, timeout=self._timeout),
                                    bounded=True)
            if held is FAILED or not held:
                return

    async def _unlock(self, lock: str, owner: str) -> None:
        if not self._down():  # otherwise the lock expires by itself
            release = self._commands.run_script(_RELEASE, [lock], [owner], timeout=self._timeout)
            await self._call("single_flight", release, bounded=True)

    # ---- admin --------------------------------------------------------------------------------------

    async def _admin_index(self) -> None:
        if not await self._ensure_index(_SETUP_TIMEOUT):
            raise CacheUnavailable("the cache index is not available (is Redis with the query engine up?)")

    async def _delete_rows(self, query: str) -> int:
        ft = self._redis.ft(keys.index_name(self._prefix))
        deleted = 0
        seen: set[str] = set()
        while True:
            res = await ft.search(Query(query).no_content().paging(0, 1000).dialect(2))
            ids = [doc.id for doc in res.docs if doc.id not in seen]
            if not ids:
                return deleted
            seen.update(ids)
            exact = [keys.exact_key_for_vector(self._prefix, i) for i in ids]
            await self._redis.unlink(*ids, *exact)
            deleted += len(ids)
            await self._forget_everywhere()

    async def purge_scope(self, scope: str) -> int:
        """Delete every entry of a scope ("token:<id>" or "shared:<name>"); the number deleted."""
        await self._admin_index()
        try:
            async with asyncio.timeout(_ADMIN_TIMEOUT):
                n = await self._delete_rows(f"@scope:{{{keys.tag_digest(scope)}}}")
        except Exception as exc:
            raise CacheUnavailable(f"purging the cache failed: {exc!r}") from exc
        log.info("cache_purged", scope=scope, deleted=n)
        return n

    async def delete_entry(self, entry_id: str) -> bool:
        if not _ENTRY_ID.fullmatch(entry_id):
            return False
        await self._admin_index()
        try:
            async with asyncio.timeout(_ADMIN_TIMEOUT):
                return await self._delete_rows(f"@entry_id:{{{entry_id}}}") > 0
        except Exception as exc:
            raise CacheUnavailable(f"deleting the entry failed: {exc!r}") from exc

    async def stats(self) -> list[dict[str, Any]]:
        """Entries and bytes (stored value + vector) per scope, largest first."""
        await self._admin_index()
        request = (AggregateRequest("*").load("@scope_name", "@bytes")
                   .group_by("@scope", reducers.count().alias("entries"),
                             reducers.sum("@bytes").alias("bytes"),
                             reducers.first_value("@scope_name").alias("scope_name"))
                   .limit(0, 100_000))
        try:
            async with asyncio.timeout(_ADMIN_TIMEOUT):
                res = await self._redis.ft(keys.index_name(self._prefix)).aggregate(request)
        except Exception as exc:
            raise CacheUnavailable(f"reading cache stats failed: {exc!r}") from exc
        out = []
        for raw in res.rows:
            row = {_s(raw[i]): _s(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}
            scope = row.get("scope_name", "")
            item: dict[str, Any] = {"scope": scope, "entries": int(float(row.get("entries", 0))),
                                    "bytes": int(float(row.get("bytes", 0)))}
            if scope.startswith("token:"):
                item["token_id"] = scope[len("token:"):]
            out.append(item)
        out.sort(key=lambda r: (-r["bytes"], r["scope"]))
        return out

    def counters(self) -> dict[str, int]:
        return {"hits_exact": self.hits_exact, "hits_semantic": self.hits_semantic, "misses": self.misses,
                "stores": self.stores, "errors": self.errors, "guard_refusals": self.guard_refusals,
                "semantic_skipped": self.semantic_skipped, "flight_waits": self.flight_waits,
                "hot_hits": self._hot.hits}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SingleFlight:
    """The async context manager ``ResponseCache.single_flight`` returns; enters as ``leader: bool``.

    A leader whose answer is being stored (``schedule_store(..., flight=...)``) is finished by that store,
    once the answer is in Redis: its lock goes in the store's own script, and the waiters in this process
    are woken then, to find the answer when they look again. Otherwise leaving the block (or ``release``)
    finishes it.
    """

    __slots__ = ("_cache", "_entry", "_flight", "_fut", "_lock", "_owner", "_storing", "_decided")

    def __init__(self, cache: ResponseCache, flight: str, entry: str | None = None) -> None:
        self._cache = cache
        self._flight = flight
        self._entry = entry
        self._fut: asyncio.Future[None] | None = None
        self._lock = keys.lock_key(cache._prefix, flight)
        self._owner: str | None = None
        self._storing = False
        self._decided: int | None = None  # 1 leader, 0 another process leads: set by the lookup (``entered``)

    @property
    def lock(self) -> str:
        return self._lock

    def begin(self) -> bool:
        """Before a lookup that takes the lock in its round trip: False when a request in this process is
        on this key already (then the lookup only reads, and ``async with`` waits for that request)."""
        if self._flight in self._cache._flights:
            return False
        self._fut = asyncio.get_running_loop().create_future()
        self._cache._flights[self._flight] = self._fut
        return True

    def entered(self, reply: Any, owner: str) -> Any:
        """The reply of the lookup-or-lock script: the stored answer (returned), or the lock taken (1) or
        held elsewhere (0), remembered for ``__aenter__``; FAILED: lead without a lock."""
        if isinstance(reply, bytes) or reply is FAILED:
            self._decided = 1  # should the stored answer not be usable after all: lead, without the lock
            return reply
        self._decided = 1 if reply == 1 else 0
        if reply == 1:
            self._owner = owner
        return None

    async def __aenter__(self) -> bool:
        cache = self._cache
        decided, self._decided = self._decided, None
        if decided == 1:
            return True
        if decided == 0:  # another worker process is on it (our local future stays up for this process)
            cache.flight_waits += 1
            try:
                await cache._wait_unlocked(self._lock)
            except BaseException:
                self._finish()
                raise
            return False
        waiting = cache._flights.get(self._flight)
        if waiting is not None:  # someone in this process is on it: wait for it
            cache.flight_waits += 1
            try:
                async with asyncio.timeout(cache._flight_timeout):
                    await asyncio.shield(waiting)
            except TimeoutError:
                pass
            return False
        self._fut = asyncio.get_running_loop().create_future()
        cache._flights[self._flight] = self._fut
        owner = secrets.token_hex(8)
        try:
            try:
                acquired = await cache._acquire(self._lock, owner, self._entry)
            except asyncio.CancelledError:  # the client went away: the lock may be taken all the same
                cache.in_background(cache._clear_ghost(self._lock, owner))
                raise
            if acquired == 2:  # answered and stored since our lookup: look it up again
                self._finish()
                self._fut = None
                return False
            if acquired == 0:  # another worker process is on it
                cache.flight_waits += 1
                await cache._wait_unlocked(self._lock)
                return False
        except BaseException:
            self._finish()
            raise
        if acquired:
            self._owner = owner
        return True

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None and self._storing:
            return  # the store finishes the flight
        unlocking = self.release()
        if unlocking is not None:
            await asyncio.shield(unlocking)

    def release(self) -> asyncio.Task[None] | None:
        """Finish the flight now: wake the waiters here, give the Redis lock back in a task of its own (so a
        request cancelled again, by a client gone or a shutdown, still gives it back); that task, if any."""
        self._finish()
        if self._owner is None:
            return None
        owner, self._owner = self._owner, None
        return self._cache.in_background(self._cache._unlock(self._lock, owner))

    def release_unless_storing(self) -> None:
        if not self._storing:
            self.release()

    def store_begins(self) -> None:
        self._storing = True

    def take_lock(self) -> tuple[str, str]:
        """(lock key, owner) for the store script to delete; ("", "") when this flight holds no lock."""
        owner, self._owner = self._owner, None
        return (self._lock, owner) if owner else ("", "")

    def _finish(self) -> None:
        cache = self._cache
        if self._fut is not None and cache._flights.get(self._flight) is self._fut:
            del cache._flights[self._flight]
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: ``app[RESPONSE_CACHE]``; register after ``upstream_ctx`` and ``redis_ctx``.

    It uses the embedder ``embedder_ctx`` registered, if any; otherwise it builds (and owns) the one the
    settings ask for. The local model loads in the background: start-up does not wait for it.
    """
    settings = app[SETTINGS]
    embedder = app.get(EMBEDDER)
    owned = None
    if embedder is None and settings.cache_enabled:
        embedder = owned = make_embedder(settings, app.get(UPSTREAM))
        if owned is not None:
            await owned.start()
    cache = ResponseCache(app[REDIS], settings, embedder=embedder, commands=app.get(REDIS_COMMANDS))
    if settings.cache_enabled:
        if not await cache.setup():
            cache.retry_setup_until_ready()
        cache.start_listening()
    app[RESPONSE_CACHE] = cache
    yield
    await cache.close()
    if owned is not None:
        await owned.close()
