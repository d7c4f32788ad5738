"""Milvus Lite through the same Pipeline code as FAISS: same exact top-k, same deletes and filters."""

from __future__ import annotations

import numpy as np
import pytest
from index_fakes import BowModel, OverlapScorer, corpus, milvus_lite_or_skip

from qrank import Embedder, Reranker, Settings
from qrank.errors import InvalidInput
from qrank.pipeline import Pipeline

pytest.importorskip("faiss")


@pytest.fixture
def pair(tmp_path):
    milvus_lite_or_skip(tmp_path)
    settings = Settings(home=tmp_path / "home", index={"chunk_tokens": 16, "chunk_overlap": 3})
    docs = corpus(60) + [
        {"id": 'q"uote', "text": "an id with a quote in it about sourdough starters", "metadata": {"topic": 1}}
    ]
    out = {}
    for backend in ("faiss", "milvus"):
        p = Pipeline.open(f"c-{backend}", embedder=Embedder(BowModel()), reranker=Reranker(OverlapScorer()),
                          settings=settings, backend=backend)
        p.add(docs, progress=False)
        out[backend] = p
    return out


def same(a, b, score="dense_score"):
    """Equal scores in order, and equal ids wherever the order is not a tie (the fake's bag-of-words
    vectors give many passages exactly the same score, which each engine may order differently)."""
    sa, sb = [getattr(h, score) for h in a], [getattr(h, score) for h in b]
    np.testing.assert_allclose(sa, sb, atol=1e-5)
    assert len(a) == len(b) > 0
    untied = [i for i, s in enumerate(sa) if sum(abs(s - t) < 1e-5 for t in sa) == 1 and s > sa[-1] + 1e-5]
    assert [a[i].id for i in untied] == [b[i].id for i in untied]


QUERIES = ["rotate encryption keys", "sourdough starter", "bicycle brakes repair step 7", "green tea"]


def test_exact_top_k_matches(pair):
    f, m = pair["faiss"], pair["milvus"]
    assert m.info()["backend"] == "milvus" and m.info()["count"] == f.info()["count"] == 61
    assert m.info()["passages"] == f.info()["passages"] > 61  # chunked: several passages per document
    for q in QUERIES:
        same(f.search(q, k=10, rerank=False), m.search(q, k=10, rerank=False))
        same(f.search(q, k=5, filter={"topic": [1, 2]}, rerank=False),
             m.search(q, k=5, filter={"topic": [1, 2]}, rerank=False))
        # reranking and fusion start from the first stage: compare where its candidates have no ties
        same(f.search(q, k=3, candidates=4), m.search(q, k=3, candidates=4), "rerank_score")
        same(f.search(q, k=4, candidates=4, hybrid=True, filter={"even": True}),
             m.search(q, k=4, candidates=4, hybrid=True, filter={"even": True}), "fusion_score")


def test_delete_and_replace_match(pair):
    for p in pair.values():
        assert p.delete(["doc1", "doc2", "q\"uote", "missing"]) == 3
        p.add([{"id": "doc3", "text": "replaced: sourdough bread with a long cold proof"}], progress=False)
    f, m = pair["faiss"], pair["milvus"]
    assert f.info()["count"] == m.info()["count"] == 58
    for q in QUERIES:
        same(f.search(q, k=8, rerank=False), m.search(q, k=8, rerank=False))
    hit = m.search("sourdough cold proof", k=1)[0]
    assert hit.id == "doc3" and hit.text.startswith("replaced")


def test_milvus_reopens_and_checks_dimension(pair, tmp_path):
    m = pair["milvus"]
    settings = m.settings
    m.close()
    again = Pipeline.open("c-milvus", embedder=Embedder(BowModel()), settings=settings)
    assert again.info()["count"] == 61
    with pytest.raises(InvalidInput) as e:
        Pipeline.open("c-milvus", embedder=Embedder(BowModel(dim=32)), settings=settings)
    assert e.value.field == "embedder"
