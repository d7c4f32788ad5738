"""min_score in Pipeline.search: the rerank score against the fakes' own score function, computed by hand."""

from __future__ import annotations

import pytest
from index_fakes import BowModel, OverlapScorer, corpus, overlap_score

from qrank import Embedder, Reranker, Settings
from qrank.errors import InvalidInput
from qrank.pipeline import Pipeline

pytest.importorskip("faiss")
pytest.importorskip("bm25s")


def test_search_min_score_filters_on_the_rerank_score(tmp_path):
    docs = corpus(30)
    p = Pipeline.open("docs", embedder=Embedder(BowModel()), reranker=Reranker(OverlapScorer()),
                      settings=Settings(home=tmp_path))
    p.add(docs)
    query = "how to brew green tea"
    every = p.search(query, k=30, candidates=30)
    assert len({h.rerank_score for h in every}) > 2
    cut = sorted(h.rerank_score for h in every)[len(every) // 2]
    kept = p.search(query, k=30, candidates=30, min_score=cut)
    assert [h.id for h in kept] == [h.id for h in every if h.rerank_score >= cut]
    assert all(h.rerank_score == pytest.approx(overlap_score(query, f"{h.title} {h.text}" if h.title else h.text))
               for h in kept)
    assert [h.rank for h in kept] == list(range(1, len(kept) + 1))
    assert len(p.search(query, k=1, candidates=30, min_score=cut)) == 1
    with pytest.raises(InvalidInput) as err:
        p.search(query, min_score=float("nan"))
    assert err.value.field == "min_score"
    with pytest.raises(InvalidInput) as err:
        p.search(query, rerank=False, min_score=0.1)
    assert err.value.field == "min_score"
    p.close()
