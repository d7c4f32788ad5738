"""Tokenize once: ``score_encoded(encode_pairs(p))`` / ``embed_encoded(encode_texts(t))`` equal the one-call
methods and the independent references, on the tiny real-tokenizer Qwen3 models and the real shared encoders."""

from __future__ import annotations

import numpy as np
import pytest
from official_recipes import official_qwen3_embed, official_qwen3_rerank

from qrank.models.base import Encoded, PairEncoder, TextEncoder

QUERY = "What is the capital of China?"
DOCS = ["The capital of China is Beijing.", "Gravity is a force " * 30, "北京是中华人民共和国的首都。", "short"]
PAIRS = [(QUERY, d) for d in DOCS] + [("万有引力是什么？", "万有引力是两个物体之间相互吸引的力。")]
TEXTS = ["a question about gravity", "Gravity is a force " * 30, "北京是中华人民共和国的首都。"]


def _encoded_ok(encoded, counts):
    assert all(isinstance(e, Encoded) for e in encoded)
    assert [len(e) for e in encoded] == counts  # count_tokens is the length of what the model runs


def test_qwen3_reranker_encode_then_score(qwen3_reranker, qwen3_reranker_dir):
    model = qwen3_reranker.model
    assert isinstance(model, PairEncoder)
    encoded = model.encode_pairs(PAIRS, instruction="Find the capital")
    _encoded_ok(encoded, model.count_tokens(PAIRS, instruction="Find the capital"))
    got = model.score_encoded(encoded)
    np.testing.assert_array_equal(got, model.score_pairs(PAIRS, instruction="Find the capital"))
    reference = official_qwen3_rerank(str(qwen3_reranker_dir), PAIRS, instruction="Find the capital")
    np.testing.assert_allclose(got, reference, atol=1e-5)


def test_qwen3_embedder_encode_then_embed(qwen3_embedder, qwen3_embedder_dir):
    model = qwen3_embedder.model
    assert isinstance(model, TextEncoder)
    encoded = model.encode_texts(TEXTS, is_query=True)
    _encoded_ok(encoded, model.count_tokens(TEXTS, is_query=True))
    got = model.embed_encoded(encoded, dim=16)
    np.testing.assert_array_equal(got, model.embed_batch(TEXTS, is_query=True, dim=16))
    full = model.embed_encoded(encoded)
    np.testing.assert_allclose(full, official_qwen3_embed(str(qwen3_embedder_dir), TEXTS, is_query=True), atol=1e-5)


def test_cross_encoder_encode_then_score(ce, ce_dir):
    from transformers import AutoTokenizer

    model = ce.model
    assert isinstance(model, PairEncoder)
    encoded = model.encode_pairs(PAIRS)
    _encoded_ok(encoded, model.count_tokens(PAIRS))
    # the ids and type ids are the tokenizer's own for the pair (BERT: [CLS] q [SEP] d [SEP])
    tok = AutoTokenizer.from_pretrained(str(ce_dir))
    queries, docs = [q for q, _ in PAIRS], [d for _, d in PAIRS]
    ref = tok(queries, docs, truncation="longest_first", max_length=model.info.max_length)
    assert [list(e.ids) for e in encoded] == ref["input_ids"]
    assert [list(e.type_ids) for e in encoded] == ref["token_type_ids"]
    np.testing.assert_array_equal(model.score_encoded(encoded), model.score_pairs(PAIRS))


def test_cross_encoder_padded_path_encode_then_score(ce_dir):
    """The padded path (no packing) takes the same Encoded items."""
    from qrank import Reranker

    padded = Reranker.from_pretrained(str(ce_dir), device="cpu", engine="reference").model
    assert padded.packed is None
    encoded = padded.encode_pairs(PAIRS)
    np.testing.assert_allclose(padded.score_encoded(encoded), padded.score_pairs(PAIRS), atol=1e-6)


def test_st_embedder_encode_then_embed(minilm, minilm_dir):
    st = pytest.importorskip("sentence_transformers")
    model = minilm.model
    assert isinstance(model, TextEncoder)
    encoded = model.encode_texts(TEXTS)
    _encoded_ok(encoded, model.count_tokens(TEXTS))
    got = model.embed_encoded(encoded)
    np.testing.assert_array_equal(got, model.embed_batch(TEXTS))
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_score_activation_is_in_info(ce, qwen3_reranker, minilm):
    assert qwen3_reranker.info.score_activation == "sigmoid"
    assert ce.info.score_activation in ("sigmoid", "identity", "tanh")
    assert minilm.info.score_activation is None
