"""Small deterministic models for index/pipeline tests (no weights, no tokenizer).

``BowModel`` hashes words into signed buckets (a bag-of-words vector, L2-normalised): texts that share
words get similar vectors, so retrieval behaves sensibly and tests can recompute every vector with
:func:`bow_vectors` as an independent reference. ``OverlapScorer`` scores a pair by the share of query
words found in the document.
"""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np

from qrank import Embedder, Reranker
from qrank.types import ModelInfo

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def bow_vectors(texts, dim: int = 64) -> np.ndarray:
    """The reference computation of :class:`BowModel` vectors."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in words(t):
            h = hashlib.sha1(w.encode()).digest()
            # a per-word weight keeps scores of different documents from tying
            out[i, h[0] % dim] += (0.5 + h[2] / 255) * (1.0 if h[1] & 1 else -1.0)
        if not out[i].any():
            out[i, 0] = 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class BowModel:
    """An EmbeddingModel: hashed bag of words. Counts calls and texts; can fail or stall on purpose."""

    def __init__(self, dim: int = 64, model_id: str = "fake-bow", revision: str = "r1", max_length: int = 512,
                 delay: float = 0.0, interrupt_after: int | None = None) -> None:
        self.info = ModelInfo(id=model_id, kind="fake-bow", role="embedder", max_length=max_length, dtype="float32",
                              device="cpu", revision=revision, dim=dim)
        self.dim = dim
        self.delay = delay
        self.interrupt_after = interrupt_after
        self.calls = 0
        self.texts = 0

    def count_tokens(self, texts, *, is_query: bool = False, instruction=None) -> list[int]:
        return [len(t.split()) for t in texts]

    def embed_batch(self, texts, *, is_query: bool = False, instruction=None, dim=None) -> np.ndarray:
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.texts += len(texts)
        if self.delay:
            time.sleep(self.delay)
        return bow_vectors(texts, self.dim)


class OverlapScorer:
    """A ScoringModel: share of the query's words present in the document (+ a tiny length tie-break)."""

    def __init__(self, model_id: str = "fake-overlap") -> None:
        self.info = ModelInfo(id=model_id, kind="fake-overlap", role="reranker", max_length=512, dtype="float32",
                              device="cpu", revision="r1")
        self.pairs = 0

    def count_tokens(self, pairs, *, instruction=None):
        # a fake's "tokenizer": words, plus two separators
        return [len(q.split()) + len(d.split()) + 2 for q, d in pairs]

    def score_pairs(self, pairs, *, instruction=None) -> np.ndarray:
        self.pairs += len(pairs)
        return np.asarray([overlap_score(q, d) for q, d in pairs], dtype=np.float32)


def overlap_score(query: str, doc: str) -> float:
    q, d = set(words(query)), set(words(doc))
    return len(q & d) / max(len(q), 1) + 1e-4 / (1 + len(d))


def fake_embedder(**kw) -> Embedder:
    return Embedder(BowModel(**kw))


def fake_reranker(**kw) -> Reranker:
    return Reranker(OverlapScorer(**kw))


TOPICS = ["rotate encryption keys", "bake sourdough bread", "train neural networks", "plant tomato seeds",
          "repair bicycle brakes", "brew green tea", "file income taxes", "paint watercolor landscapes"]


def corpus(n: int = 40, seed: int = 0) -> list[dict]:
    """``n`` small documents on a few topics, with metadata ``topic`` and ``even``."""
    rng = np.random.default_rng(seed)
    filler = "the a of and to in is for on with as by at from this that it be are was".split()
    docs = []
    for i in range(n):
        t = i % len(TOPICS)
        body = " ".join(rng.choice(filler, size=12).tolist())
        docs.append({"id": f"doc{i}", "title": f"Note {i}", "text": f"How to {TOPICS[t]}: step {i}. {body}",
                     "metadata": {"topic": t, "even": i % 2 == 0}})
    return docs


NOT_A_DATABASE = b"\x00garbage, not a database\xff" * 64  # what a damaged store.sqlite is overwritten with


def build_bow_collection(settings, name: str, n: int = 6) -> None:
    """A small collection ``name`` under ``settings.home``, embedded by :class:`BowModel` (no model files)."""
    from qrank.pipeline import Pipeline

    with Pipeline.open(name, embedder=Embedder(BowModel()), settings=settings) as p:
        p.add(corpus(n), progress=False)


def milvus_lite_or_skip(tmp_path) -> None:
    """Skip the calling test, saying why, when Milvus Lite cannot start in this environment."""
    import pytest

    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(str(tmp_path / "probe.db"))
        client.list_collections()
        client.close()
    except Exception as exc:  # any failure to start means the backend cannot be tested here
        pytest.skip(f"milvus-lite cannot start here: {exc.__class__.__name__}: {exc}")
