"""Token-budget batching: sort by length, cut into batches whose padded size fits, restore order.

The padded cost of a batch is ``len(batch) * longest``; grouping by length keeps that close to the
real token count, and the budget bounds memory for any mix of inputs.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(lengths: Sequence[int], max_tokens: int, max_batch_size: int = 1 << 30) -> list[list[int]]:
    """Group input positions into batches, longest first, each within ``max_tokens`` padded tokens
    (and ``max_batch_size`` inputs; the default means no limit).

    A single input longer than the budget gets a batch of its own (callers truncate before this).

    >>> plan_batches([5, 1, 3, 2], max_tokens=6)
    [[0], [2, 3], [1]]
    >>> sorted(i for b in plan_batches([4] * 10, max_tokens=8, max_batch_size=3) for i in b)
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    if max_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_tokens and max_batch_size must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = max(int(lengths[i]), 1)
        new_longest = max(longest, n)
        if current and (new_longest * (len(current) + 1) > max_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current, new_longest = [], n
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def restore_order(batches: Sequence[Sequence[int]], results: Sequence[Sequence], n: int) -> list:
    """Put per-batch results back in the caller's order.

    >>> restore_order([[1], [0, 2]], [["b"], ["a", "c"]], 3)
    ['a', 'b', 'c']
    """
    out: list = [None] * n
    for idx, res in zip(batches, results):
        if len(idx) != len(res):
            raise ValueError("a batch returned a different number of results than it was given")
        for i, r in zip(idx, res):
            out[i] = r
    return out
