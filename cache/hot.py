"""The hot tier: exact entries a worker served a moment ago, kept in process for a second or two.

A repeated request is the cache's whole point, and for it the Redis round trip is most of the cost of a
hit. Only entries found in Redis go here (not every answer stored: most are never asked for again), as
the stored bytes: a parsed answer is dozens of objects the garbage collector would walk over and over
(measured: keeping parsed entries made a cache miss cost 60% more CPU, all of it in the collector).
Entries are keyed by their full Redis key (scope included, so nothing crosses between tokens), live at
most ``seconds`` and never past the Redis entry's own expiry, and are bounded in number and size
(least recently used go first). Purges and
deletes clear every worker's tier through a Redis channel (``ResponseCache`` listens); if that channel
is down, an entry outlives its deletion by ``seconds`` at most, as a token does in ``proxy.auth``.
"""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["HotEntries"]


class HotEntries:
    def __init__(self, *, max_entries: int, seconds: float, max_entry_bytes: int = 256 * 1024) -> None:
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._max = max_entries
        self._seconds = seconds
        self._max_bytes = max_entry_bytes
        self.enabled = max_entries > 0 and seconds > 0
        self.hits = 0
        # bumped by clear(): a value read from Redis before a purge must not come back after it
        self.generation = 0

    def get(self, key: str) -> bytes | None:
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

    def put(self, key: str, raw: bytes, ttl_left: float | None, generation: int) -> None:
        """Keep ``raw`` for ``seconds``, or less when its Redis copy expires sooner (``ttl_left``);
        ``generation`` is the one seen before ``raw`` was read: if a clear came since, it is stale."""
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
