"""Pipeline behaviour with deterministic fake models, checked against independent computations
(numpy brute force over the fakes' vectors, bm25s run directly, RRF by hand)."""

from __future__ import annotations

import json
import re
import sqlite3

import numpy as np
import pytest
from index_fakes import BowModel, OverlapScorer, bow_vectors, corpus, overlap_score

from qrank import Embedder, Reranker, Settings
from qrank.errors import CollectionNotFound, InvalidInput
from qrank.index.chunking import chunk_spans
from qrank.pipeline import Pipeline, delete_collection, list_collections

pytest.importorskip("faiss")
pytest.importorskip("bm25s")


def indexed(doc: dict) -> str:
    return f"{doc['title']} {doc['text']}" if doc.get("title") else doc["text"]


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path)


def open_fake(settings, name="docs", **kw):
    model = kw.pop("model", None) or BowModel()
    scorer = kw.pop("scorer", None) or OverlapScorer()
    p = Pipeline.open(name, embedder=Embedder(model), reranker=Reranker(scorer), settings=settings, **kw)
    return p, model, scorer


PLANTED = {"id": "planted", "title": "Field notes", "text": "zanzibar quokka migration patterns observed at dawn",
           "metadata": {"topic": 99}}


def test_search_finds_planted_document_and_orders_like_brute_force(settings):
    docs = corpus(40) + [PLANTED]
    p, _, _ = open_fake(settings)
    p.add(docs)
    hits = p.search("quokka migration in zanzibar", k=5)
    assert hits[0].id == "planted" and hits[0].rank == 1
    assert hits[0].text == PLANTED["text"] and hits[0].title == "Field notes" and hits[0].metadata == {"topic": 99}
    assert hits[0].rerank_score == pytest.approx(overlap_score("quokka migration in zanzibar", indexed(PLANTED)))
    # dense stage alone: the same order as numpy over the fake vectors
    dense = p.search("how to brew green tea", k=8, rerank=False)
    ref = bow_vectors([indexed(d) for d in docs]) @ bow_vectors(["how to brew green tea"])[0]
    by_id = {d["id"]: float(r) for d, r in zip(docs, ref)}
    # same scores in the same order (documents with equal scores may swap places)
    np.testing.assert_allclose([h.dense_score for h in dense], np.sort(ref)[::-1][:8], rtol=1e-5)
    np.testing.assert_allclose([h.dense_score for h in dense], [by_id[h.id] for h in dense], rtol=1e-5)
    assert all(h.rerank_score is None and h.score == h.dense_score for h in dense)


def test_max_passage_scores(settings):
    settings = settings.model_copy(update={"index": type(settings.index).model_validate(
        {**settings.index.model_dump(), "chunk_tokens": 16, "chunk_overlap": 2})})
    filler = " ".join(f"filler{i}" for i in range(60))
    long_doc = {"id": "long", "text": f"{filler} rotate encryption keys {filler.replace('filler', 'pad')}"}
    p, _, _ = open_fake(settings)
    p.add(corpus(16) + [long_doc])
    q = "rotate encryption keys"
    hits = {h.id: h for h in p.search(q, k=20, candidates=20)}
    text = long_doc["text"]
    spans = chunk_spans(text, [m.span() for m in re.finditer(r"\S+", text)], 16, 2)
    passages = [text[s:e] for s, e, _ in spans]
    assert len(passages) > 4  # more than index.rerank_passages: the 4 nearest passages are reranked
    sims = bow_vectors(passages) @ bow_vectors([q])[0]
    dense_ref = float(np.max(sims))
    rerank_ref = max(overlap_score(q, passages[i]) for i in np.argsort(-sims)[:4])
    h = hits["long"]
    assert h.dense_score == pytest.approx(dense_ref, rel=1e-5)
    assert h.rerank_score == pytest.approx(rerank_ref, rel=1e-6)
    assert "rotate encryption keys" in h.passage and h.text == text
    assert len(p.collection.store.get(["long"])["long"]) == len(passages)


