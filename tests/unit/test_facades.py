"""Reranker / Embedder facades over fake models: validation, sorting, top_n, batching of queries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fakes import HashEmbedder, WordOverlapScorer
from qrank import Embedder, InvalidInput, QrankError, Reranker

DOCS = ["the cat sat", "a dog barked", "the cat and the dog", "nothing here"]


@pytest.fixture
def rr():
    return Reranker(WordOverlapScorer())


def test_rerank_sorts_best_first_and_keeps_indices(rr):
    res = rr.rerank("cat dog", DOCS)
    assert [r.index for r in res] == [2, 0, 1, 3]  # ties keep the caller's order
    assert [r.document for r in res] == [DOCS[i] for i in [2, 0, 1, 3]]
    assert res[0].score == pytest.approx(1.0)


def test_top_n_and_return_documents(rr):
    res = rr.rerank("cat dog", DOCS, top_n=2, return_documents=False)
    assert [r.index for r in res] == [2, 0] and all(r.document is None for r in res)
    assert len(rr.rerank("cat", DOCS, top_n=100)) == len(DOCS)


def test_score_is_in_callers_order(rr):
    assert rr.score("cat", DOCS) == pytest.approx([1.0, 0.0, 1.0, 0.0])


def test_batch_rerank_is_one_model_call(rr):
    out = rr.batch_rerank(["cat", "dog"], [DOCS, DOCS[:2]], top_n=1)
    assert len(rr.model.calls) == 1 and len(rr.model.calls[0]) == len(DOCS) + 2
    assert [r.index for r in out[0]] == [0] and [r.index for r in out[1]] == [1]


@pytest.mark.parametrize(
    "query,docs,top_n,field",
    [
        ("", DOCS, None, "query"),
        ("   ", DOCS, None, "query"),
        (None, DOCS, None, "query"),
        (3, DOCS, None, "query"),
        ("q", [], None, "documents"),
        ("q", "just a string", None, "documents"),
        ("q", None, None, "documents"),
        ("q", ["ok", None], None, "documents[1]"),
        ("q", ["ok", 5], None, "documents[1]"),
        ("q", DOCS, 0, "top_n"),
        ("q", DOCS, -3, "top_n"),
        ("q", DOCS, "2", "top_n"),
        ("q", DOCS, True, "top_n"),
    ],
)
def test_bad_rerank_input_names_the_field(rr, query, docs, top_n, field):
    with pytest.raises(InvalidInput) as err:
        rr.rerank(query, docs, top_n=top_n)
    assert err.value.field == field


def test_bad_batch_rerank_input(rr):
    with pytest.raises(InvalidInput) as err:
        rr.batch_rerank(["a", "b"], [DOCS])
    assert err.value.field == "documents_list"
    with pytest.raises(InvalidInput) as err:
        rr.batch_rerank(["a", ""], [DOCS, DOCS])
    assert err.value.field == "queries[1]"


def test_nan_scores_are_an_error_not_a_ranking():
    class NanModel(WordOverlapScorer):
        def score_pairs(self, pairs, *, instruction=None):
            return np.array([np.nan] * len(pairs), dtype=np.float32)

    with pytest.raises(QrankError, match="non-finite"):
        Reranker(NanModel()).rerank("q", ["a"])


def test_inputs_are_not_mutated(rr):
    docs = list(DOCS)
    rr.rerank("cat", docs, top_n=1)
    assert docs == DOCS


def test_embedder_shapes_and_validation():
    em = Embedder(HashEmbedder(dim=32))
    assert em.embed("hello").shape == (32,)
    m = em.embed(["a b", "c"], dim=8)
    assert m.shape == (2, 8) and np.allclose(np.linalg.norm(m, axis=1), 1.0)
    for bad, field in [([], "texts"), (["a", None], "texts[1]"), (42, "texts"), ([""], "texts[0]"),
                       (["a", " \t\n"], "texts[1]"), ("   ", "texts[0]")]:
        with pytest.raises(InvalidInput) as err:
            em.embed(bad)
        assert err.value.field == field
    with pytest.raises(InvalidInput) as err:
        em.embed("a", dim=64)
    assert err.value.field == "dim"


def test_embedder_takes_only_its_full_width_without_matryoshka():
    model = HashEmbedder(dim=32)
    model.info = dataclasses.replace(model.info, supports_dims=False)
    em = Embedder(model)
    np.testing.assert_array_equal(em.embed(["a b"], dim=32), em.embed(["a b"]))
    for dim in (8, 31):
        with pytest.raises(InvalidInput, match="fake-embedder does not support other dimensions than 32 "
                                               r"\(not a Matryoshka model\)") as err:
            em.embed("a", dim=dim)
        assert err.value.field == "dim"
