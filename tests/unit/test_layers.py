"""The model contract and its layers: every layer is a model, stacks of layers answer like the bare model."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from index_fakes import BowModel, OverlapScorer, bow_vectors, overlap_score

from qrank import Embedder, InvalidInput, QrankError, Reranker
from qrank.cache import Cache, CachedEmbedder, CachedEmbeddingModel, CachedReranker, CachedScorer
from qrank.models.base import (
    CountingEmbeddingModel,
    CountingScorer,
    EmbeddingModel,
    Encoded,
    ScoringModel,
    check_finite,
)
from qrank.models.remote import RemoteEmbeddingModel, RemoteScorer

QUERY = "rotate keys"
DOCS = ["rotate the keys now", "bake bread", "keys", "rotate", "nothing at all"]


class _NoHTTP:
    base_url = "http://unused"

    def request(self, *a, **k):  # pragma: no cover - the isinstance checks below never send anything
        raise AssertionError("no request expected")


def test_every_layer_is_a_model(tmp_path):
    cache = Cache(tmp_path / "c.sqlite", max_bytes=10**7)
    scorers = [OverlapScorer(), CountingScorer(OverlapScorer()), CachedScorer(OverlapScorer(), cache)]
    embedders = [BowModel(), CountingEmbeddingModel(BowModel()), CachedEmbeddingModel(BowModel(), cache)]
    for m in scorers:
        assert isinstance(m, ScoringModel) and not isinstance(m, EmbeddingModel), m
    for m in embedders:
        assert isinstance(m, EmbeddingModel) and not isinstance(m, ScoringModel), m
    # the remote layers: checked on the class, so that no server is asked for ``info``
    for cls, proto in ((RemoteScorer, ScoringModel), (RemoteEmbeddingModel, EmbeddingModel)):
        work = "score_pairs" if proto is ScoringModel else "embed_batch"
        assert all(callable(getattr(cls, name, None)) for name in ("count_tokens", work))
        assert isinstance(cls.info, property)


def test_queue_layers_are_models():
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from qrank.server.queued_models import QueuedEmbedder, QueuedReranker
    from qrank.server.state import ServedModel

    loop = asyncio.new_event_loop()
    try:
        rr = QueuedReranker(ServedModel("o", "reranker", Reranker(OverlapScorer())), loop)
        em = QueuedEmbedder(ServedModel("b", "embedder", Embedder(BowModel())), loop)
        assert isinstance(rr, Reranker) and isinstance(rr.model, ScoringModel)
        assert isinstance(em, Embedder) and isinstance(em.model, EmbeddingModel)
    finally:
        loop.close()


def test_stacked_layers_score_like_the_bare_model_and_count_only_misses(tmp_path):
    cache = Cache(tmp_path / "c.sqlite", max_bytes=10**7)
    bare = OverlapScorer()
    counting = CountingScorer(OverlapScorer())
    stacked = Reranker(CachedScorer(counting, cache))
    expected = [overlap_score(QUERY, d) for d in DOCS]  # the independent reference
    assert Reranker(bare).score(QUERY, DOCS) == pytest.approx(expected)
    assert stacked.score(QUERY, DOCS) == pytest.approx(expected)
    assert counting.count == len(DOCS)
    # a second ranking with one new document: only that one reaches the model
    more = DOCS + ["keys rotate"]
    ranked = stacked.rerank(QUERY, more, top_n=2)
    assert counting.count == len(DOCS) + 1
    best = sorted(range(len(more)), key=lambda i: (-overlap_score(QUERY, more[i]), i))[:2]
    assert [r.index for r in ranked] == best
    # duplicates within one call are scored once
    twice = stacked.score("bread", ["bake bread", "bake bread"])
    assert twice == pytest.approx([overlap_score("bread", "bake bread")] * 2)
    assert counting.count == len(DOCS) + 2


def test_cached_embedding_layer_matches_the_model_and_counts_misses(tmp_path):
    cache = Cache(tmp_path / "c.sqlite", max_bytes=10**7)
    counting = CountingEmbeddingModel(BowModel())
    em = Embedder(CachedEmbeddingModel(counting, cache))
    texts = ["alpha beta", "gamma", "alpha beta"]
    np.testing.assert_allclose(em.embed(texts), bow_vectors(texts), rtol=1e-6)
    np.testing.assert_allclose(em.embed(texts), bow_vectors(texts), rtol=1e-6)
    assert counting.count == 2


def test_cached_reranker_facade_keeps_its_names(tmp_path):
    cache = Cache(tmp_path / "c.sqlite", max_bytes=10**7)
    inner = Reranker(OverlapScorer(), instruction="find keys")
    rr = CachedReranker(inner, cache)
    assert isinstance(rr, Reranker) and rr.reranker is inner and rr.instruction == "find keys"
    rr.score(QUERY, DOCS)
    rr.score(QUERY, DOCS)
    assert rr.scored == len(DOCS)


def test_a_nan_is_never_cached(tmp_path):
    class NanOnce(OverlapScorer):
        calls = 0

        def score_pairs(self, pairs, *, instruction=None):
            NanOnce.calls += 1
            out = super().score_pairs(pairs, instruction=instruction)
            return np.full_like(out, np.nan) if NanOnce.calls == 1 else out

    rr = Reranker(CachedScorer(NanOnce(), Cache(tmp_path / "c.sqlite", max_bytes=10**7)))
    with pytest.raises(QrankError, match="non-finite"):
        rr.score(QUERY, DOCS)
    assert rr.score(QUERY, DOCS) == pytest.approx([overlap_score(QUERY, d) for d in DOCS])


def test_facade_score_pairs_validates_and_checks():
    rr = Reranker(OverlapScorer())
    assert rr.score_pairs([(QUERY, "keys"), ("bread", "bake bread")]).tolist() == pytest.approx(
        [overlap_score(QUERY, "keys"), overlap_score("bread", "bake bread")]
    )
    with pytest.raises(InvalidInput) as err:
        rr.score_pairs([(QUERY, 3)])
    assert err.value.field == "pairs[0]"
    assert rr.score_pairs([]).shape == (0,)


def test_check_finite_and_encoded():
    assert check_finite(np.ones(2)).tolist() == [1.0, 1.0]
    with pytest.raises(QrankError, match="for this request"):
        check_finite(np.array([1.0, np.inf]), context=" for this request")
    e = Encoded((1, 2, 3))
    assert len(e) == 3 and e.type_ids is None
    with pytest.raises(AttributeError):
        e.ids = (4,)  # frozen: an item queued for a worker cannot change under it


class EncodingOverlapScorer(OverlapScorer):
    """An OverlapScorer that tokenizes locally (a character is a token): counts its encodings."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded = 0

    def encode_pairs(self, pairs, *, instruction=None):
        self.encoded += len(pairs)
        return [Encoded(tuple(ord(c) for c in f"{q}\x00{d}")) for q, d in pairs]

    def score_encoded(self, encoded):
        pairs = ["".join(map(chr, e.ids)).split("\x00") for e in encoded]
        return np.asarray([overlap_score(q, d) for q, d in pairs], dtype=np.float32)

    def score_pairs(self, pairs, *, instruction=None):
        return self.score_encoded(self.encode_pairs(pairs, instruction=instruction))


