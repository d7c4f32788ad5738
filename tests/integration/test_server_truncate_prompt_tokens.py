"""vLLM's ``truncate_prompt_tokens`` on rerank, score and embeddings: each prompt is cut to N tokens, keeping its
start, and the answers equal independent references that cut the same way (transformers with
``truncation=True, max_length=N``, as vLLM tokenizes; the Qwen3 model cards' recipes; sentence-transformers with
``max_seq_length=N``); -1 is the window; bad values are 422s naming the field, never silently ignored."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
from _server_support import WithoutLayouts, live_server, server_settings
from numerics.official_recipes import official_qwen3_embed, official_qwen3_rerank

from qrank import Reranker

QUERY = "where do cats sleep?"
LONG = "".join(f"Sentence {i} is about dogs and parks. " if i != 3 else "Cats sleep in warm sunny windows. "
               for i in range(80))  # about 800 tokens: longer than every window here
SHORT = "Cats like warm places."


@pytest.fixture(scope="module")
def http(ce, qwen3_reranker, minilm, qwen3_embedder):
    rerankers = {"ce": ce, "qwen3": qwen3_reranker, "ce-counts": Reranker(WithoutLayouts(ce.model))}
    embedders = {"minilm": minilm, "qwen3-emb": qwen3_embedder}
    with live_server(server_settings(), rerankers=rerankers, embedders=embedders) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            yield client


@pytest.fixture(scope="module")
def vllm_cut_logits(ce_dir):
    """The cross-encoder's logit of each pair as vLLM scores it under truncate_prompt_tokens=N:
    ``tokenizer(text=query, text_pair=doc, truncation=True, max_length=N)``, then the model."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ce_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(ce_dir), dtype=torch.float32).eval()

    def run(docs, n):
        out = []
        for d in docs:
            enc = tok(QUERY, d, truncation=True, max_length=n, return_tensors="pt")
            with torch.no_grad():
                out.append((float(model(**enc).logits[0, 0]), enc["input_ids"].shape[1]))
        return out

    return run


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_rerank_cuts_each_pair_to_n_tokens_as_vllm_does(http, ce, vllm_cut_logits, path):
    want = vllm_cut_logits([SHORT, LONG], 64)
    r = http.post(path, json={"model": "ce", "query": QUERY, "documents": [SHORT, LONG], "truncate_prompt_tokens": 64,
                              "return_raw_scores": True})
    assert r.status_code == 200, r.text
    body = r.json()
    by_index = {item["index"]: item for item in body["results"]}
    assert [by_index[i]["raw_score"] for i in (0, 1)] == pytest.approx([w[0] for w in want], abs=1e-4)
    assert body["usage"]["total_tokens"] == sum(n for _, n in want) and want[1][1] == 64
    assert by_index[0]["truncated"] is False and by_index[1]["truncated"] is True


def test_score_cuts_each_pair_and_minus_one_is_the_window(http, ce, vllm_cut_logits):
    assert ce.info.score_activation == "sigmoid"
    want = vllm_cut_logits([SHORT, LONG], 100)
    r = http.post("/v1/score", json={"model": "ce", "text_1": QUERY, "text_2": [SHORT, LONG],
                                     "truncate_prompt_tokens": 100})
    assert r.status_code == 200, r.text
    sigmoid = [1 / (1 + math.exp(-logit)) for logit, _ in want]
    assert [d["score"] for d in r.json()["data"]] == pytest.approx(sigmoid, abs=2e-5)
    # -1: the model's whole window (512), i.e. what the server does by default
    body = {"model": "ce", "text_1": QUERY, "text_2": [LONG]}
    whole = http.post("/v1/score", json={**body, "truncate_prompt_tokens": -1})
    default = http.post("/v1/score", json=body)
    window = vllm_cut_logits([LONG], 512)[0][0]
    assert whole.json()["data"][0]["score"] == pytest.approx(1 / (1 + math.exp(-window)), abs=2e-5)
    assert whole.json()["data"] == default.json()["data"]
    # a query of about 300 tokens: -1 is still the model's own cut (longest first, the query shortened too), not
    # qrank's cap that keeps the query whole (they differed until 2026-12-08: 4.047 against the default's 4.129)
    long_query = {"model": "ce", "text_1": " ".join([QUERY] * 40), "text_2": [LONG]}
    whole = http.post("/v1/score", json={**long_query, "truncate_prompt_tokens": -1})
    assert whole.status_code == 200, whole.text
    assert whole.json()["data"] == http.post("/v1/score", json=long_query).json()["data"]


