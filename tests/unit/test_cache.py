"""The persistent cache: canonical keys, LRU eviction under a byte limit, hit/miss counts, wrappers."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from index_fakes import BowModel, OverlapScorer, bow_vectors, overlap_score

from qrank import Embedder, Reranker
from qrank.cache import Cache, CachedEmbedder, CachedReranker, cache_key, cached_embed, cached_scores, embedding_key


def test_keys_are_sha256_of_canonical_json():
    expected = hashlib.sha256(
        json.dumps({"a": 1, "b": "é"}, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).digest()
    assert cache_key(b="é", a=1) == expected
    info = BowModel().info
    base = embedding_key(info, 64, None, False, "text")
    # every field that changes the answer changes the key
    assert len({base, embedding_key(info, 32, None, False, "text"), embedding_key(info, 64, "inst", False, "text"),
                embedding_key(info, 64, None, True, "text"), embedding_key(info, 64, None, False, "text2"),
                embedding_key(BowModel(revision="r2").info, 64, None, False, "text")}) == 6


def test_lru_eviction_keeps_recent_entries_under_the_limit(tmp_path):
    cache = Cache(tmp_path / "c.sqlite", max_bytes=10_000)
    value = b"x" * 900  # ~1 KB per entry with key and overhead
    for i in range(8):
        cache.put_many("embedding", [(cache_key(i=i), None, value)])
    assert cache.get_many("embedding", [cache_key(i=0)])  # touch 0: now the most recently used
    for i in range(8, 14):
        cache.put_many("embedding", [(cache_key(i=i), None, value)])
    st = cache.stats()
    assert st["bytes"] <= 10_000 and st["evictions"] > 0
    assert cache.contains("embedding", cache_key(i=0))  # recently used survives
    assert not cache.contains("embedding", cache_key(i=1))  # least recently used went first
    assert cache.contains("embedding", cache_key(i=13))
    # the running total matches the rows (triggers keep it in step)
    total = cache._db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM entries").fetchone()
    assert (st["bytes"], st["entries"]) == tuple(total)


def test_cached_embed_counts_and_matches_the_model(tmp_path):
    cache = Cache(tmp_path / "c.sqlite", max_bytes=10**8)
    model = BowModel()
    em = CachedEmbedder(Embedder(model), cache)
    texts = ["alpha beta", "gamma", "alpha beta", "delta"]
    first = em.embed(texts)
    np.testing.assert_allclose(first, bow_vectors(texts), rtol=1e-6)
    assert model.texts == 3 and em.embedded == 3  # the duplicate was embedded once
    again = em.embed(texts)
    np.testing.assert_array_equal(first, again)
    assert model.texts == 3
    st = cache.stats()
    assert st["hits"]["embedding"] == 3 and st["misses"]["embedding"] == 3
    assert em.embed("gamma").shape == (64,)
    # queries and documents are different entries
    em.embed("gamma", is_query=True)
    assert model.texts == 4
    # a fresh process (new Cache object on the same file) sees the stored vectors
    other = Cache(tmp_path / "c.sqlite", max_bytes=10**8)
    np.testing.assert_array_equal(cached_embed(Embedder(BowModel()), texts, other), first)
    assert other.stats()["misses"]["embedding"] == 0


def test_cached_scores_and_forget(tmp_path):
    cache = Cache(tmp_path / "c.sqlite", max_bytes=10**8)
    scorer = OverlapScorer()
    rr = CachedReranker(Reranker(scorer), cache)
    docs = ["rotate keys now", "bake bread", "keys"]
    s1 = rr.score("rotate keys", docs)
    assert s1 == pytest.approx([overlap_score("rotate keys", d) for d in docs])
    assert rr.rerank("rotate keys", docs, top_n=1)[0].index == 0
    assert scorer.pairs == 3 and rr.scored == 3
    pairs = [("rotate keys", d) for d in docs] + [("bread", "bake bread")]
    np.testing.assert_allclose(cached_scores(Reranker(scorer), pairs, cache)[:3], s1, rtol=1e-6)
    assert scorer.pairs == 4
    # forgetting a text drops its scores (for every query) and its embeddings
    cached_embed(Embedder(BowModel()), ["bake bread"], cache)
    assert cache.forget(["bake bread"]) == 3
    rr.score("rotate keys", docs)
    assert scorer.pairs == 5


def test_disabled_cache_passes_through():
    from qrank import Settings

    assert Cache.from_settings(Settings(cache={"enabled": False})) is None
    model = BowModel()
    em = CachedEmbedder(Embedder(model), None)
    em.embed(["a"]), em.embed(["a"])
    assert model.texts == 2
