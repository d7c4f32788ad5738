"""The query side of :class:`~qrank.pipeline.Pipeline`: given a checked request and its query vector, find
candidates in a collection (dense, or fused with BM25 by reciprocal rank fusion), rerank them max-passage and
build the :class:`SearchHit` list. No model is loaded here and no user input is checked: the pipeline does
both and passes the query's embedding and the reranker in.

>>> import tempfile
>>> from qrank.settings import Settings
>>> from qrank.index.collection import Collection, Manifest
>>> from qrank.index.store import Passage
>>> settings = Settings(home=tempfile.mkdtemp())
>>> col = Collection.create(settings, Manifest("docs", "faiss", 2, {"name": "e"}, 256, 32))
>>> col.store.add([Passage("k", 0, 0, "Rotate keys every 90 days."), Passage("b", 0, 0, "Bananas are yellow.")],
...               np.eye(2, dtype=np.float32))
>>> q = Query("rotate keys", np.array([0.8, 0.6], dtype=np.float32), k=2, candidates=2, filter={})
>>> [(h.id, round(h.score, 2)) for h in Retriever(col, settings.index).search(q, reranker=None)]
[('k', 0.8), ('b', 0.6)]
>>> [h.id for h in Retriever(col, settings.index).lexical("rotate keys", 2, {})]
['k']
>>> col.close()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .cache import CachedReranker
from .index.collection import Collection
from .index.fusion import rrf
from .index.store import Passage
from .long_documents import LongDocuments
from .settings import IndexSettings
from .types import RerankResult, Span

__all__ = ["Query", "Retriever", "SearchHit"]

_MAX_FETCH = 16_384  # passages fetched per first-stage pass: Milvus's per-call result cap


@dataclass(frozen=True)
class SearchHit:
    """One document found by :meth:`~qrank.pipeline.Pipeline.search`.

    ``score`` is what the ranking used: the rerank score when reranked, else the fusion score (hybrid),
    else the dense score. ``dense_score`` is the best passage's cosine similarity to the query;
    ``passage`` is the passage that scored best when the document has several.
    """

    id: str
    score: float
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    dense_score: float | None = None
    rerank_score: float | None = None
    bm25_score: float | None = None
    fusion_score: float | None = None
    passage: str | None = None
    rank: int = 0
    # how the reranker scored the best passage (qrank.long_documents): ``span`` is character offsets into that
    # passage (``passage``, or the document's only one), ``chunks`` and ``truncated`` as in RerankResult
    span: Span | None = None
    chunks: int | None = None
    truncated: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.span is not None:
            out["span"] = self.span._asdict()
        return out


def _report_fields(r: RerankResult | None) -> dict[str, Any]:
    return {} if r is None else {"span": r.span, "chunks": r.chunks, "truncated": r.truncated}


@dataclass(frozen=True)
class Query:
    """One search request, already checked: ``text`` and its embedding ``vector``, ``k`` results from
    ``candidates`` first-stage documents, ``filter`` as :func:`~qrank.index.store.check_filter` returns it,
    and ``hybrid``, ``reranker_instruction``, ``long_documents``, ``min_score`` as
    :meth:`~qrank.pipeline.Pipeline.search` takes them."""

    text: str
    vector: np.ndarray
    k: int
    candidates: int
    filter: Mapping[str, list]
    hybrid: bool = False
    reranker_instruction: str | None = None
    long_documents: LongDocuments | str | None = None
    min_score: float | None = None


class Retriever:
    """Runs checked requests against ``collection`` with the ``index`` settings (``rrf_k``,
    ``rerank_passages``); holds nothing else, so one is cheap to make per request."""

    def __init__(self, collection: Collection, index: IndexSettings) -> None:
        self.collection = collection
        self.index = index

    def search(self, q: Query, reranker: CachedReranker | None) -> list[SearchHit]:
        """The ``q.k`` best documents for ``q``, reranked by ``reranker`` unless it is None (see
        :meth:`~qrank.pipeline.Pipeline.search`)."""
        store = self.collection.store
        dense = self._dense_candidates(q.vector, q.candidates, q.filter)
        bm25: dict[str, float] = {}
        fused: dict[str, float] = {}
        if q.hybrid:
            allowed = store.matching(q.filter) if q.filter else None
            bm25 = dict(self.collection.bm25_search(q.text, q.candidates, allowed))
            fused = dict(rrf([list(dense), list(bm25)], k=self.index.rrf_k)[:q.candidates])
            cand = list(fused)
        else:
            cand = list(dense)[:q.candidates]
        if not cand:
            return []
        docs = store.get(cand)
        cand = [d for d in cand if d in docs]  # deleted meanwhile
        dense_scores = {d: dense[d][0] for d in cand if d in dense}
        missing = [d for d in cand if d not in dense_scores]
        if missing:  # BM25-only candidates still get their true dense score
            for d, vecs in store.vectors(missing).items():
                dense_scores[d] = float(np.max(vecs @ q.vector))
        best_passage = {d: dense[d][1] for d in cand if d in dense}
        rerank_scores: dict[str, float] = {}
        reports: dict[str, RerankResult] = {}
        if reranker is not None:
            rerank_scores, best_passage, reports = self._rerank(reranker, q, cand, docs)
            order = sorted(range(len(cand)), key=lambda i: (-rerank_scores[cand[i]], i))
            cand = [cand[i] for i in order if q.min_score is None or rerank_scores[cand[i]] >= q.min_score]
        hits = []
        for rank, d in enumerate(cand[:q.k], 1):
            passages = docs[d]
            chunk = best_passage.get(d)
            hits.append(self._hit(
                d, passages, rank,
                score=rerank_scores[d] if reranker is not None else (fused[d] if q.hybrid else dense_scores[d]),
                dense_score=dense_scores.get(d),
                rerank_score=rerank_scores.get(d),
                bm25_score=bm25.get(d) if q.hybrid else None,
                fusion_score=fused.get(d) if q.hybrid else None,
                passage=(passages[chunk].text if len(passages) > 1 and chunk is not None and chunk < len(passages)
                         else None),
                **_report_fields(reports.get(d)),
            ))
        return hits

    def lexical(self, query: str, k: int, norm: Mapping[str, list]) -> list[SearchHit]:
        """The ``k`` best documents for ``query`` by BM25 alone (see
        :meth:`~qrank.pipeline.Pipeline.lexical_search`)."""
        store = self.collection.store
        pairs = self.collection.bm25_search(query, k, store.matching(norm) if norm else None)
        docs = store.get([d for d, _ in pairs])
        hits = []
        for d, score in pairs:
            if d not in docs:  # deleted meanwhile
                continue
            hits.append(self._hit(d, docs[d], len(hits) + 1, score=float(score), bm25_score=float(score)))
        return hits

    def _hit(self, doc_id: str, passages: list[Passage], rank: int, **scores: Any) -> SearchHit:
        """A result with the document as the caller gave it (text, title, metadata) and the given scores."""
        text, title = self.collection.document_text(passages)
        return SearchHit(id=doc_id, text=text, title=title, metadata=dict(passages[0].metadata), rank=rank, **scores)

    def _dense_candidates(self, qv: np.ndarray, n_cand: int, norm: Mapping[str, list]) -> dict[str, tuple[float, int]]:
        """Up to ``n_cand`` documents by their best passage: ``{doc_id: (score, chunk)}``, best first.

        Passages are fetched in growing rounds until enough distinct documents are found."""
        store = self.collection.store
        fetch = min(n_cand * 2, _MAX_FETCH)
        while True:
            hits = store.search(qv, fetch, norm or None)
            docs: dict[str, tuple[float, int]] = {}
            for h in hits:
                if h.doc_id not in docs:
                    docs[h.doc_id] = (h.score, h.passage.chunk)
            if len(docs) >= n_cand or len(hits) < fetch or fetch >= _MAX_FETCH:
                return dict(list(docs.items())[:n_cand])
            fetch = min(fetch * 4, _MAX_FETCH)

    def _rerank(self, rr: CachedReranker, q: Query, cand: list[str], docs: dict[str, list[Passage]],
                ) -> tuple[dict[str, float], dict[str, int], dict[str, RerankResult]]:
        """Max-passage reranking: score each candidate's best passages, keep each document's maximum."""
        query, qv = q.text, q.vector
        limit = self.index.rerank_passages
        long_docs = [d for d in cand if len(docs[d]) > limit]
        vecs = self.collection.store.vectors(long_docs) if long_docs else {}
        pairs: list[tuple[str, str]] = []
        owners: list[tuple[str, int]] = []
        for d in cand:
            chunks = range(len(docs[d]))
            if d in vecs:  # the passages closest to the query are the likeliest to hold the answer
                chunks = sorted(np.argsort(-(vecs[d] @ qv))[:limit].tolist())
            for c in chunks:
                pairs.append((query, docs[d][c].text))
                owners.append((d, c))
        scored = rr.score_documents(query, [p for _, p in pairs], instruction=q.reranker_instruction,
                                    long_documents=q.long_documents)
        best: dict[str, float] = {}
        best_chunk: dict[str, int] = {}
        reports: dict[str, RerankResult] = {}
        for (d, c), r in zip(owners, scored):
            if d not in best or r.score > best[d]:
                best[d], best_chunk[d], reports[d] = r.score, c, r
        return best, best_chunk, reports
