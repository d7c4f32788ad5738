"""The evaluation tab reads what ``qrank eval`` writes: reports made by the eval module's own writer."""

from __future__ import annotations

import json
import os
import time

import pytest

from qrank.ui import handlers
from qrank.ui.reports import find_reports, load_report

pytest.importorskip("matplotlib", reason="the eval extra (matplotlib) writes the plot")


def _result(ndcg_dense: float) -> dict:
    """A small evaluation result in the shape qrank.eval's runner hands to write_report."""
    systems = {
        "bm25": {"ndcg@10": 0.6617, "recall@100": 0.8759, "latency_p50_ms": 2.0, "latency_p99_ms": 4.0,
                 "throughput_qps": 400.0},
        "dense": {"ndcg@10": ndcg_dense, "recall@100": 0.925, "latency_p50_ms": 9.0, "latency_p99_ms": 15.0,
                  "throughput_qps": 100.0},
        "dense+rerank": {"ndcg@10": 0.7009, "recall@100": 0.925, "latency_p50_ms": 300.0, "latency_p99_ms": 420.0,
                         "throughput_qps": 3.0},
    }
    return {
        "config": {"embedder": "all-MiniLM-L6-v2", "reranker": "scifact-minilm-ce", "depth": 100, "k": 10},
        "dataset": {"name": "scifact", "source": "../shared/datasets/scifact", "documents": 5183, "queries": 300,
                    "judgements": 339},
        "metric_names": ["ndcg@10", "recall@100"],
        "systems": systems,
        "per_query": {name: {"ndcg@10": {"q1": 0.5}} for name in systems},
        "rankings": {name: {"q1": [("d1", 1.0)]} for name in systems},
        "sweep": {},
        "significance": {},
        "environment": {"device": "cpu", "cpu_count": 2},
    }


@pytest.fixture()
def reports(tmp_path):
    from qrank.eval.report import write_report

    root = tmp_path / "eval"
    old, new = root / "scifact-old", root / "nested" / "scifact-new"
    write_report(_result(0.6000), old)
    write_report(_result(0.6451), new)
    past = time.time() - 3600
    os.utime(old / "metrics.json", (past, past))
    return root, old, new


def test_newest_report_is_found_and_read(reports):
    root, old, new = reports
    assert find_reports(root) == [new, old]
    rep = load_report(new)
    metrics = json.loads((new / "metrics.json").read_text())
    assert rep.header[0] == "system" and rep.header[1:3] == ["ndcg@10", "recall@100"]
    assert [r[0] for r in rep.rows] == list(metrics)
    col = rep.header.index("ndcg@10")
    assert {r[0]: r[col] for r in rep.rows} == {k: round(v["ndcg@10"], 4) for k, v in metrics.items()}
    assert rep.plot == new / "quality_vs_latency.png" and rep.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Quality and cost" in rep.markdown and "![" not in rep.markdown  # the plot is shown as an image instead
    assert "scifact" in rep.summary and "scifact-minilm-ce" in rep.summary


def test_evaluation_handler_picks_newest_or_the_chosen_one(reports):
    root, old, new = reports
    view = handlers.evaluation(root)
    assert view.error is None and view.selected == str(new) and view.choices == [str(new), str(old)]
    dense = [r for r in view.report.rows if r[0] == "dense"][0]
    assert dense[1] == 0.6451
    chosen = handlers.evaluation(root, str(old))
    assert chosen.selected == str(old) and [r for r in chosen.report.rows if r[0] == "dense"][0][1] == 0.6


def test_no_report_and_broken_report(tmp_path):
    view = handlers.evaluation(tmp_path / "nothing-here")
    assert view.report is None and view.message.startswith("No evaluation report") and "qrank eval" in view.message
    broken = tmp_path / "eval" / "broken"
    broken.mkdir(parents=True)
    (broken / "metrics.json").write_text("{not json", encoding="utf-8")
    view = handlers.evaluation(tmp_path / "eval")
    assert view.error and view.error.startswith("report: cannot read") and "Traceback" not in view.error