def test_an_explicit_cap_cuts_even_with_truncate_false(http, vllm_cut_logits):
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": [LONG], "truncate": False})
    assert r.status_code == 413  # as before: the document is longer than the window
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": [LONG], "truncate": False,
                                      "truncate_prompt_tokens": 64, "return_raw_scores": True})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["raw_score"] == pytest.approx(vllm_cut_logits([LONG], 64)[0][0], abs=1e-4)


def test_qwen3_reranker_keeps_its_template_and_query_and_cuts_the_document(http, qwen3_reranker_dir):
    # the model card's recipe cuts the user turn's end (the document's) to fit max_length with the template
    want = official_qwen3_rerank(qwen3_reranker_dir, [(QUERY, SHORT), (QUERY, LONG)], max_length=96)
    r = http.post("/v1/rerank", json={"model": "qwen3", "query": QUERY, "documents": [SHORT, LONG],
                                      "truncate_prompt_tokens": 96})
    assert r.status_code == 200, r.text
    by_index = {item["index"]: item for item in r.json()["results"]}
    assert [by_index[i]["relevance_score"] for i in (0, 1)] == pytest.approx(want, abs=1e-4)
    assert by_index[1]["truncated"] is True


def test_embeddings_cut_each_input_to_n_tokens(http, minilm_dir, qwen3_embedder_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir), device="cpu")
    st.max_seq_length = 16
    r = http.post("/v1/embeddings", json={"model": "minilm", "input": [LONG, SHORT], "truncate_prompt_tokens": 16})
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]])
    np.testing.assert_allclose(got, st.encode([LONG, SHORT], normalize_embeddings=True), atol=1e-5)
    assert r.json()["usage"]["prompt_tokens"] == 16 + len(st.tokenizer(SHORT)["input_ids"])
    r = http.post("/v1/embeddings", json={"model": "qwen3-emb", "input": [LONG], "truncate_prompt_tokens": 24})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["data"][0]["embedding"]),
                               official_qwen3_embed(qwen3_embedder_dir, [LONG], max_length=24)[0], atol=1e-5)
    assert r.json()["usage"]["prompt_tokens"] == 24


BAD = [
    ("/v1/rerank", {"model": "ce", "query": QUERY, "documents": [SHORT], "truncate_prompt_tokens": 513}),  # > window
    ("/v1/rerank", {"model": "ce", "query": QUERY, "documents": [SHORT], "truncate_prompt_tokens": 0}),
    ("/v1/rerank", {"model": "ce", "query": QUERY, "documents": [SHORT], "truncate_prompt_tokens": -2}),
    ("/v1/rerank", {"model": "ce", "query": QUERY, "documents": [SHORT], "truncate_prompt_tokens": "64"}),
    ("/v1/rerank", {"model": "ce", "query": QUERY, "documents": [SHORT], "truncate_prompt_tokens": 5}),  # query: 8
    ("/v1/rerank", {"model": "ce-counts", "query": QUERY, "documents": [SHORT], "truncate_prompt_tokens": 64}),
    ("/v1/score", {"model": "ce", "text_1": QUERY, "text_2": [SHORT], "truncate_prompt_tokens": 1000}),
    ("/v1/embeddings", {"model": "minilm", "input": [SHORT], "truncate_prompt_tokens": 257}),  # window: 256
    ("/v1/embeddings", {"model": "minilm", "input": [SHORT], "truncate_prompt_tokens": 0}),
    # fewer than [CLS] + [SEP]: the tokenizer cut nothing and the whole input was embedded (found 2026-12-08)
    ("/v1/embeddings", {"model": "minilm", "input": [SHORT], "truncate_prompt_tokens": 1}),
]


@pytest.mark.parametrize("path,body", BAD)
def test_bad_values_are_422s_naming_the_field(http, path, body):
    r = http.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "truncate_prompt_tokens"
