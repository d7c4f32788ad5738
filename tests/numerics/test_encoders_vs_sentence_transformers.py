"""Classic cross-encoders and sentence-transformers embedders equal sentence-transformers itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qrank.errors import InvalidInput


def _scifact_pairs(scifact_dir, n_queries=4, n_docs=6):
    corpus = []
    with open(scifact_dir / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            corpus.append(json.loads(line))
            if len(corpus) >= n_docs:
                break
    with open(scifact_dir / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(next(f))["text"] for _ in range(n_queries)]
    docs = [(d["title"] + " " + d["text"]).strip() for d in corpus]
    return [(q, d) for q in queries for d in docs]


@pytest.fixture(scope="module")
def pairs(scifact_dir):
    # real abstracts are long enough (often > 256 tokens) to exercise truncation
    return _scifact_pairs(scifact_dir) + [("中文查询", "中文文档内容"), ("q", "")]


@pytest.mark.parametrize("which", ["ce_dir", "random_ce_dir"])
def test_cross_encoder_equals_crossencoder_predict(request, which, pairs):
    from sentence_transformers import CrossEncoder

    from qrank import Reranker

    path = str(request.getfixturevalue(which))
    ref = CrossEncoder(path, device="cpu").predict(pairs, batch_size=7)
    rr = Reranker.from_pretrained(path, device="cpu")
    got = rr.model.score_pairs(pairs)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_st_embedder_equals_sentence_transformer_encode(minilm, minilm_dir, pairs):
    from sentence_transformers import SentenceTransformer

    # an empty text is refused by the facade (issue 16.14: nothing to embed); a pair may still have an empty document
    texts = sorted(t for t in {d for _, d in pairs} | {q for q, _ in pairs} if t.strip())
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, batch_size=5, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.embed(texts), ref, atol=1e-5)
    with pytest.raises(InvalidInput):
        minilm.embed(["a text", ""])


def test_real_cross_encoder_prefers_the_relevant_abstract(ce, scifact_dir):
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in open(scifact_dir / "queries.jsonl", encoding="utf-8")
    }
    corpus = {}
    for line in open(scifact_dir / "corpus.jsonl", encoding="utf-8"):
        d = json.loads(line)
        corpus[d["_id"]] = (d["title"] + " " + d["text"]).strip()
    qrels = [
        row.split("\t") for row in open(scifact_dir / "qrels" / "test.tsv", encoding="utf-8").read().splitlines()[1:]
    ]
    wins = 0
    checked = qrels[:20]
    for qid, did, _ in checked:
        other = corpus[next(k for k in corpus if k != did)]
        s_rel, s_other = ce.score(queries[qid], [corpus[did], other])
        wins += s_rel > s_other
    assert wins >= 18, f"relevant abstract ranked first only {wins}/20 times"


def test_real_embedder_prefers_the_relevant_sentence(minilm):
    q = minilm.embed("How do I reset my password?", is_query=True)
    docs = minilm.embed(
        ["To reset your password, click 'Forgot password' on the login page.",
         "The weather in Paris is mild in spring."]
    )
    assert float(docs[0] @ q) > float(docs[1] @ q) + 0.2
