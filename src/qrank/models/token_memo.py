"""A small, bounded memory of recent tokenizations, so that counting tokens and then scoring the same
inputs tokenizes them once.

The server counts every request's tokens (limits, batch budgets) before the engine scores it; without
this the template and every document were tokenized twice, which on a GPU costs a sizeable share of a
small model's time. Entries are token ids as compact ``array('i')``, bounded by a total token count and
evicted least recently used; the memory is thread-safe (requests are counted in handler threads while the
engine thread scores).

>>> memo = TokenMemo(max_tokens=10)
>>> memo.encode(["a", "bb"], lambda texts: [[1] * len(t) for t in texts])
[[1], [1, 1]]
>>> memo.encode(["bb"], lambda texts: 1 / 0)          # remembered: the encoder is not called
[[1, 1]]
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence


class TokenMemo:
    """Token ids of recently encoded inputs, keyed by anything hashable that determines them."""

    def __init__(self, max_tokens: int = 2_000_000) -> None:
        self.max_tokens = int(max_tokens)
        self._entries: OrderedDict[Hashable, array] = OrderedDict()
        self._tokens = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def encode(self, keys: Sequence[Hashable], encoder: Callable[[list], list[list[int]]]) -> list[list[int]]:
        """Ids for each key: remembered ones as they were, the others from one ``encoder`` call on the
        missing keys (in their order), remembered for next time. Returns fresh lists (callers may keep them)."""
        if self.max_tokens <= 0:  # off: no lookups, no locking
            return encoder(list(keys))
        out: list[list[int] | None] = [None] * len(keys)
        missing: dict[Hashable, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                ids = self._entries.get(key)
                if ids is None:
                    missing.setdefault(key, []).append(i)
                else:
                    self._entries.move_to_end(key)
                    out[i] = ids.tolist()
            self.hits += len(keys) - sum(len(v) for v in missing.values())
            self.misses += len(missing)
        if missing:
            fresh = encoder(list(missing))
            with self._lock:
                for (key, where), ids in zip(missing.items(), fresh):
                    for i in where:
                        out[i] = ids if i == where[0] else list(ids)
                    self._remember(key, ids)
        return out  # type: ignore[return-value]

    def _remember(self, key: Hashable, ids: list[int]) -> None:
        if len(ids) > self.max_tokens:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._tokens -= len(old)
        self._entries[key] = array("i", ids)
        self._tokens += len(ids)
        while self._tokens > self.max_tokens:
            _, dropped = self._entries.popitem(last=False)
            self._tokens -= len(dropped)

    def __len__(self) -> int:
        return len(self._entries)
