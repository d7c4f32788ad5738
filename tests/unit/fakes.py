"""Fakes for plumbing tests: deterministic models that follow the contracts, no weights."""

from __future__ import annotations

import zlib

import numpy as np

from qrank.types import ModelInfo


class WordOverlapScorer:
    """Scores a pair by the share of query words found in the document (an independent, obvious rule)."""

    def __init__(self) -> None:
        self.info = ModelInfo(
            id="fake-reranker", kind="fake", role="reranker", max_length=512, dtype="float32", device="cpu"
        )
        self.calls: list[list[tuple[str, str]]] = []

    def count_tokens(self, pairs, *, instruction=None):
        # a fake's "tokenizer": words, plus two separators
        return [len(q.split()) + len(d.split()) + 2 for q, d in pairs]

    def score_pairs(self, pairs, *, instruction=None):
        self.calls.append(list(pairs))
        out = []
        for q, d in pairs:
            words = q.lower().split()
            out.append(sum(w in d.lower().split() for w in words) / max(len(words), 1))
        return np.array(out, dtype=np.float32)


class HashEmbedder:
    """Bag-of-words hashed into ``dim`` buckets, L2-normalised."""

    def __init__(self, dim: int = 32) -> None:
        self.info = ModelInfo(id="fake-embedder", kind="fake", role="embedder", max_length=512, dtype="float32",
                              device="cpu", dim=dim, supports_dims=True)

    def count_tokens(self, texts, *, is_query=False, instruction=None):
        return [len(t.split()) + 2 for t in texts]

    def embed_batch(self, texts, *, is_query=False, instruction=None, dim=None):
        m = np.zeros((len(texts), self.info.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                m[i, zlib.crc32(w.encode()) % self.info.dim] += 1.0
            m[i, 0] += 1e-3  # no all-zero rows, also after truncation
        if dim:
            m = m[:, :dim]
        return m / np.linalg.norm(m, axis=1, keepdims=True)
