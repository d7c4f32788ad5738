"""Find the token prefixes that several sequences share, so the fast engine computes each once.

A Qwen3-Reranker request of one query over N documents is N sequences that all begin with the same
template + instruction + query tokens; different queries still share the template. Sorting the
sequences puts every shared prefix in one contiguous run, and the longest common prefix (LCP) of
neighbours tells how long it is. The runs are then cut where that saves the most tokens: a group of
``k`` sequences sharing ``p`` tokens saves ``(k - 1) * p`` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# below this many tokens a shared prefix is not worth an extra attention row: the row costs a kernel tile and its
# bookkeeping whatever its length, and short accidental overlaps (texts that start with the same word) would only
# fragment passes; Qwen3 templates share 30+ tokens, so any value from 2 to ~30 groups real requests the same
MIN_PREFIX = 8
# deeper nesting than this (sequences that are prefixes of prefixes of…) is kept as one group: it bounds the
# recursion of _split (Python's limit is 1000) on adversarial inputs; real requests nest 2-3 deep
# (template, instruction, query)
_MAX_DEPTH = 64


@dataclass(frozen=True)
class PrefixGroup:
    """Sequences (positions in the caller's list) whose first ``prefix_len`` tokens are identical.

    ``prefix_len`` is 0 for sequences that share nothing worth sharing. It is always shorter than
    every member, so each member keeps at least its last token to compute.
    """

    prefix_len: int
    members: tuple[int, ...]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share.

    >>> common_prefix_len([1, 2, 3], [1, 2, 4, 5])
    2
    >>> common_prefix_len([1, 2], [1, 2, 3])
    2
    >>> common_prefix_len((1, 2, 3), (1, 5))
    1
    """
    m = min(len(a), len(b))
    if m == 0:
        return 0
    if isinstance(a, list) and isinstance(b, list):
        # token lists (what tokenizers give): compare halving slices in C, ~10x faster than numpy on
        # request-sized lists; the pipelined path counts chunks with this several times per request
        if a[:m] == b[:m]:
            return m
        lo, hi = 0, m  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[lo:mid] == b[lo:mid]:
                lo = mid
            else:
                hi = mid
        return lo
    x = np.asarray(a[:m])
    y = np.asarray(b[:m])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else m


def find_prefix_groups(sequences: Sequence[Sequence[int]], *, min_prefix: int = MIN_PREFIX) -> list[PrefixGroup]:
    """Partition ``sequences`` into groups that share a token prefix, saving as many tokens as it can.

    Every position appears in exactly one group.

    >>> a, b, c = [7] * 10 + [1, 2], [7] * 10 + [3], [5, 6, 7]
    >>> sorted((g.prefix_len, g.members) for g in find_prefix_groups([a, b, c]))
    [(0, (2,)), (10, (0, 1))]
    """
    n = len(sequences)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: list(sequences[i]))
    lengths = [len(sequences[i]) for i in order]
    lcp = [common_prefix_len(sequences[order[k]], sequences[order[k + 1]]) for k in range(n - 1)]
    runs = _split(lcp, lengths, 0, n - 1, min_prefix, 0)[1]
    groups = []
    loose: list[int] = []
    for lo, hi, p in runs:
        members = tuple(order[lo : hi + 1])
        if p > 0 and len(members) > 1:
            groups.append(PrefixGroup(p, members))
        else:
            loose.extend(members)
    if loose:
        groups.append(PrefixGroup(0, tuple(sorted(loose))))
    return groups


def _split(lcp: list[int], lengths: list[int], lo: int, hi: int, min_prefix: int, depth: int):
    """Best (saved tokens, runs) for sorted positions lo..hi; a run is (lo, hi, prefix_len).

    Keeping the run whole shares its smallest neighbour LCP; the alternative cuts it at every place
    where the LCP is that smallest and solves the pieces, which may share longer prefixes.
    """
    if lo == hi:
        return 0, [(lo, hi, 0)]
    m = min(lcp[lo:hi])
    p = min(m, min(lengths[lo : hi + 1]) - 1)
    whole = (hi - lo) * p if p >= min_prefix else 0
    best = (whole, [(lo, hi, p if whole else 0)])
    if depth >= _MAX_DEPTH:
        return best
    cuts = [k for k in range(lo, hi) if lcp[k] == m]
    if len(cuts) == hi - lo:  # every neighbour pair shares exactly m: no longer prefix inside
        return best
    saved, runs, start = 0, [], lo
    for k in cuts + [hi]:
        end = k
        s, r = _split(lcp, lengths, start, end, min_prefix, depth + 1)
        saved += s
        runs.extend(r)
        start = k + 1
    return (saved, runs) if saved > whole else best
