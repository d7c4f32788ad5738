"""With truncation off, an input that fills the model's window exactly is served and one token more is refused
(413 naming it), on every door that checks: embeddings (OpenAI and TEI bodies, MiniLM and a Qwen3-Embedding),
rerank through a model's layouts, and rerank through a model without layouts (checked by its token counts, as a
Ray-served model is). Windows come from the checkpoints' configs and token counts from their own tokenizers
(transformers), never from qrank."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from _server_support import WithoutLayouts, live_server, server_settings

from qrank import Embedder, Reranker

QUERY = "where do cats sleep?"


def text_of(count, tokens: int) -> str:
    """'word word …' that ``count`` (a checkpoint's own tokenizer) makes exactly ``tokens`` tokens long."""
    for k in range(tokens, 0, -1):
        text = " ".join(["word"] * k)
        if count(text) == tokens:
            return text
    raise AssertionError(f"no run of 'word' is {tokens} tokens long")


@pytest.fixture(scope="module")
def qwen3_emb_64(qwen3_embedder_dir):
    return Embedder.from_pretrained(str(qwen3_embedder_dir), device="cpu", dtype="float32", max_length=64)


@pytest.fixture(scope="module")
def qwen3_rr_128(qwen3_reranker_dir):
    return Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", dtype="float32", max_length=128)


@pytest.fixture(scope="module")
def http(minilm, ce, qwen3_emb_64, qwen3_rr_128):
    rerankers = {"ce": ce, "ce-counts": Reranker(WithoutLayouts(ce.model)),
                 "qwen3-counts": Reranker(WithoutLayouts(qwen3_rr_128.model))}
    embedders = {"minilm": minilm, "qwen3-emb": qwen3_emb_64}
    with live_server(server_settings(), rerankers=rerankers, embedders=embedders) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            yield client


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@pytest.mark.parametrize("path,field", [("/v1/embeddings", "input"), ("/embed", "inputs")])
def test_minilm_input_filling_the_window_is_embedded_and_one_more_token_refused(http, minilm_dir, path, field):
    from sentence_transformers import SentenceTransformer

    window = json.loads((minilm_dir / "sentence_bert_config.json").read_text())["max_seq_length"]  # 256
    tok = _tokenizer(minilm_dir)
    count = lambda t: len(tok(t)["input_ids"])  # noqa: E731  ([CLS] and [SEP] included)
    fits, over = text_of(count, window), text_of(count, window + 1)
    r = http.post(path, json={"model": "minilm", field: ["short", fits], "truncate": False})
    assert r.status_code == 200, r.text
    vectors = r.json() if path == "/embed" else [d["embedding"] for d in r.json()["data"]]
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode(["short", fits], normalize_embeddings=True)
    np.testing.assert_allclose(np.array(vectors), want, atol=1e-5)
    if path == "/v1/embeddings":
        assert r.json()["usage"]["prompt_tokens"] == count("short") + window
    r = http.post(path, json={"model": "minilm", field: ["short", over], "truncate": False})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["field"] == f"{field}[1]"
    # with truncation on (the default), the same input is cut to the window and served
    assert http.post(path, json={"model": "minilm", field: [over]}).status_code == 200


def test_qwen3_embedding_input_filling_the_window_is_embedded_and_one_more_token_refused(http, qwen3_embedder_dir):
    tok = _tokenizer(qwen3_embedder_dir)  # appends <|endoftext|>, which counts
    count = lambda t: len(tok(t)["input_ids"])  # noqa: E731
    fits, over = text_of(count, 64), text_of(count, 65)
    r = http.post("/v1/embeddings", json={"model": "qwen3-emb", "input": fits, "truncate": False})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 64
    r = http.post("/v1/embeddings", json={"model": "qwen3-emb", "input": over, "truncate": False})
    assert r.status_code == 413 and r.json()["error"]["field"] == "input[0]", r.text


def _ce_pair_counter(ce_dir):
    tok = _tokenizer(ce_dir)
    window = min(json.loads((ce_dir / "config.json").read_text())["max_position_embeddings"], tok.model_max_length)
    return window, lambda d: len(tok(QUERY, d)["input_ids"])  # [CLS] query [SEP] document [SEP]


@pytest.mark.parametrize("model,field", [("ce", "texts"), ("ce-counts", "texts"), ("ce-counts", "documents")])
def test_cross_encoder_pair_filling_the_window_is_scored_and_one_more_token_refused(http, ce_dir, ce, model, field):
    window, count = _ce_pair_counter(ce_dir)  # 512
    fits, over = text_of(count, window), text_of(count, window + 1)
    body = {"model": model, "query": QUERY, "truncate": False, "return_raw_scores": True}
    r = http.post("/rerank", json={**body, field: ["Cats sleep in warm windows.", fits]})
    assert r.status_code == 200, r.text
    results = r.json() if field == "texts" else r.json()["results"]
    got = {item["index"]: item for item in results}[1]
    # scored whole: the score of the very pair, not of a cut one
    key = "score" if field == "texts" else "relevance_score"
    assert got[key] == pytest.approx(ce.score(QUERY, [fits])[0], abs=2e-5)
    r = http.post("/rerank", json={**body, field: ["Cats sleep in warm windows.", over]})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["field"] == f"{field}[1]"


def test_qwen3_reranker_without_layouts_serves_a_pair_filling_the_window(http, qwen3_reranker_dir, qwen3_rr_128):
    from numerics.official_recipes import DEFAULT_INSTRUCTION, RERANKER_PREFIX, RERANKER_SUFFIX  # the model card's

    tok = _tokenizer(qwen3_reranker_dir)
    fixed = len(tok.encode(RERANKER_PREFIX, add_special_tokens=False) + tok.encode(RERANKER_SUFFIX,
                                                                                  add_special_tokens=False))
    count = lambda d: fixed + len(tok(f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: {QUERY}\n<Document>: {d}",  # noqa: E731
                                      add_special_tokens=False)["input_ids"])
    fits, over = text_of(count, 128), text_of(count, 129)
    r = http.post("/v1/rerank", json={"model": "qwen3-counts", "query": QUERY, "documents": [fits], "truncate": False})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["total_tokens"] == 128
    assert r.json()["results"][0]["relevance_score"] == pytest.approx(qwen3_rr_128.score(QUERY, [fits])[0], abs=2e-5)
    r = http.post("/v1/rerank", json={"model": "qwen3-counts", "query": QUERY, "documents": [over], "truncate": False})
    assert r.status_code == 413 and r.json()["error"]["field"] == "documents[0]", r.text


def test_cohere_max_tokens_per_doc_cuts_only_a_longer_document(http, ce_dir):
    tok = _tokenizer(ce_dir)
    doc = "Cats sleep in warm sunny windows, often for most of the afternoon."
    n = len(tok(doc, add_special_tokens=False)["input_ids"])
    whole = http.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": [doc], "max_tokens_per_doc": n})
    item = whole.json()["results"][0]
    assert item["truncated"] is False and item["tokens"] == n and item["span"]["end"] == len(doc)
    cut = http.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": [doc], "max_tokens_per_doc": n - 1})
    item = cut.json()["results"][0]
    assert item["truncated"] is True and item["tokens"] == n - 1 and item["span"]["end"] < len(doc)
