"""The queue layer: models whose work goes through a served model's queue, and the facades over them.

Synchronous code running in a worker thread, never on the event loop (the
:class:`~qrank.pipeline.Pipeline` behind the search routes), uses ``QueuedReranker`` / ``QueuedEmbedder``
as it would the local facades. The work is tokenized once in the calling thread, exactly as at the HTTP
door, then joins the model's queue, so it is batched with HTTP requests and bounded by the same limits.

The server builds them in :class:`~qrank.server.collections.ServerCollections` as
``QueuedReranker(served_model, event_loop)``; tests/unit/test_layers.py runs one through a real batcher.
"""

from __future__ import annotations

import asyncio

import numpy as np

from ..embedder import Embedder
from ..models.base import Layer
from ..reranker import Reranker
from .state import ServedModel
from .workers import embed_job, score_job


class _Queued(Layer):
    def __init__(self, served: ServedModel, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(served.model)
        self.served = served
        self.loop = loop

    def _run(self, job, counts: list[int]):
        if self.served.batcher is None:
            raise RuntimeError("the server has not started this model's queue")
        submit = self.served.batcher.submit(job, cost=sum(counts), size=len(counts))
        return asyncio.run_coroutine_threadsafe(submit, self.loop).result()


class QueuedScorer(_Queued):
    """A :class:`~qrank.models.base.ScoringModel` whose pairs go through the served reranker's queue."""

    def score_pairs(self, pairs, *, instruction: str | None = None) -> np.ndarray:
        pairs = list(pairs)
        if not pairs:
            return np.zeros((0,), dtype=np.float32)
        return self._run(*score_job(self.inner, pairs, instruction))


class QueuedEmbeddingModel(_Queued):
    """An :class:`~qrank.models.base.EmbeddingModel` whose texts go through the served embedder's queue."""

    def embed_batch(self, texts, *, is_query: bool = False, instruction: str | None = None, dim: int | None = None):
        texts = list(texts)
        if not texts:
            return np.zeros((0, dim or self.info.dim), dtype=np.float32)
        return self._run(*embed_job(self.inner, texts, is_query=is_query, instruction=instruction, dim=dim))


class QueuedReranker(Reranker):
    """A :class:`~qrank.Reranker` over a :class:`QueuedScorer`."""

    def __init__(self, served: ServedModel, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(QueuedScorer(served, loop))


class QueuedEmbedder(Embedder):
    """An :class:`~qrank.Embedder` over a :class:`QueuedEmbeddingModel`."""

    def __init__(self, served: ServedModel, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(QueuedEmbeddingModel(served, loop))