def test_hybrid_equals_hand_computed_rrf(settings):
    import bm25s

    # documents of distinct random words, so that neither ranking has ties to order arbitrarily
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(80)]
    docs = [
        {"id": f"r{i}", "text": " ".join(rng.choice(vocab, size=int(rng.integers(4, 14))).tolist())} for i in range(40)
    ]
    p, _, _ = open_fake(settings)
    p.add(docs)
    q, n = "w1 w2 w3 w5 w8 w13", 10
    texts = [indexed(d) for d in docs]
    dense = bow_vectors(texts) @ bow_vectors([q])[0]
    assert len(set(np.round(np.sort(dense)[::-1][: n + 1], 6))) == n + 1
    dense_rank = [docs[i]["id"] for i in np.argsort(-dense, kind="stable")[:n]]
    bm = bm25s.BM25()
    bm.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    scores = bm.get_scores([t for t in bm25s.tokenize([q], stopwords="en", return_ids=False, show_progress=False)[0]])
    bm_rank = [docs[i]["id"] for i in np.argsort(-scores, kind="stable")[:n] if scores[i] > 0]
    top = np.sort(scores)[::-1][: n + 1]
    assert len(set(np.round(top[top > 0], 6))) == len(top[top > 0])
    fused: dict[str, float] = {}
    for ranking in (dense_rank, bm_rank):
        for r, d in enumerate(ranking, 1):
            fused[d] = fused.get(d, 0) + 1 / (60 + r)
    expected = sorted(fused, key=lambda d: -fused[d])[:n]
    hits = p.search(q, k=n, candidates=n, hybrid=True, rerank=False)
    assert [h.id for h in hits] == expected
    assert [h.fusion_score for h in hits] == pytest.approx([fused[d] for d in expected])
    assert len(set(dense_rank) ^ set(bm_rank)) > 0  # the fusion had something to do
    assert all(h.bm25_score == pytest.approx(float(scores[int(h.id[1:])])) for h in hits if h.bm25_score is not None)
    # BM25 alone, as the UI's first column shows it: bm25s's own ranking and scores
    lexical = p.lexical_search(q, k=n)
    assert [h.id for h in lexical] == bm_rank and [h.rank for h in lexical] == list(range(1, len(bm_rank) + 1))
    assert [h.score for h in lexical] == pytest.approx([float(scores[int(d[1:])]) for d in bm_rank])
    assert lexical[0].text == docs[int(bm_rank[0][1:])]["text"] and lexical[0].dense_score is None
    odd = p.lexical_search(q, k=n, filter={"missing-key": 1})
    assert odd == []


def test_delete_removes_from_dense_bm25_and_cache(settings):
    from qrank.cache import embedding_key

    docs = corpus(20) + [PLANTED]
    p, model, scorer = open_fake(settings)
    p.add(docs)
    assert p.search("quokka zanzibar", k=1, hybrid=True)[0].id == "planted"
    key = embedding_key(model.info, 64, None, False, indexed(PLANTED))
    assert p.cache.contains("embedding", key)
    assert p.delete(["planted", "not-there"]) == 1
    assert p.info()["count"] == 20
    assert "planted" not in {h.id for h in p.search("quokka zanzibar", k=21, candidates=21)}
    assert "planted" not in {h.id for h in p.search("quokka zanzibar", k=21, candidates=21, hybrid=True)}
    assert p.collection.bm25_search("quokka zanzibar", 10) == []
    assert not p.cache.contains("embedding", key)
    score_rows = p.cache._db.execute(
        "SELECT COUNT(*) FROM entries WHERE kind = 'score' AND tag = ?",
        (__import__("qrank.cache", fromlist=["text_tag"]).text_tag(indexed(PLANTED)),),
    ).fetchone()[0]
    assert score_rows == 0
    # re-adding it works and finds it again
    p.add([PLANTED])
    assert p.search("quokka zanzibar", k=1, hybrid=True)[0].id == "planted"


def test_second_add_embeds_nothing_and_repeat_search_reranks_nothing(settings):
    docs = corpus(30)
    p, model, scorer = open_fake(settings)
    first = p.add(docs)
    assert first["added"] == 30 and first["embedded"] == model.texts == first["passages"]
    again = p.add(docs)
    assert again["unchanged"] == 30 and again["embedded"] == 0 and model.texts == first["passages"]
    p.search("bake bread", k=5, candidates=12)
    pairs = scorer.pairs
    hits_before = p.cache.stats()["hits"]["score"]
    p.search("bake bread", k=5, candidates=12)
    assert scorer.pairs == pairs and p.cache.stats()["hits"]["score"] == hits_before + pairs
    # another collection over the same texts: vectors come from the persistent cache
    p2, model2, _ = open_fake(settings, name="copy")
    report = p2.add(docs)
    assert report["added"] == 30 and model2.texts == 0 and report["embedded"] == 0


def test_replacing_a_document_keeps_one_copy(settings):
    p, _, _ = open_fake(settings)
    p.add([{"id": "x", "text": "bake sourdough bread"}, {"id": "y", "text": "plant tomato seeds"}])
    rep = p.add([{"id": "x", "text": "repair bicycle brakes"}])
    assert rep["replaced"] == 1 and p.info()["count"] == 2 and p.info()["passages"] == 2
    hits = p.search("sourdough bread", k=2, rerank=False)
    assert [h.text for h in hits if h.id == "x"] == ["repair bicycle brakes"]


