"""Recent key/value caches, kept so that a new prompt runs only the tokens past a cached prefix.

A cache remembers the token ids it holds; a prompt that starts with the same ids reuses it, cut
back to the common prefix (`truncate`). Chat is where this pays: each turn's rendered conversation
starts with the previous one. Caches are taken out while a generation uses them and put back
after, so two threads never share one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_CACHES = 4  # recent caches kept
MAX_BYTES = 512 * 1024 * 1024  # their memory together, at most


def common_prefix(held: list[int], prompt: list[int]) -> int:
    """How many leading ids `held` and `prompt` share."""
    n = min(len(held), len(prompt))
    for i in range(n):
        if held[i] != prompt[i]:
            return i
    return n


def reusable(cache, prompt: list[int]) -> int:
    """Positions of `cache` that `prompt` can keep: its common prefix, less at least the prompt's last token
    (which must run again, for the logits of the first new token)."""
    return min(common_prefix(cache.tokens, prompt), len(prompt) - 1)


class PrefixCache:
    """A small LRU of key/value caches keyed by the tokens they hold, bounded in count and bytes.

    Example:
        caches = PrefixCache(runner.new_cache)
        cache = caches.take(prompt_ids)   # the cache sharing the longest prefix, or a new one
        ...generate with it...
        caches.put(cache)
    """

    def __init__(self, new_cache, max_caches: int = MAX_CACHES, max_bytes: int = MAX_BYTES):
        self.new_cache = new_cache
        self.max_caches = max_caches
        self.max_bytes = max_bytes
        self._caches: OrderedDict[int, object] = OrderedDict()  # id(cache) -> cache, oldest first
        self._lock = threading.Lock()

    def take(self, prompt: list[int]):
        """Removes and returns the cache that shares the longest prefix with `prompt`.

        A cache is taken only when the prompt keeps at least half of what it holds (a conversation
        going on keeps nearly all); otherwise a new cache is returned, so an unrelated prompt that
        shares a short start (a BOS token, a common system prompt) leaves the others' caches alone.
        """
        with self._lock:
            best, best_len = None, 0
            for key, cache in self._caches.items():
                n = reusable(cache, prompt)
                if n > best_len and 2 * n >= len(cache.tokens):
                    best, best_len = key, n
            if best is not None:
                return self._caches.pop(best)
        return self.new_cache()

    def put(self, cache) -> None:
        """Keeps `cache` as the most recent; drops the oldest while over the count or byte bound."""
        if not cache.tokens or cache.nbytes > self.max_bytes:
            return
        with self._lock:
            self._caches[id(cache)] = cache
            while len(self._caches) > self.max_caches or self.nbytes > self.max_bytes:
                self._caches.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._caches.clear()

    @property
    def nbytes(self) -> int:
        return sum(cache.nbytes for cache in self._caches.values())

    def __len__(self) -> int:
        return len(self._caches)