def test_queued_layer_tokenizes_once_in_the_calling_thread():
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from qrank.server.batcher import Batcher
    from qrank.server.queued_models import QueuedReranker
    from qrank.server.state import ServedModel
    from qrank.server.workers import score_runner

    model = EncodingOverlapScorer()
    served = ServedModel("o", "reranker", Reranker(model))
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        served.batcher = Batcher("o", score_runner(model), max_tokens=10_000, max_wait_s=0.001, max_queue=8)
        loop.run_until_complete(served.batcher.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        rr = QueuedReranker(served, loop)
        assert rr.score(QUERY, DOCS) == pytest.approx([overlap_score(QUERY, d) for d in DOCS])
        assert model.encoded == len(DOCS)  # encoded once by the queue layer; the worker ran the ids
    finally:
        asyncio.run_coroutine_threadsafe(served.batcher.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_cached_facades_take_a_bare_model(tmp_path):
    cache = Cache(tmp_path / "c.sqlite", max_bytes=10**7)
    rr = CachedReranker(OverlapScorer(), cache)
    assert rr.score(QUERY, DOCS) == pytest.approx([overlap_score(QUERY, d) for d in DOCS])
    em = CachedEmbedder(BowModel(), cache)
    np.testing.assert_allclose(em.embed(["alpha"]), bow_vectors(["alpha"]), rtol=1e-6)
    assert (rr.scored, em.embedded) == (len(DOCS), 1)
