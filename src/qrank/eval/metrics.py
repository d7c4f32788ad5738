"""Retrieval metrics and paired significance tests, computed by ranx (never by hand here).

A *run* is ``{query_id: {doc_id: score}}`` (higher score = better rank); *qrels* are
``{query_id: {doc_id: grade}}``. Queries a run does not answer count as zero.

>>> qrels = {"q1": {"d1": 1}}
>>> run = {"q1": {"d2": 0.9, "d1": 0.8}}
>>> evaluate_run(qrels, run, ["mrr@10"])["mean"]["mrr@10"]
0.5
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence

from ..errors import InvalidInput, require

log = logging.getLogger(__name__)

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def metric_names(k: int = 10, depth: int = 100) -> list[str]:
    """The metrics ``qrank eval`` reports: nDCG@k, Recall@depth, MRR@k and MAP (over the whole run).

    >>> metric_names()
    ['ndcg@10', 'recall@100', 'mrr@10', 'map']
    """
    return [f"ndcg@{k}", f"recall@{depth}", f"mrr@{k}", "map"]


def _ranx():
    ranx = require("ranx", "eval")
    # ranx's numba kernels warn about an unsigned→signed cast on every call; it is harmless here
    warnings.filterwarnings("ignore", message=".*unsafe cast from uint64 to int64.*")
    return ranx


def _to_ranx(qrels: Qrels, runs: Mapping[str, Run]):
    ranx = _ranx()
    if not qrels:
        raise InvalidInput("qrels", "no judged queries")
    # ranx drops zero-grade judgements itself; it needs every qrels query present in the run
    q = ranx.Qrels({qid: {d: int(g) for d, g in rels.items()} for qid, rels in qrels.items()})
    out = {}
    for name, run in runs.items():
        unknown = [qid for qid in run if qid not in qrels]
        if unknown:
            raise InvalidInput("run", f"system {name!r} answers unjudged queries (e.g. {unknown[0]!r})")
        full = {qid: {d: float(s) for d, s in run.get(qid, {}).items()} for qid in qrels}
        empty = [qid for qid, hits in full.items() if not hits]
        # ranx cannot hold an empty ranking; a sentinel id that no judgement names scores zero everywhere
        for qid in empty:
            full[qid] = {"\x00none": 0.0}
        out[name] = ranx.Run(full, name=name)
    return q, out


def evaluate_run(qrels: Qrels, run: Run, metrics: Sequence[str]) -> dict:
    """Mean and per-query values of ``metrics`` for one run.

    Returns ``{"mean": {metric: float}, "per_query": {metric: {query_id: float}}}``.
    """
    ranx = _ranx()
    q, runs = _to_ranx(qrels, {"run": run})
    r = runs["run"]
    # _to_ranx gave the run every judged query, so ranx saves per-query values in this very Run
    ranx.evaluate(q, r, list(metrics), return_mean=False, save_results_in_run=True)
    per_query = {m: {qid: float(v) for qid, v in r.scores[m].items()} for m in metrics}
    mean = {m: float(sum(vals.values()) / len(vals)) for m, vals in per_query.items()}
    return {"mean": mean, "per_query": per_query}


def compare_runs(
    qrels: Qrels, runs: Mapping[str, Run], metrics: Sequence[str], *, test: str = "student", max_p: float = 0.05
) -> dict:
    """Paired significance tests between every two systems (ranx.compare).

    ``test`` is ``"student"`` (two-sided paired t-test) or ``"fisher"`` (randomization test).
    Returns ``{"test", "max_p", "pairs": [{"a", "b", "metric", "mean_a", "mean_b", "p_value",
    "significant", "wins", "ties", "losses"}]}`` where wins/ties/losses count queries where ``a``
    beats, ties or loses to ``b``; ``p_value`` is None where the test is undefined (identical scores).
    """
    if test not in ("student", "fisher"):
        raise InvalidInput("test", f"must be 'student' or 'fisher', got {test!r}")
    if len(runs) < 2:
        return {"test": test, "max_p": max_p, "pairs": []}
    ranx = _ranx()
    q, rr = _to_ranx(qrels, runs)
    for r in rr.values():
        r.make_comparable(q)
    report = ranx.compare(
        q, list(rr.values()), list(metrics), stat_test=test, max_p=max_p, rounding_digits=4, make_comparable=True
    )
    d = report.to_dict()
    names = list(rr)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for m in metrics:
                p = float(d[a]["comparisons"][b][m])
                wtl = d[a]["win_tie_loss"][b][m]
                pairs.append(
                    {
                        "a": a,
                        "b": b,
                        "metric": m,
                        "mean_a": float(d[a]["scores"][m]),
                        "mean_b": float(d[b]["scores"][m]),
                        # two systems with identical per-query scores make the t-test 0/0 (NaN): no p-value
                        "p_value": p if math.isfinite(p) else None,
                        "significant": bool(p < max_p),
                        "wins": int(wtl["W"]),
                        "ties": int(wtl["T"]),
                        "losses": int(wtl["L"]),
                    }
                )
    return {"test": test, "max_p": max_p, "pairs": pairs}


def top_k(run: Run, k: int) -> dict[str, dict[str, float]]:
    """Each query's ``k`` best documents (ties broken by document id, so cuts are reproducible).

    >>> top_k({"q": {"a": 0.1, "b": 0.9, "c": 0.5}}, 2)
    {'q': {'b': 0.9, 'c': 0.5}}
    """
    out = {}
    for qid, hits in run.items():
        best = sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        out[qid] = dict(best)
    return out


def run_from_ranking(ranking: Mapping[str, Sequence[Sequence]]) -> dict[str, dict[str, float]]:
    """A ranx-ready run from ordered ``{query_id: [(doc_id, score), ...]}`` lists.

    Scores become ``len - position`` so that ranx sees exactly the systems' order, whatever ties or
    score scales (cosine, BM25, probabilities) the systems produced.

    >>> run_from_ranking({"q": [("b", 0.9), ("a", 0.9)]})
    {'q': {'b': 2.0, 'a': 1.0}}
    """
    return {qid: {str(d): float(len(hits) - i) for i, (d, *_) in enumerate(hits)} for qid, hits in ranking.items()}
