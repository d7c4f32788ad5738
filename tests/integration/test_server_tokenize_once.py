"""The server tokenizes each request exactly once: at its door, off the event loop; the worker runs the
token ids. Counted on the backends' own tokenizers, through the HTTP app, with the real models."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from _server_support import live_server, server_settings

QUERY = "Does vitamin D supplementation reduce the risk of fractures?"
DOCS = [
    "Vitamin D supplementation did not reduce hip fractures in older adults.",
    "The mitochondrial genome encodes 13 proteins of the respiratory chain.",
    "Daily vitamin D and calcium lowered fracture incidence.",
]


class CountingTokenizer:
    """Wraps a tokenizer (HF or ``tokenizers``) and counts the texts it tokenizes; delegates the rest."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.texts = 0

    def _count(self, n: int) -> None:
        with self._lock:
            self.texts += n

    def __call__(self, text, *args, **kwargs):  # transformers tokenizers (cross-encoder, sentence-transformers)
        self._count(1 if isinstance(text, str) else len(text))
        return self._inner(text, *args, **kwargs)

    def encode_batch(self, texts, *args, **kwargs):  # a ``tokenizers.Tokenizer`` (the Qwen3 backends)
        self._count(len(texts))
        return self._inner.encode_batch(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture
def counted(monkeypatch, ce, minilm, qwen3_reranker, qwen3_embedder):
    counters = {
        "ce": CountingTokenizer(ce.model.tokenizer),
        "minilm": CountingTokenizer(minilm.model.tokenizer),
        "qwen3": CountingTokenizer(qwen3_reranker.model.encoder.text_tok),
        "qwen3-emb": CountingTokenizer(qwen3_embedder.model.text_tok),
    }
    monkeypatch.setattr(ce.model, "tokenizer", counters["ce"])
    monkeypatch.setattr(minilm.model, "tokenizer", counters["minilm"])
    monkeypatch.setattr(qwen3_reranker.model.encoder, "text_tok", counters["qwen3"])
    monkeypatch.setattr(qwen3_embedder.model, "text_tok", counters["qwen3-emb"])
    return counters


def test_each_request_is_tokenized_once(counted, ce, minilm, qwen3_reranker, qwen3_embedder):
    expected_ce = ce.model.score_pairs([(QUERY, d) for d in DOCS])
    expected_qwen = qwen3_reranker.model.score_pairs([(QUERY, d) for d in DOCS])
    expected_vectors = minilm.model.embed_batch(DOCS)
    settings = server_settings(max_wait_ms=20)
    with live_server(settings, rerankers={"ce": ce, "qwen3": qwen3_reranker},
                     embedders={"minilm": minilm, "qwen3-emb": qwen3_embedder}) as url:
        for c in counted.values():  # start-up probes are not requests
            c.texts = 0
        n = 6

        def rerank(model):
            r = httpx.post(url + "/v1/rerank", json={"model": model, "query": QUERY, "documents": DOCS}, timeout=60)
            assert r.status_code == 200, r.text
            return sorted((x["index"], x["relevance_score"]) for x in r.json()["results"])

        def embed(model):
            r = httpx.post(url + "/v1/embeddings", json={"model": model, "input": DOCS}, timeout=60)
            assert r.status_code == 200, r.text
            return np.array([x["embedding"] for x in sorted(r.json()["data"], key=lambda x: x["index"])])

        with ThreadPoolExecutor(8) as pool:  # concurrent requests share batches: still one tokenizing each
            ce_out = list(pool.map(rerank, ["ce"] * n))
            qwen_out = list(pool.map(rerank, ["qwen3"] * n))
            vec_out = list(pool.map(embed, ["minilm"] * n))
            list(pool.map(embed, ["qwen3-emb"] * n))
    assert {k: c.texts for k, c in counted.items()} == {k: n * len(DOCS) for k in counted}
    for got in ce_out:
        np.testing.assert_allclose([s for _, s in got], expected_ce, atol=2e-5)
    for got in qwen_out:
        np.testing.assert_allclose([s for _, s in got], expected_qwen, atol=2e-5)
    for got in vec_out:
        np.testing.assert_allclose(got, expected_vectors, atol=2e-5)
