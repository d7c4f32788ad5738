"""The search tab over a real collection (SciFact abstracts, MiniLM, the real cross-encoder): each column
checked against an independent ranking — bm25s run directly, exact cosine with the embedder, the
cross-encoder's own scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qrank import Settings
from qrank.ui import handlers
from qrank.ui.backend import LocalBackend

pytest.importorskip("faiss", reason="the index extra is not installed")
bm25s = pytest.importorskip("bm25s", reason="the index extra is not installed")

N_DOCS = 40
K = 5


def _indexed(doc: dict) -> str:
    return f"{doc['title']} {doc['text']}" if doc["title"] else doc["text"]


@pytest.fixture(scope="module")
def corpus(scifact_dir):
    """The documents judged for the first test queries plus the first others; abstracts cut to 60 words
    so that each is one passage (max-passage then equals whole-document scoring)."""
    qrels = [line.split("\t") for line in (scifact_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    wanted = {row[1] for row in qrels[:10]}
    docs = []
    with open(scifact_dir / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["_id"] in wanted or len(docs) < N_DOCS - len(wanted):
                docs.append({"id": d["_id"], "title": d["title"], "text": " ".join(d["text"].split()[:60])})
            if len(docs) >= N_DOCS and wanted <= {x["id"] for x in docs}:
                break
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in open(scifact_dir / "queries.jsonl", encoding="utf-8")
    }
    # of those queries, the one sharing terms with the most documents, so that the BM25 column is full
    ref = _bm25_reference([_indexed(d) for d in docs])
    qid, did = max(
        ((q, d) for q, d, _ in qrels[:10]), key=lambda qd: int((ref.get_scores(_tokens(queries[qd[0]])) > 0).sum())
    )
    return docs, queries[qid], did


def _bm25_reference(texts):
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    return retriever


def _tokens(query: str) -> list[str]:
    return bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]


@pytest.fixture(scope="module")
def backend(tmp_path_factory, corpus, minilm, minilm_dir, ce):
    from qrank.pipeline import Pipeline

    docs, _, _ = corpus
    settings = Settings(home=tmp_path_factory.mktemp("ui-search-home"), cache={"enabled": False})
    with Pipeline.open("sf", embedder=str(minilm_dir), settings=settings) as p:
        p.add(docs, progress=False)
    b = LocalBackend(settings, rerankers={"ce": ce}, embedders={"minilm": str(minilm_dir)})
    yield b
    b.refresh()


def test_three_columns_match_independent_rankings(backend, corpus, minilm, ce):
    docs, query, relevant = corpus
    view = handlers.search(backend, collection="sf", query=query, k=K, hybrid=False, reranker="ce")
    assert view.error is None and view.first_stage == "dense"
    texts = [_indexed(d) for d in docs]
    ids = [d["id"] for d in docs]

    bm25 = np.asarray(_bm25_reference(texts).get_scores(_tokens(query)))
    bm25_order = [i for i in np.argsort(-bm25, kind="stable")[:K] if bm25[i] > 0]  # only documents sharing a term
    assert len(bm25_order) == K
    assert [r.doc_id for r in view.columns["bm25"]] == [ids[i] for i in bm25_order]
    assert [r.score for r in view.columns["bm25"]] == pytest.approx(bm25[bm25_order].tolist(), rel=1e-4)

    cos = minilm.embed(texts) @ minilm.embed(query, is_query=True)
    dense_order = np.argsort(-cos, kind="stable")
    assert [r.doc_id for r in view.columns["first_stage"]] == [ids[i] for i in dense_order[:K]]
    assert [r.score for r in view.columns["first_stage"]] == pytest.approx(cos[dense_order[:K]].tolist(), abs=1e-4)

    ce_scores = np.asarray(ce.score(query, texts))
    ce_order = np.argsort(-ce_scores, kind="stable")
    assert [r.doc_id for r in view.columns["reranked"]] == [ids[i] for i in ce_order[:K]]
    assert [r.score for r in view.columns["reranked"]] == pytest.approx(ce_scores[ce_order[:K]].tolist(), abs=1e-4)
    dense_rank = {ids[i]: n for n, i in enumerate(dense_order, 1)}
    for row in view.columns["reranked"]:
        assert row.first_stage_rank == dense_rank[row.doc_id]
        assert row.moved == dense_rank[row.doc_id] - row.rank
    assert relevant in [r.doc_id for r in view.columns["reranked"]]
    assert set(view.latency_ms) == {"bm25", "first_stage", "reranked"}
    assert view.notes["reranked"] == f"{N_DOCS} pairs scored"  # one passage per document, no cache here
    # the collection's own embedder was the UI's copy: loaded once, by the backend
    assert ("embedder", "minilm") in backend._loaded


def test_hybrid_toggle_uses_the_fused_first_stage(backend, corpus):
    from qrank.pipeline import Pipeline

    _, query, _ = corpus
    view = handlers.search(backend, collection="sf", query=query, k=K, hybrid=True, reranker="ce")
    assert view.error is None and view.first_stage == "hybrid"
    with Pipeline.open("sf", settings=backend.settings, create=False) as p:
        fused = p.search(query, k=K, rerank=False, hybrid=True)
    assert [r.doc_id for r in view.columns["first_stage"]] == [h.id for h in fused]
    assert [r.score for r in view.columns["first_stage"]] == pytest.approx([h.fusion_score for h in fused])


def test_search_errors_and_no_reranker(backend, corpus):
    _, query, _ = corpus
    view = handlers.search(backend, collection="nope", query=query)
    assert view.error and "nope" in view.error and "sf" in view.error  # names the known collections
    assert "choose a collection" in handlers.search(backend, collection=None, query=query).error
    assert "query" in handlers.search(backend, collection="sf", query=" ").error
    plain = handlers.search(backend, collection="sf", query=query, k=3, reranker=None)
    assert (
        plain.error is None and plain.columns["reranked"] == [] and plain.notes["reranked"] == "no reranker configured"
    )
    assert backend.collection_names() == ["sf"]


def test_search_binding_renders_three_tables(backend, corpus):
    from qrank.ui.layout import Bindings

    _, query, _ = corpus
    cols = Bindings(backend).search("sf", query, K, 0, False, "ce", None)
    assert len(cols) == 3
    assert 'id="search-bm25"' in cols[0] and 'id="search-first_stage"' in cols[1] and 'id="search-reranked"' in cols[2]
    assert "Embedding only + rerank" in cols[2] and "moved" in cols[2]


def test_candidates_bound_what_the_reranker_sees(backend, corpus, minilm, ce):
    docs, query, _ = corpus
    view = handlers.search(backend, collection="sf", query=query, k=K, candidates=8, reranker="ce")
    assert view.error is None
    texts = [_indexed(d) for d in docs]
    ids = [d["id"] for d in docs]
    top8 = np.argsort(-(minilm.embed(texts) @ minilm.embed(query, is_query=True)), kind="stable")[:8]
    ce_top8 = np.asarray(ce.score(query, [texts[i] for i in top8]))
    expected = [ids[top8[j]] for j in np.argsort(-ce_top8, kind="stable")[:K]]
    assert [r.doc_id for r in view.columns["reranked"]] == expected
    assert all(1 <= r.first_stage_rank <= 8 for r in view.columns["reranked"])
    bad = handlers.search(backend, collection="sf", query=query, candidates=-3)
    assert bad.error.startswith("candidates:")
