"""Qwen3-Embedding numerics: qrank equals the model card's recipe on a tiny random Qwen3Model."""

from __future__ import annotations

import numpy as np
import pytest

from official_recipes import official_qwen3_embed

QUERIES = ["What is the capital of China?", "Explain gravity", "万有引力是什么？"]
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "北京是中华人民共和国的首都。",
    "x",
]


def test_documents_equal_official_recipe(qwen3_embedder, qwen3_embedder_dir):
    ref = official_qwen3_embed(str(qwen3_embedder_dir), DOCS)
    got = qwen3_embedder.embed(DOCS)
    assert got.dtype == np.float32 and got.shape == (len(DOCS), qwen3_embedder.dim)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_queries_get_the_instruction(qwen3_embedder, qwen3_embedder_dir):
    ref = official_qwen3_embed(str(qwen3_embedder_dir), QUERIES, is_query=True)
    got = qwen3_embedder.embed(QUERIES, is_query=True)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    plain = qwen3_embedder.embed(QUERIES)
    assert not np.allclose(got, plain, atol=1e-4)
    task = "Given a claim, find documents that support it"
    np.testing.assert_allclose(
        qwen3_embedder.embed(QUERIES, is_query=True, query_task=task),
        official_qwen3_embed(str(qwen3_embedder_dir), QUERIES, is_query=True, task=task),
        atol=1e-5,
    )


def test_single_string_gives_one_vector(qwen3_embedder):
    one = qwen3_embedder.embed(DOCS[0])
    assert one.shape == (qwen3_embedder.dim,)
    np.testing.assert_allclose(one, qwen3_embedder.embed(DOCS)[0], atol=1e-5)


def test_batch_equals_single(qwen3_embedder):
    together = qwen3_embedder.embed(DOCS)
    single = np.stack([qwen3_embedder.embed([d])[0] for d in DOCS])
    np.testing.assert_allclose(together, single, atol=1e-5)


def test_mrl_dimension_truncates_then_renormalises(qwen3_embedder):
    full = qwen3_embedder.embed(DOCS)
    small = qwen3_embedder.embed(DOCS, dim=16)
    expected = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(small, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("dim", [0, -1, 10_000, 2.5, True])
def test_bad_dimension_is_rejected(qwen3_embedder, dim):
    from qrank import InvalidInput

    with pytest.raises(InvalidInput) as err:
        qwen3_embedder.embed(DOCS, dim=dim)
    assert err.value.field == "dim"


def test_truncation_keeps_the_end_of_text_token(qwen3_embedder_dir):
    from qrank import Embedder

    em = Embedder.from_pretrained(str(qwen3_embedder_dir), device="cpu", dtype="float32", max_length=32)
    long_text = "Beijing is the capital of China and hosts many museums. " * 20
    (ids,) = em.model.encode([long_text])
    assert len(ids) == 32 and ids[-1] == em.model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ref = official_qwen3_embed(str(qwen3_embedder_dir), [long_text, "short"], max_length=32)
    np.testing.assert_allclose(em.embed([long_text, "short"]), ref, atol=1e-5)
