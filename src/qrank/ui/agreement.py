"""How much two rankings of the same documents agree: Kendall's tau, Spearman's rho, top-k overlap.

The compare tab runs one query and one document list through two rerankers; these numbers say whether
the second model would change what a user sees.

>>> agreement([0.9, 0.5, 0.1], [0.8, 0.4, 0.2], k=2)["top_k_overlap"]
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import InvalidInput, require


def agreement(scores_a: Sequence[float], scores_b: Sequence[float], k: int) -> dict:
    """Rank agreement of two score lists over the same documents (in the caller's order).

    Returns ``kendall_tau`` and ``spearman_rho`` (scipy; ``None`` when a list is constant, where rank
    correlation is undefined), ``top_k_overlap`` (shared documents among each model's best ``k``,
    divided by ``k``), ``top1_same`` and the ``k`` used.

    >>> agreement([3, 2, 1], [1, 2, 3], k=1)["kendall_tau"]
    -1.0
    """
    if len(scores_a) != len(scores_b):
        raise InvalidInput("scores", f"the two models scored {len(scores_a)} and {len(scores_b)} documents")
    n = len(scores_a)
    if n == 0:
        raise InvalidInput("documents", "must not be empty")
    k = max(1, min(int(k), n))
    stats = require("scipy.stats", "ui")
    tau = rho = None
    # a constant list has no ranking to correlate; say so instead of letting scipy warn and answer NaN
    if n > 1 and len(set(scores_a)) > 1 and len(set(scores_b)) > 1:
        tau = _finite(stats.kendalltau(scores_a, scores_b).statistic)
        rho = _finite(stats.spearmanr(scores_a, scores_b).statistic)
    top_a, top_b = top_k(scores_a, k), top_k(scores_b, k)
    return {
        "kendall_tau": tau,
        "spearman_rho": rho,
        "top_k_overlap": len(set(top_a) & set(top_b)) / k,
        "top1_same": top_a[0] == top_b[0],
        "k": k,
        "n": n,
    }


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` highest scores, best first; ties keep the caller's order (as ``Reranker.rerank``).

    >>> top_k([0.1, 0.7, 0.7, 0.2], 2)
    [1, 2]
    """
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def _finite(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
