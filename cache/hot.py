"""The hot tier: exact entries a worker served a moment ago, kept in process for a second or two.

A repeated request is the cache's whole point, and for it the Redis round trip is most of the cost of a
hit. Only entries found in Redis go here (not every answer stored: most are never asked for again), and
never as a parsed answer: that is dozens of objects the garbage collector would walk over and over
(measured: keeping parsed entries made a cache miss cost 60% more CPU, all of it in the collector). Each
is a ``ReadyHit``: the stored bytes, the answer's JSON pre-rendered but for the two fields a hit changes,
and the few strings and numbers the log row needs, so serving it as JSON is two joins (parsing the entry
and rendering it again took ~13 µs); only bytes, strings and numbers. Entries are keyed by their full Redis
key (scope included, so nothing crosses between tokens), live at most ``seconds`` and never past the Redis
entry's own expiry, and are bounded in number and size (least recently used go first). Purges and
deletes clear every worker's tier through a Redis channel (``ResponseCache`` listens); if that channel
is down, an entry outlives its deletion by ``seconds`` at most, as a token does in ``proxy.auth``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import orjson

from cache.entry import CachedEntry
from cache.replay import json_tail, render_tail

__all__ = ["HotEntries", "ReadyHit"]


class ReadyHit:
    """An exact entry as the hot tier holds it (see above)."""

    __slots__ = ("raw", "id", "model", "provider", "cost", "_tail", "_usage")

    def __init__(self, entry: CachedEntry, raw: bytes) -> None:
        self.raw = raw
        self.id = entry.id
        response = entry.response
        model, provider = response.get("model"), response.get("provider")
        self.model = model if isinstance(model, str) else None
        self.provider = provider if isinstance(provider, str) else None
        self.cost = entry.cost
        self._usage = orjson.dumps(entry.usage) if entry.usage is not None else None
        self._tail = json_tail(response)

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def usage(self) -> Any:
        return orjson.loads(self._usage) if self._usage is not None else None

    def entry(self) -> CachedEntry | None:
        """The whole entry, parsed again (an SSE replay needs it)."""
        return CachedEntry.from_bytes(self.raw)

    def render_json(self, request_id: str) -> bytes:
        return render_tail(self._tail, request_id)


class HotEntries:
    def __init__(self, *, max_entries: int, seconds: float, max_entry_bytes: int = 256 * 1024) -> None:
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._max = max_entries
        self._seconds = seconds
        self._max_bytes = max_entry_bytes
        self.enabled = max_entries > 0 and seconds > 0
        self.hits = 0
        # bumped by clear(): a value read from Redis before a purge must not come back after it
        self.generation = 0

    def get(self, key: str) -> Any:
        found = self._entries.get(key)
        if found is None:
            return None
        raw, until = found
        if until <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return raw

    def put(self, key: str, raw: Any, ttl_left: float | None, generation: int) -> None:
        """Keep ``raw`` (a ``ReadyHit``, or any value with a length) for ``seconds``, or less when its Redis
        copy expires sooner (``ttl_left``); ``generation`` is the one seen before ``raw`` was read: if a clear
        came since, it is stale."""
        if not self.enabled or len(raw) > self._max_bytes or generation != self.generation:
            return
        keep = self._seconds if ttl_left is None else min(self._seconds, ttl_left)
        if keep <= 0:
            return
        entries = self._entries
        entries[key] = (raw, time.monotonic() + keep)
        entries.move_to_end(key)
        while len(entries) > self._max:
            entries.popitem(last=False)

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
