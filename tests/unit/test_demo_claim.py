"""The demo's judged SciFact claim (issue 16.9): the hits it marks ✓ are exactly the ones SciFact's test
judgements call relevant, read here independently from ``qrels/test.tsv``."""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCIFACT = Path(os.environ.get("QRANK_SHARED_DIR", ROOT.parent / "shared")) / "datasets" / "scifact"


def _demo():
    spec = importlib.util.spec_from_file_location("scifact_search", ROOT / "examples" / "scifact_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _qrels() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with open(SCIFACT / "qrels" / "test.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0:
                out.setdefault(row["query-id"], set()).add(row["corpus-id"])
    return out


@pytest.fixture(scope="module")
def demo():
    if not (SCIFACT / "qrels" / "test.tsv").is_file():
        pytest.skip(f"the shared SciFact data set is not at {SCIFACT}")
    return _demo()


def test_demo_claim_is_judged_and_the_script_uses_it(demo):
    qrels = _qrels()
    claim, relevant = demo.judged_claim(SCIFACT, demo.DEMO_CLAIM)
    assert relevant == qrels[demo.DEMO_CLAIM] and relevant
    assert claim == "Vitamin D deficiency is unrelated to birth weight."
    assert f"--claim {demo.DEMO_CLAIM}" in (ROOT / "scripts" / "index_demo.sh").read_text()


def test_marks_are_exactly_the_judged_relevant_hits(demo):
    qrels = _qrels()
    relevant = qrels[demo.DEMO_CLAIM]
    others = sorted(d for ds in qrels.values() for d in ds if d not in relevant)[:7]
    hit_ids = [others[0], *sorted(relevant), *others[1:]]
    _, judged = demo.judged_claim(SCIFACT, demo.DEMO_CLAIM)
    marks = demo.relevance_marks(hit_ids, judged)
    assert [h for h, m in zip(hit_ids, marks) if m] == sorted(relevant)
    assert demo.relevance_marks(others, judged) == [False] * len(others)


def test_an_unjudged_claim_is_a_clear_error(demo):
    from qrank.errors import InvalidInput

    with pytest.raises(InvalidInput, match="claim"):
        demo.judged_claim(SCIFACT, "no-such-claim")


def test_search_judged_reports_first_stage_ranks():
    """``was`` is each candidate's rank in the dense list the reranker started from."""
    demo = _demo()

    class Hit:
        def __init__(self, id):
            self.id = id

    class FakePipeline:
        def search(self, query, k, candidates=None, rerank=None):
            order = ["a", "b", "c"] if rerank is False else ["c", "a"]
            return [Hit(i) for i in order[:k]]

    hits, was = demo.search_judged(FakePipeline(), "q", k=2, candidates=3)
    assert [h.id for h in hits] == ["c", "a"] and was == {"a": 1, "b": 2, "c": 3}
