"""What the server queues and what a model's worker thread runs: many requests → few model calls.

A request becomes a job at the door (:func:`score_job` / :func:`embed_job`, off the event loop): a model
that tokenizes locally encodes it there, once, and the job carries the :class:`~qrank.models.base.Encoded`
items and their exact token count; other models (remote, Ray, fakes) carry the texts and their
``count_tokens``. The worker runs encoded jobs of one batch as ONE ``score_encoded`` / ``embed_encoded``
call (the instruction is already in the tokens), text jobs as one call per group of equal options, then
cuts the answer back per request and checks each part on its own, so a NaN fails only its own request.

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

from ..models.base import Encoded, PairEncoder, TextEncoder, check_finite, check_scores, check_vectors
from .errors import NonFiniteOutput


@dataclass(frozen=True)
class ScoreJob:
    """The (query, document) pairs of one request, and their encoding when the door made one."""

    pairs: list[tuple[str, str]]
    instruction: str | None = None
    encoded: list[Encoded] | None = None
    # the request wants a calibrated model's raw scores too: the worker answers (scores, raw) of one pass
    raw: bool = False

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class EmbedJob:
    """The texts of one request, and their encoding when the door made one."""

    texts: list[str]
    is_query: bool = False
    instruction: str | None = None
    dim: int | None = None
    encoded: list[Encoded] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def _cut_at(max_length: int | None) -> dict:
    # passed on only when the door asks, so that a model whose encoder takes no max_length still serves the rest
    return {} if max_length is None else {"max_length": max_length}


def score_job(model, pairs: list[tuple[str, str]], instruction: str | None,
              known: Sequence[Encoded | None] | None = None, *, raw: bool = False,
              max_length: int | None = None) -> tuple[ScoreJob, list[int]]:
    """The job for one request and its exact token counts; the pairs are tokenized here, once
    (``known[i]``, when given, is pair i's encoding already made at the door, e.g. by laying documents out).
    ``raw``: the worker answers ``(scores, raw scores)`` when the model is calibrated. ``max_length`` is where
    the encoding cuts instead of the model's window: the door asks for one token more when it refuses over-long
    pairs, since a count cut at the window cannot tell a pair that fills it from one that was cut (a pair it
    accepts, at most the window, encodes the same either way)."""
    if isinstance(model, PairEncoder):
        known = list(known) if known is not None else [None] * len(pairs)
        todo = [i for i, e in enumerate(known) if e is None]
        fresh = iter(model.encode_pairs([pairs[i] for i in todo], instruction=instruction, **_cut_at(max_length))
                     if todo else [])
        encoded = [e if e is not None else next(fresh) for e in known]
        return ScoreJob(pairs, instruction, encoded, raw), [len(e) for e in encoded]
    counts = [int(n) for n in model.count_tokens(pairs, instruction=instruction)]
    return ScoreJob(pairs, instruction, raw=raw), counts


def embed_job(model, texts: list[str], *, is_query: bool, instruction: str | None,
              dim: int | None, max_length: int | None = None) -> tuple[EmbedJob, list[int]]:
    """The job for one request and its exact token counts; the texts are tokenized here, once, cut at
    ``max_length`` tokens when given (else at the model's window; see :func:`score_job`)."""
    if isinstance(model, TextEncoder):
        encoded = model.encode_texts(texts, is_query=is_query, instruction=instruction, **_cut_at(max_length))
        return EmbedJob(texts, is_query, instruction, dim, encoded), [len(e) for e in encoded]
    counts = model.count_tokens(texts, is_query=is_query, instruction=instruction)
    return EmbedJob(texts, is_query, instruction, dim), [int(n) for n in counts]


def _grouped(jobs: Sequence, key: Callable[[object], Hashable]) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(key(job), []).append(i)
    return groups


def _split(values: np.ndarray, jobs: Sequence, idx: list[int], out: list, raw: np.ndarray | None = None) -> None:
    """Each job's rows of one model answer, or its own NonFiniteOutput; a job that asked for ``raw`` gets the
    pair ``(rows, raw rows)`` when the model gave raw scores."""
    start = 0
    for i in idx:
        end = start + len(jobs[i])
        try:
            out[i] = check_finite(values[start:end], error=NonFiniteOutput, context=" for this request")
            if raw is not None and getattr(jobs[i], "raw", False):
                out[i] = (out[i], raw[start:end])
        except NonFiniteOutput as exc:
            out[i] = exc
        start = end


def score_runner(model) -> Callable[[Sequence[ScoreJob]], list]:
    """A batch runner over ``model``: one float32 array (or an error) per job."""

    def run(jobs: Sequence[ScoreJob]) -> list:
        out: list = [None] * len(jobs)
        groups = _grouped(jobs, lambda j: ("encoded",) if j.encoded is not None else ("text", j.instruction))
        for key, idx in groups.items():
            n = sum(len(jobs[i]) for i in idx)
            # a calibrated model gives its raw scores of the same pass when some job of the batch asked for them
            both = any(jobs[i].raw for i in idx)
            if key[0] == "encoded":
                encoded = [e for i in idx for e in jobs[i].encoded]
                both = both and hasattr(model, "score_encoded_and_raw")
                scores = model.score_encoded_and_raw(encoded) if both else model.score_encoded(encoded)
            else:
                pairs = [p for i in idx for p in jobs[i].pairs]
                both = both and hasattr(model, "score_and_raw")
                scores = (model.score_and_raw if both else model.score_pairs)(pairs, instruction=key[1])
            scores, raw = scores if both else (scores, None)
            _split(check_scores(scores, n), jobs, idx, out, None if raw is None else check_scores(raw, n))
        return out

    return run


def embed_runner(model) -> Callable[[Sequence[EmbedJob]], list]:
    """A batch runner over ``model``: one float32 matrix (or an error) per job."""

    def run(jobs: Sequence[EmbedJob]) -> list:
        out: list = [None] * len(jobs)

        def key(j):
            return ("encoded", j.dim) if j.encoded is not None else ("text", j.dim, j.is_query, j.instruction)

        for k, idx in _grouped(jobs, key).items():
            if k[0] == "encoded":
                vectors = model.embed_encoded([e for i in idx for e in jobs[i].encoded], dim=k[1])
            else:
                texts = [t for i in idx for t in jobs[i].texts]
                vectors = model.embed_batch(texts, is_query=k[2], instruction=k[3], dim=k[1])
            _split(check_vectors(vectors, sum(len(jobs[i]) for i in idx)), jobs, idx, out)
        return out

    return run