def test_interrupted_add_resumes_without_redoing_batches(settings):
    settings = settings.model_copy(update={"engine": settings.engine.model_copy(update={"max_batch_tokens": 64})})
    docs = corpus(40)
    model = BowModel(interrupt_after=4)
    p = Pipeline.open("docs", embedder=Embedder(model), settings=settings)
    with pytest.raises(KeyboardInterrupt):
        p.add(docs)
    done_texts = model.texts
    committed = p.collection.store.count()
    assert 0 < committed < 40
    p.close()
    model2 = BowModel()
    p2 = Pipeline.open("docs", embedder=Embedder(model2), settings=settings)
    report = p2.add(docs)
    assert report["unchanged"] == committed and report["count"] == 40
    total = p2.info()["passages"]
    assert model2.texts == total - done_texts  # finished batches came from the store or the cache


def test_filter(settings):
    docs = corpus(40)
    p, _, _ = open_fake(settings)
    p.add(docs)
    hits = p.search("rotate encryption keys", k=10, filter={"topic": [0, 1]}, rerank=False)
    rows = [i for i, d in enumerate(docs) if d["metadata"]["topic"] in (0, 1)]
    ref = bow_vectors([indexed(docs[i]) for i in rows]) @ bow_vectors(["rotate encryption keys"])[0]
    assert all(h.metadata["topic"] in (0, 1) for h in hits)
    np.testing.assert_allclose([h.dense_score for h in hits], np.sort(ref)[::-1][:10], rtol=1e-5)
    hyb = p.search("rotate encryption keys", k=10, filter={"even": True}, hybrid=True)
    assert hyb and all(h.metadata["even"] is True for h in hyb)


def test_bad_input_gets_clear_errors_and_leaves_the_collection_intact(settings):
    p, _, _ = open_fake(settings)
    p.add(corpus(10))
    before = [h.id for h in p.search("bread", k=3)]
    with pytest.raises(CollectionNotFound) as e:
        Pipeline.open("nope", settings=settings)
    assert e.value.field == "collection" and "docs" in str(e.value)
    for kwargs, field in [({"query": "  "}, "query"), ({"query": "x", "k": 0}, "k"),
                          ({"query": "x", "candidates": -1}, "candidates"),
                          ({"query": "x", "filter": {"a b": 1}}, "filter")]:
        with pytest.raises(InvalidInput) as e:
            p.search(**kwargs)
        assert e.value.field == field
    with pytest.raises(InvalidInput) as e:
        Pipeline.open("docs", embedder=Embedder(BowModel(dim=32)), settings=settings)
    assert e.value.field == "embedder" and "dimension" in str(e.value)
    with pytest.raises(InvalidInput) as e:
        Pipeline.open("docs", embedder=Embedder(BowModel(model_id="other", revision="zz")), settings=settings)
    assert e.value.field == "embedder"
    with pytest.raises(InvalidInput) as e:
        p.add([{"id": "a", "text": "fine"}, {"id": "b", "text": ""}])
    assert e.value.field == "documents[1].text"
    with pytest.raises(InvalidInput) as e:
        Pipeline.open("bad name!", embedder=Embedder(BowModel()), settings=settings)
    assert e.value.field == "collection"
    p.set_default_reranker(None)
    with pytest.raises(InvalidInput) as e:
        Pipeline.open("docs", settings=settings, embedder=Embedder(BowModel())).search("bread", rerank=True)
    assert e.value.field == "reranker"
    again = Pipeline.open("docs", embedder=Embedder(BowModel()), reranker=Reranker(OverlapScorer()), settings=settings)
    assert again.info()["count"] == 10 and [h.id for h in again.search("bread", k=3)] == before


def test_stored_formats_are_not_pickles(settings):
    import faiss

    p, _, _ = open_fake(settings)
    p.add(corpus(12))
    p.search("bread", k=3, hybrid=True)
    seen = set()
    for f in p.collection.path.rglob("*"):
        if f.is_dir():
            continue
        name = f.name
        if name.endswith((".sqlite-wal", ".sqlite-shm")):
            continue
        if name.endswith(".sqlite"):
            assert sqlite3.connect(f).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        elif name.endswith(".index") and name.startswith("faiss."):
            assert faiss.read_index(str(f)).ntotal == 12
        elif name.endswith(".npy"):
            np.load(f, allow_pickle=False)
        elif name.endswith(".json"):
            json.loads(f.read_text())
        elif name == "write.lock":  # the collection's writer lock: an empty file
            assert f.stat().st_size == 0
        else:
            pytest.fail(f"unexpected stored file {f}")
        seen.add(f.suffix)
    assert {".sqlite", ".index", ".npy", ".json"} <= seen


def test_list_info_and_delete_collection(settings):
    p, _, _ = open_fake(settings)
    p.add(corpus(5))
    info = p.info()
    assert info["count"] == 5 and info["embedder"]["id"] == "fake-bow" and info["backend"] == "faiss"
    assert info["cache"]["misses"]["embedding"] == 5
    (summary,) = list_collections(settings)
    assert summary.name == "docs" and summary["count"] == 5
    delete_collection("docs", settings)
    assert list_collections(settings) == []
    with pytest.raises(CollectionNotFound):
        Pipeline.open("docs", settings=settings)
