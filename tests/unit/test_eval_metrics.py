"""Metrics and significance tests (computed by ranx) against values worked out by hand in this file."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qrank.errors import InvalidInput
from qrank.eval.metrics import compare_runs, evaluate_run, metric_names, run_from_ranking, top_k

pytest.importorskip("ranx")


def dcg(gains: list[float]) -> float:
    """Järvelin–Kekäläinen DCG with linear gains (trec_eval's and BEIR's nDCG)."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


# three queries over a handful of documents; each ranking is a list, best first
QRELS = {
    "q1": {"d1": 1, "d3": 1},
    "q2": {"d2": 1},
    "q3": {"d5": 1, "d6": 1},
}
NOISE = [f"n{i}" for i in range(10)]
RANKING = {
    "q1": ["d3", "d2", "d1", "d4"],  # relevant at ranks 1 and 3
    "q2": NOISE + ["d2"],  # the only relevant document at rank 11: outside every @10 cut-off
    "q3": ["d6", "d1"],  # one of two relevant documents found, at rank 1
}


def hand_values() -> dict[str, dict[str, float]]:
    return {
        "q1": {
            "ndcg@10": dcg([1, 0, 1, 0]) / dcg([1, 1]),
            "mrr@10": 1.0,
            "recall@100": 1.0,
            "map": (1 / 1 + 2 / 3) / 2,
        },
        "q2": {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 1.0, "map": (1 / 11) / 1},
        "q3": {"ndcg@10": dcg([1, 0]) / dcg([1, 1]), "mrr@10": 1.0, "recall@100": 0.5, "map": (1 / 1) / 2},
    }


def as_run(ranking):
    return run_from_ranking({q: [(d, 0.0) for d in docs] for q, docs in ranking.items()})


def test_metrics_match_hand_computed_values():
    names = metric_names(10, 100)
    assert names == ["ndcg@10", "recall@100", "mrr@10", "map"]
    got = evaluate_run(QRELS, as_run(RANKING), names)
    expected = hand_values()
    for m in names:
        for q in QRELS:
            assert got["per_query"][m][q] == pytest.approx(expected[q][m], abs=1e-9), (m, q)
        assert got["mean"][m] == pytest.approx(np.mean([expected[q][m] for q in QRELS]), abs=1e-9)
    # the numbers themselves, for a reader: q1 nDCG = (1 + 1/2) / (1 + 1/log2 3)
    assert got["per_query"]["ndcg@10"]["q1"] == pytest.approx(0.919720, abs=1e-6)


def test_graded_judgements_use_linear_gain():
    qrels = {"q": {"a": 2, "b": 1}}
    got = evaluate_run(qrels, as_run({"q": ["b", "a"]}), ["ndcg@10"])
    assert got["mean"]["ndcg@10"] == pytest.approx(dcg([1, 2]) / dcg([2, 1]), abs=1e-9)


def test_unanswered_queries_count_as_zero_and_unknown_ones_are_refused():
    got = evaluate_run(QRELS, as_run({"q1": RANKING["q1"]}), ["mrr@10"])
    assert got["per_query"]["mrr@10"] == {"q1": 1.0, "q2": 0.0, "q3": 0.0}
    with pytest.raises(InvalidInput) as err:
        evaluate_run(QRELS, as_run({"zz": ["d1"]}), ["mrr@10"])
    assert err.value.field == "run"


def test_run_order_is_the_systems_order_even_with_tied_scores():
    # equal raw scores would let ranx order documents as it likes; positions must win
    run = run_from_ranking({"q1": [("d4", 0.5), ("d1", 0.5), ("d3", 0.5)]})
    got = evaluate_run({"q1": {"d1": 1}}, run, ["mrr@10"])
    assert got["mean"]["mrr@10"] == pytest.approx(0.5)


def test_paired_t_test_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    qrels, a, b = {}, {}, {}
    for i in range(25):
        q = f"q{i}"
        qrels[q] = {f"rel{i}": 1}
        docs = [f"x{j}" for j in range(9)]
        # system a puts the relevant document at a random rank, system b usually a bit lower
        ra, rb = int(rng.integers(0, 6)), int(rng.integers(0, 9))
        a[q] = docs[:ra] + [f"rel{i}"] + docs[ra:]
        b[q] = docs[:rb] + [f"rel{i}"] + docs[rb:]
    out = compare_runs(qrels, {"a": as_run(a), "b": as_run(b)}, ["ndcg@10"], test="student")
    (pair,) = out["pairs"]
    per_a = [dcg([0] * a[q].index(f"rel{i}") + [1]) for i, q in enumerate(qrels)]
    per_b = [dcg([0] * b[q].index(f"rel{i}") + [1]) for i, q in enumerate(qrels)]
    assert pair["mean_a"] == pytest.approx(np.mean(per_a))
    assert pair["mean_b"] == pytest.approx(np.mean(per_b))
    assert pair["p_value"] == pytest.approx(stats.ttest_rel(per_a, per_b).pvalue, rel=1e-6)
    assert pair["significant"] == (pair["p_value"] < 0.05)
    wins = sum(x > y for x, y in zip(per_a, per_b, strict=False))
    ties = sum(x == y for x, y in zip(per_a, per_b, strict=False))
    assert (pair["wins"], pair["ties"], pair["losses"]) == (wins, ties, len(per_a) - wins - ties)


def test_randomization_test_and_bad_test_name():
    runs = {"a": as_run(RANKING), "b": as_run({q: list(reversed(d)) for q, d in RANKING.items()})}
    out = compare_runs(QRELS, runs, ["mrr@10"], test="fisher")
    assert 0.0 <= out["pairs"][0]["p_value"] <= 1.0
    assert compare_runs(QRELS, {"a": runs["a"]}, ["mrr@10"])["pairs"] == []
    with pytest.raises(InvalidInput) as err:
        compare_runs(QRELS, runs, ["mrr@10"], test="wilcoxon")
    assert err.value.field == "test"


def test_top_k_breaks_ties_by_id():
    assert list(top_k({"q": {"b": 1.0, "a": 1.0, "c": 2.0}}, 2)["q"]) == ["c", "a"]
