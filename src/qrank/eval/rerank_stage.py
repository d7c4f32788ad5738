"""The ``+rerank`` stage of an evaluation, kept in the result store: reranking timed at ``depth`` and at each
sweep depth, the untimed scores to the deepest depth, a long-document policy's coverage, what of it a run
still has to compute, and the depth sweep's points.

:mod:`~qrank.eval.stages` does each part one query at a time; :class:`RerankStage` keys the parts in the
:class:`~qrank.eval.store.ResultStore` (under an identity :class:`~qrank.eval.runner.Evaluation` gives), so a
repeated or interrupted run redoes only what is missing, and loads the reranker only then.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..cache import Cache, cache_key
from . import stages
from .config import EvalConfig
from .cost import PeakMemory, latency_summary
from .data import Dataset
from .metrics import evaluate_run, run_from_ranking
from .store import ResultStore


class RerankStage:
    """The ``+rerank`` systems of one evaluation of ``ds`` under ``config``, their results kept in ``store``.

    ``open_cache()`` returns qrank's embedding/score cache (or None); it is called only when a pair must be
    scored, so a fully cached run opens nothing.
    """

    def __init__(
        self,
        ds: Dataset,
        config: EvalConfig,
        store: ResultStore,
        open_cache: Callable[[], Cache | None],
        *,
        progress: bool = True,
    ) -> None:
        self.ds = ds
        self.config = config
        self.store = store
        self.open_cache = open_cache
        self.progress = progress

    def run(self, first: dict, ident: dict, load_reranker: Callable, name: str) -> tuple[dict, bool]:
        """Timings and scores of the system ``ident`` names, reranking ``first`` (a first stage's result), and
        whether all of it came from the store. ``load_reranker()`` returns the reranker (raw scores)."""
        c = self.config
        # loaded only when a timing or score is not cached: a cached re-run loads no model
        reranker = _Lazy(load_reranker)
        known: dict = {}
        peaks: list[float] = [first["peak_rss_mb"]]
        timed_q, sweep_q = self._timed_queries()
        all_cached = True

        def timings(depth: int, qids: list[str], label: str) -> dict[str, float]:
            nonlocal all_cached
            key = _timing_key(ident, depth, qids)
            saved = self.store.get(key) or {}
            if saved.get("complete"):
                peaks.append(saved.get("peak_rss_mb", 0.0))
                return saved["latency_ms"]
            all_cached = False
            with PeakMemory() as mem:
                latency = stages.time_reranking(
                    self.ds,
                    first,
                    reranker,
                    self.open_cache(),
                    depth,
                    qids,
                    done=saved.get("latency_ms"),
                    known=known,
                    checkpoint=lambda lat: self.store.put(key, {"latency_ms": lat, "complete": False}),
                    desc=label,
                    progress=self.progress,
                )
            peaks.append(mem.peak_mb)
            self.store.put(
                key,
                {
                    "latency_ms": latency,
                    "complete": True,
                    "peak_rss_mb": mem.peak_mb,
                    "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                },
            )
            return latency

        latency = timings(c.depth, timed_q, name)
        sweep_latency = {str(c.depth): {q: latency[q] for q in sweep_q if q in latency}}
        for d in c.sweep:
            if d != c.depth:
                sweep_latency[str(d)] = timings(d, sweep_q, f"{name} sweep")
        key = {**ident, "scores_depth": c.retrieve_depth}
        saved = self.store.get(key)
        scored = 0
        if saved is None:
            # untimed: pairs measured above, or cached by any earlier run, cost nothing
            with PeakMemory() as mem:
                scores, scored = stages.rerank_scores(
                    self.ds, first, reranker, self.open_cache(), c.retrieve_depth, known=known, desc=name,
                    progress=self.progress,
                )
            peaks.append(mem.peak_mb)
            saved = {"scores": scores}
            self.store.put(key, saved)
        out = {
            "latency_ms": latency,
            "sweep_latency_ms": sweep_latency,
            "scores": saved["scores"],
            "peak_rss_mb": max(peaks),
            "pairs_scored": scored,
        }
        return out, all_cached and scored == 0

    def coverage(self, first: dict, policy, ident: dict, load_reranker: Callable) -> dict:
        """Pairs ``policy`` scores for the top-``depth`` candidates, and the share of their tokens it shows the
        model (cached: it needs only the tokenizer, but a cached run loads no model)."""
        key = {**ident, "coverage_depth": self.config.depth}
        saved = self.store.get(key)
        if saved is None:
            from ..long_documents import coverage

            text_of = dict(zip(self.ds.doc_ids, self.ds.doc_texts, strict=False))
            pairs = [(self.ds.queries[q], text_of[d]) for q in self.ds.queries
                     for d, _ in first["ranking"][q][: self.config.depth]]
            reranker = load_reranker()
            n, seen, total = coverage(reranker.model, pairs, policy,
                                      instruction=reranker.instruction or reranker.info.default_instruction)
            saved = {"documents": len(pairs), "pairs": n, "tokens_seen": seen, "tokens": total,
                     "coverage": seen / total if total else 1.0}
            self.store.put(key, saved)
        return saved

    def pending(self, ident: dict) -> tuple[int, int]:
        """Pairs :meth:`run` would score for the system ``ident`` names, read from the store: timed, then
        untimed (upper bounds, since qrank's score cache may hold some)."""
        c = self.config
        depth_cap = min(c.retrieve_depth, len(self.ds.doc_ids))
        timed_q, sweep_q = self._timed_queries()
        timed = untimed = 0
        reach = dict.fromkeys(self.ds.queries, 0)  # per query: candidates scored by the timed passes
        for d, qids in [(c.depth, timed_q), *((d, sweep_q) for d in c.sweep if d != c.depth)]:
            saved = self.store.get(_timing_key(ident, d, qids)) or {}
            if not saved.get("complete"):
                timed += min(d, depth_cap) * (len(qids) - len(saved.get("latency_ms") or {}))
            for q in qids:
                reach[q] = max(reach[q], min(d, depth_cap))
        if self.store.get({**ident, "scores_depth": c.retrieve_depth}) is None:
            untimed += sum(depth_cap - r for r in reach.values())
        return timed, untimed

    def sweep(self, first: dict, rr: dict, names: list[str]) -> list[dict]:
        """Quality and latency of reranking ``first`` at each sweep depth, from :meth:`run`'s result ``rr``."""
        c, ds = self.config, self.ds
        points = []
        for d in c.sweep:
            if str(d) not in rr["sweep_latency_ms"]:
                continue
            ranking = {q: stages.reranked_ranking(first["ranking"][q], rr["scores"][q], d, c.depth) for q in ds.queries}
            mean = evaluate_run(ds.qrels, run_from_ranking(ranking), names)["mean"]
            timed = rr["sweep_latency_ms"][str(d)]
            lat = latency_summary([first["latency_ms"][q] + ms for q, ms in timed.items()])
            points.append(
                {
                    "depth": d,
                    **mean,
                    "latency_p50_ms": lat["latency_p50_ms"],
                    "latency_p99_ms": lat["latency_p99_ms"],
                    "latency_queries": len(timed),
                }
            )
        return points

    def _timed_queries(self) -> tuple[list[str], list[str]]:
        """The queries timed at ``depth`` and those timed at each other sweep depth."""
        qids = list(self.ds.queries)
        return qids[: self.config.latency_queries], qids[: self.config.sweep_queries]


def _timing_key(ident: dict, depth: int, qids: list[str]) -> dict:
    return {**ident, "timing_depth": depth, "qids": cache_key(qids).hex()}


class _Lazy:
    """A value built on first attribute access (the reranker of a stage that may be all cached).

    >>> made = []
    >>> lazy = _Lazy(lambda: made.append(1) or "text")
    >>> len(made)
    0
    >>> lazy.upper(), len(made)
    ('TEXT', 1)
    """

    def __init__(self, build) -> None:
        self._build, self._value = build, None

    def resolve(self):
        """The value, built on first use (what a layer that must wrap the real object is given)."""
        if self._value is None:
            self._value = self._build()
        return self._value

    def __getattr__(self, name):
        return getattr(self.resolve(), name)
