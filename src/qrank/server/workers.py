"""What a batcher runs in a model's worker thread: many requests → few backend calls → one answer each.

Requests that share the backend's keyword arguments (instruction, query-or-document, dimension) go
through one ``score_pairs`` / ``embed_batch`` call; the answer is cut back per request and checked
there, so a NaN fails only the request that produced it.

>>> import numpy as np
>>> class Sum:
...     def score_pairs(self, pairs, *, instruction=None):
...         return np.array([len(q) + len(d) for q, d in pairs], dtype=np.float32)
>>> run = score_runner(Sum())
>>> [r.tolist() for r in run([ScoreJob([("a", "bb")], None), ScoreJob([("c", ""), ("dd", "e")], None)])]
[[3.0], [1.0, 3.0]]
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import QrankError
from .errors import NonFiniteOutput


@dataclass(frozen=True)
class ScoreJob:
    """The (query, document) pairs of one request."""

    pairs: list[tuple[str, str]]
    instruction: str | None = None


@dataclass(frozen=True)
class EmbedJob:
    """The texts of one request."""

    texts: list[str]
    is_query: bool = False
    instruction: str | None = None
    dim: int | None = None


def _grouped(jobs: Sequence, key: Callable[[object], Hashable]) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(key(job), []).append(i)
    return groups


def score_runner(model) -> Callable[[Sequence[ScoreJob]], list]:
    """A batch runner over ``model.score_pairs``: one float32 array (or an error) per job."""

    def run(jobs: Sequence[ScoreJob]) -> list:
        out: list = [None] * len(jobs)
        for instruction, idx in _grouped(jobs, lambda j: j.instruction).items():
            pairs = [p for i in idx for p in jobs[i].pairs]
            scores = np.asarray(model.score_pairs(pairs, instruction=instruction), dtype=np.float32)
            if scores.shape != (len(pairs),):
                raise QrankError(f"model returned {scores.shape} scores for {len(pairs)} pairs")
            start = 0
            for i in idx:
                part = scores[start : start + len(jobs[i].pairs)]
                start += len(jobs[i].pairs)
                out[i] = (
                    part
                    if np.isfinite(part).all()
                    else NonFiniteOutput("the model produced a non-finite score (NaN or inf) for this request")
                )
        return out

    return run


def embed_runner(model) -> Callable[[Sequence[EmbedJob]], list]:
    """A batch runner over ``model.embed_batch``: one float32 matrix (or an error) per job."""

    def run(jobs: Sequence[EmbedJob]) -> list:
        out: list = [None] * len(jobs)
        for (is_query, instruction, dim), idx in _grouped(jobs, lambda j: (j.is_query, j.instruction, j.dim)).items():
            texts = [t for i in idx for t in jobs[i].texts]
            vectors = np.asarray(
                model.embed_batch(texts, is_query=is_query, instruction=instruction, dim=dim), dtype=np.float32
            )
            if vectors.ndim != 2 or vectors.shape[0] != len(texts):
                raise QrankError(f"model returned an array of shape {vectors.shape} for {len(texts)} texts")
            start = 0
            for i in idx:
                part = vectors[start : start + len(jobs[i].texts)]
                start += len(jobs[i].texts)
                out[i] = (
                    part
                    if np.isfinite(part).all()
                    else NonFiniteOutput("the model produced non-finite values (NaN or inf) for this request")
                )
        return out

    return run
