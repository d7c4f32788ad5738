"""Reciprocal rank fusion: combine rankings by ``sum 1 / (k + rank)`` (Cormack et al., SIGIR 2009).

RRF needs no score calibration between systems (BM25 scores and cosines live on different scales),
which is why hybrid search uses it.

>>> rrf([["a", "b", "c"], ["b", "c"]], k=60)[0]
('b', 0.03252247488101534)
"""

from __future__ import annotations

from collections.abc import Sequence


def rrf(rankings: Sequence[Sequence[str]], k: int = 60) -> list[tuple[str, float]]:
    """Fused ``(id, score)`` pairs, best first; ranks start at 1, ties keep first-seen order.

    >>> [i for i, _ in rrf([["x", "y"], ["y", "z"]], k=1)]
    ['y', 'x', 'z']
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
