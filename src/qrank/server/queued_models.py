"""Reranker / Embedder look-alikes whose work goes through a served model's queue.

Synchronous code running in a worker thread, never on the event loop (the
:class:`~qrank.pipeline.Pipeline` behind the search routes), calls ``score`` / ``embed`` as on the local
facades; the work joins the model's queue, so it is batched with HTTP requests and bounded by the same
limits.

>>> rr = QueuedReranker(served, loop)        # doctest: +SKIP
>>> rr.score("q", ["a", "b"])                # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from ..reranker import check_documents, check_query
from .state import ServedModel
from .workers import EmbedJob, ScoreJob


class _Queued:
    def __init__(self, served: ServedModel, loop: asyncio.AbstractEventLoop) -> None:
        self.served = served
        self.loop = loop

    @property
    def info(self):
        return self.served.info

    @property
    def model(self):
        return self.served.model

    def _run(self, job, cost: int, size: int):
        if self.served.batcher is None:
            raise RuntimeError("the server has not started this model's queue")
        future = asyncio.run_coroutine_threadsafe(self.served.batcher.submit(job, cost=cost, size=size), self.loop)
        return future.result()


class QueuedReranker(_Queued):
    """``score`` / ``score_pairs`` through the served reranker's queue."""

    instruction = None

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None) -> np.ndarray:
        pairs = list(pairs)
        if not pairs:
            return np.zeros((0,), dtype=np.float32)
        cost = sum(self.served.count_tokens(pairs, instruction=instruction))
        return self._run(ScoreJob(pairs, instruction), cost, len(pairs))

    def score(self, query: str, documents: Sequence[str], *, instruction: str | None = None) -> list[float]:
        query = check_query(query)
        documents = check_documents(documents)
        return [float(s) for s in self.score_pairs([(query, d) for d in documents], instruction=instruction)]


class QueuedEmbedder(_Queued):
    """``embed`` through the served embedder's queue."""

    @property
    def dim(self) -> int:
        return int(self.info.dim or 0)

    def embed(
        self, texts, *, is_query: bool = False, instruction: str | None = None, dim: int | None = None
    ) -> np.ndarray:
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        if not batch:
            return np.zeros((0, dim or self.dim), dtype=np.float32)
        cost = sum(self.served.count_tokens(batch, is_query=is_query, instruction=instruction))
        vectors = self._run(EmbedJob(batch, is_query=is_query, instruction=instruction, dim=dim), cost, len(batch))
        return vectors[0] if single else vectors

    def embed_query(self, text: str, *, dim: int | None = None) -> np.ndarray:
        return self.embed(text, is_query=True, dim=dim)

    def embed_documents(self, texts: Sequence[str], *, dim: int | None = None) -> np.ndarray:
        return self.embed(list(texts), is_query=False, dim=dim)
