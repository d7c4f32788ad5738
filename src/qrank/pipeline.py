"""Two-stage search over a collection: the embedder finds candidates (optionally fused with BM25 by
reciprocal rank fusion), the reranker orders them. Embeddings and reranker scores go through the
persistent cache (:mod:`qrank.cache`).

>>> import tempfile
>>> from qrank import Pipeline
>>> from qrank.settings import Settings
>>> p = Pipeline.open("docs", embedder="../shared/models/all-MiniLM-L6-v2",
...                   reranker="../shared/models/scifact-minilm-ce", settings=Settings(home=tempfile.mkdtemp()))
>>> _ = p.add(["Rotate keys every 90 days.", "Bananas are yellow."], ids=["k", "b"], progress=False)
>>> p.search("how do I rotate keys?", k=1)[0].id
'k'
>>> p.close()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cache import Cache, CachedEmbedder, CachedReranker
from .deprecation import warn_deprecated
from .embedder import legacy_query
from .engine.batching import plan_batches
from .errors import CollectionNotFound, InvalidInput
from .index.chunking import Chunker
from .index.collection import Collection, CollectionSummary, Manifest, check_name, drop_collection
from .index.collection import list_collections as _list_collections
from .index.documents import Document, check_ids, doc_hash, indexed_text, to_documents
from .index.fusion import rrf
from .index.store import Passage, check_filter
from .long_documents import LongDocuments
from .reranker import check_min_score, check_query
from .settings import Settings
from .types import RerankResult, Span

log = logging.getLogger(__name__)

__all__ = ["Pipeline", "SearchHit", "delete_collection", "list_collections"]

_MAX_K = 10_000  # k and candidates are for ranking, not export: a larger value is a mistake, said as a 4xx
_MAX_FETCH = 16_384  # passages fetched per first-stage pass: Milvus's per-call result cap


@dataclass(frozen=True)
class SearchHit:
    """One document found by :meth:`Pipeline.search`.

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


def _source_name(src: Any) -> str:
    """A name that loads the model again later: absolute for local folders, else as given."""
    name = src if isinstance(src, str) else src.info.id
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def _check_positive(value: Any, name: str, limit: int = _MAX_K) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise InvalidInput(name, f"must be an integer between 1 and {limit}, got {value!r}")
    return value


class Pipeline:
    """A collection with its embedder, an optional reranker and the caches.

    Open with :meth:`open`. Models given by name load on first use; instances (loaded
    :class:`~qrank.Embedder` / :class:`~qrank.Reranker`) are used as they are. Thread-safe.
    """

    def __init__(
        self, collection: Collection, *, embedder: Any, reranker: Any, settings: Settings, cache: Cache | None
    ) -> None:
        self.collection = collection
        self.settings = settings
        self.cache = cache
        self._embedder_src = embedder
        self._reranker_src = reranker
        self._embedder: CachedEmbedder | None = None
        self._reranker: CachedReranker | None = None
        self._chunker: Chunker | None = None
        self._lock = threading.RLock()

    # --- opening --------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        name: str,
        *,
        embedder: Any = None,
        reranker: Any = None,
        settings: Settings | None = None,
        create: bool = True,
        backend: str | None = None,
    ) -> Pipeline:
        """Open collection ``name`` under ``settings.home``; create it when it does not exist, ``create``
        is true and an ``embedder`` (name or instance) is given.

        An existing collection uses the embedder it was built with unless another is given, which must
        then be the same model (same weights revision, same dimension). ``reranker`` (name or instance)
        defaults to the collection's default reranker, if it has one.
        """
        settings = settings or Settings()
        check_name(name)
        cache = Cache.from_settings(settings)
        if Collection.exists(settings, name):
            col = Collection.open(settings, name)
            p = cls(col, embedder=embedder if embedder is not None else col.manifest.embedder.get("name"),
                    reranker=reranker if reranker is not None else col.manifest.reranker, settings=settings,
                    cache=cache)
            if embedder is not None and not isinstance(embedder, str):
                try:
                    p.embedder  # an instance is checked against the collection now
                except BaseException:
                    p.close()
                    raise
            return p
        if embedder is None or not create:
            Collection.open(settings, name)  # raises CollectionNotFound with the known names
            raise CollectionNotFound(name)
        em = _load_embedder(embedder, settings)
        if not em.dim:
            raise InvalidInput("embedder", f"{em.info.id} does not report its dimension")
        backend = backend or settings.index.backend
        if backend not in ("faiss", "milvus"):
            raise InvalidInput("backend", f"unknown vector store {backend!r} (expected 'faiss' or 'milvus')")
        manifest = Manifest(
            name=name,
            backend=backend,
            dim=int(em.dim),
            embedder={"name": _source_name(embedder), "id": em.info.id, "revision": em.info.revision,
                      "kind": em.info.kind, "dim": int(em.dim)},
            chunk_tokens=settings.index.chunk_tokens,
            chunk_overlap=settings.index.chunk_overlap,
            reranker=_source_name(reranker) if reranker is not None else None,
        )
        col = Collection.create(settings, manifest)
        return cls(col, embedder=em, reranker=reranker, settings=settings, cache=cache)

    @property
    def name(self) -> str:
        return self.collection.name

    @property
    def embedder(self) -> CachedEmbedder:
        """The collection's embedder (loaded and checked on first use), behind the cache."""
        with self._lock:
            if self._embedder is None:
                em = _load_embedder(self._embedder_src, self.settings)
                self._check_embedder(em)
                self._embedder = CachedEmbedder(em, self.cache)
            return self._embedder

    @property
    def reranker(self) -> CachedReranker | None:
        """The reranker behind the cache, or None when the pipeline has none."""
        with self._lock:
            if self._reranker is None and self._reranker_src is not None:
                src = self._reranker_src
                if isinstance(src, str):
                    from .reranker import Reranker

                    src = Reranker.from_pretrained(src, settings=self.settings)
                if isinstance(src, CachedReranker):
                    src = src.reranker
                if not hasattr(src, "score") or not hasattr(src, "info"):
                    raise InvalidInput("reranker", f"must be a model name or a Reranker, got {type(src).__name__}")
                self._reranker = CachedReranker(src, self.cache)
            return self._reranker

    def _check_embedder(self, em) -> None:
        m = self.collection.manifest
        built = m.embedder
        if int(em.dim or 0) != m.dim:
            raise InvalidInput(
                "embedder",
                f"dimension mismatch: collection {self.name!r} holds {m.dim}-dimensional vectors "
                f"from {built.get('id')}, but {em.info.id} gives {em.dim}; open it with its own "
                f"embedder or index into a new collection",
            )
        if em.info.revision != built.get("revision"):
            if em.info.id in (built.get("id"), built.get("name")) or _source_name(em) == built.get("name"):
                log.warning("the files of %s changed since collection %s was built; stored vectors may differ",
                            em.info.id, self.name)
            else:
                raise InvalidInput(
                    "embedder",
                    f"collection {self.name!r} was built with {built.get('id')} (revision "
                    f"{built.get('revision')}), not {em.info.id} (revision {em.info.revision}): "
                    f"vectors of different models are not comparable",
                )

    def set_default_reranker(self, reranker: str | None) -> None:
        """Remember a reranker (a loadable name) for later searches of this collection."""
        with self._lock:
            self.collection.manifest.reranker = _source_name(reranker) if reranker else None
            self.collection.manifest.save(self.collection.path)
            self._reranker_src, self._reranker = reranker, None

    def chunker(self) -> Chunker:
        with self._lock:
            if self._chunker is None:
                m = self.collection.manifest
                self._chunker = Chunker(self.embedder, m.chunk_tokens, m.chunk_overlap)
            return self._chunker

    # --- writing --------------------------------------------------------------------------------
    def add(
        self,
        documents: Iterable[str | Mapping | Document],
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping | None] | None = None,
        progress: bool | None = None,
    ) -> dict[str, int]:
        """Add or replace documents; returns counts (``added``, ``replaced``, ``unchanged``, ``passages``,
        ``embedded``, ``count``).

        Documents are strings (with ``ids`` or content-hash ids), ``{"id", "text", "title"?, "metadata"?}``
        mappings or :class:`~qrank.index.documents.Document`. A document whose id exists replaces it; an
        unchanged one costs nothing. Work runs in token-budget batches, each committed when done, so an
        interrupted add keeps every finished batch and a repeat redoes only the rest. ``progress``: a bar
        on a terminal, a log line every 30 s otherwise (:func:`qrank.progress.progress`); False for none.

        >>> import tempfile
        >>> from qrank.settings import Settings
        >>> settings = Settings(home=tempfile.mkdtemp())
        >>> p = Pipeline.open("docs", embedder="../shared/models/all-MiniLM-L6-v2", settings=settings)
        >>> p.add([{"id": "a", "text": "Rotate keys every 90 days.", "metadata": {"lang": "en"}}], progress=False)
        {'documents': 1, 'added': 1, 'replaced': 0, 'unchanged': 0, 'passages': 1, 'embedded': 1, 'count': 1}
        >>> p.close()
        """
        with self.collection.writing():  # a concurrent add of the same collection waits, then finds our work done
            return self._add_locked(documents, ids=ids, metadata=metadata, progress=progress)

    def _add_locked(self, documents, *, ids, metadata, progress) -> dict[str, int]:
        from .progress import progress as progress_bar

        docs = to_documents(documents, ids=ids, metadata=metadata)
        em = self.embedder
        chunker = self.chunker()
        chunking = (chunker.max_tokens, chunker.overlap)
        store = self.collection.store
        report = {"documents": len(docs), "added": 0, "replaced": 0, "unchanged": 0, "passages": 0, "embedded": 0}
        embedded_before = em.embedded
        window = self.settings.index.ingest_window
        with progress_bar(total=len(docs), desc=f"indexing {self.name}", unit="doc", enabled=progress) as bar:
            for start in range(0, len(docs), window):
                part = docs[start : start + window]
                known = store.hashes([d.id for d in part])
                todo = []
                for d in part:
                    h = doc_hash(d, chunking)
                    if known.get(d.id) == h:
                        report["unchanged"] += 1
                    else:
                        todo.append((d, h))
                        report["replaced" if d.id in known else "added"] += 1
                bar.update(len(part) - len(todo))
                if todo:
                    report["passages"] += self._ingest(todo, chunker, bar)
        store.persist()
        report["embedded"] = em.embedded - embedded_before
        report["count"] = store.count()
        log.info("collection %s: %s", self.name, report)
        return report

    def _ingest(self, todo: list[tuple[Document, str]], chunker: Chunker, bar) -> int:
        """Chunk, embed in token-budget batches, and commit each document as soon as all its passages are embedded."""
        texts = [indexed_text(d) for d, _ in todo]
        passages: list[Passage] = []
        lengths: list[int] = []
        owner: list[int] = []
        first: list[int] = []
        for di, ((doc, h), text, spans) in enumerate(zip(todo, texts, chunker.split(texts))):
            first.append(len(passages))
            for ci, (s, e, n) in enumerate(spans):
                passages.append(Passage(doc.id, ci, s, text[s:e], doc.title, doc.metadata, h))
                lengths.append(n + chunker.specials)
                owner.append(di)
        counts = [b - a for a, b in zip(first, first[1:] + [len(passages)])]
        remaining = list(counts)
        vectors = np.zeros((len(passages), self.collection.manifest.dim), dtype=np.float32)
        eng = self.settings.engine
        for batch in plan_batches(lengths, eng.max_batch_tokens, eng.max_batch_size):
            vectors[batch] = self.embedder.embed([passages[i].text for i in batch])
            done = []
            for i in batch:
                remaining[owner[i]] -= 1
                if remaining[owner[i]] == 0:
                    done.append(owner[i])
            if done:
                rows = [j for di in sorted(done) for j in range(first[di], first[di] + counts[di])]
                self.collection.store.add([passages[j] for j in rows], vectors[rows])
                bar.update(len(done))
        return len(passages)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents from the vector store, BM25 (rebuilt on the next hybrid search) and the cache
        (their embeddings and every score computed for them); returns how many existed."""
        ids = check_ids(ids)
        if not ids:
            raise InvalidInput("ids", "must not be empty")
        store = self.collection.store
        old = store.get(ids)
        removed = store.delete(ids)
        if self.cache is not None and old:
            self.cache.forget(p.text for ps in old.values() for p in ps)
        return removed

    # --- searching ------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        k: int = 10,
        *,
        candidates: int | None = None,
        rerank: bool | None = None,
        hybrid: bool = False,
        filter: Mapping[str, Any] | None = None,
        reranker_instruction: str | None = None,
        query_task: str | None = None,
        query_prompt: str | None = None,
        instruction: str | None = None,
        long_documents: LongDocuments | str | None = None,
        min_score: float | None = None,
    ) -> list[SearchHit]:
        """The ``k`` best documents for ``query``.

        Stage one takes ``candidates`` documents (default ``settings.index.candidates``) by dense
        similarity, or with ``hybrid`` by reciprocal rank fusion of dense and BM25 rankings; stage two
        reranks them (``rerank``: default when the pipeline has a reranker) scoring up to
        ``index.rerank_passages`` passages per document and keeping the best (max-passage). ``filter``
        keeps documents whose metadata match (``{"key": value}`` or ``{"key": [v1, v2]}``).

        Each model gets its own instruction: ``reranker_instruction`` (a Qwen3 reranker's task),
        ``query_task`` (a Qwen3-Embedding query task) or ``query_prompt`` (a sentence-transformers query
        prefix); each None keeps the model's default. ``instruction`` is the deprecated one-for-all spelling:
        it fills every role not given by name. ``long_documents`` ("chunk", "truncate", "error" or a
        :class:`~qrank.long_documents.LongDocuments`) is what the reranker does with a passage longer than its
        window (default: the reranker's policy); hits say it in ``span``, ``chunks`` and ``truncated``.
        ``min_score`` leaves out documents whose rerank score is below it (P(relevant) with a calibrated
        reranker); it needs reranking.

        >>> import tempfile
        >>> from qrank.settings import Settings
        >>> p = Pipeline.open("docs", embedder="../shared/models/all-MiniLM-L6-v2",
        ...                   reranker="../shared/models/scifact-minilm-ce", settings=Settings(home=tempfile.mkdtemp()))
        >>> _ = p.add(["Rotate keys every 90 days.", "Bananas are yellow."], ids=["k", "b"], progress=False)
        >>> hits = p.search("how do I rotate keys?", k=2)
        >>> [h.id for h in hits], hits[0].rerank_score > hits[1].rerank_score, hits[0].dense_score > 0
        (['k', 'b'], True, True)
        >>> p.close()
        """
        if instruction is not None:
            warn_deprecated("Pipeline.search(instruction=...)", "reranker_instruction= and query_task= "
                            "(Qwen3-Embedding) or query_prompt= (sentence-transformers)")
            reranker_instruction = reranker_instruction if reranker_instruction is not None else instruction
            query_task, query_prompt = legacy_query(self.embedder.info, instruction, query_task, query_prompt)
        query = check_query(query)
        k = _check_positive(k, "k")
        n_cand = max(
            _check_positive(candidates if candidates is not None else self.settings.index.candidates, "candidates"), k
        )
        norm = check_filter(filter)
        if rerank is not None and not isinstance(rerank, bool):
            raise InvalidInput("rerank", "must be true, false or null")
        rr = self.reranker if rerank is not False else None
        if rerank is True and rr is None:
            raise InvalidInput(
                "reranker", f"collection {self.name!r} has no reranker; pass reranker= to Pipeline.open or rerank=False"
            )
        min_score = check_min_score(min_score)
        if min_score is not None and rr is None:  # dense and fused scores are no relevance a threshold could mean
            raise InvalidInput("min_score", "filters on the rerank score, and this search does not rerank")
        store = self.collection.store
        qv = self.embedder.embed(query, is_query=True, query_task=query_task, query_prompt=query_prompt)
        dense = self._dense_candidates(qv, n_cand, norm)
        bm25: dict[str, float] = {}
        fused: dict[str, float] = {}
        if hybrid:
            allowed = store.matching(norm) if norm else None
            bm25 = dict(self.collection.bm25_search(query, n_cand, allowed))
            fused = dict(rrf([list(dense), list(bm25)], k=self.settings.index.rrf_k)[:n_cand])
            cand = list(fused)
        else:
            cand = list(dense)[:n_cand]
        if not cand:
            return []
        docs = store.get(cand)
        cand = [d for d in cand if d in docs]  # deleted meanwhile
        dense_scores = {d: dense[d][0] for d in cand if d in dense}
        missing = [d for d in cand if d not in dense_scores]
        if missing:  # BM25-only candidates still get their true dense score
            for d, vecs in store.vectors(missing).items():
                dense_scores[d] = float(np.max(vecs @ qv))
        best_passage = {d: dense[d][1] for d in cand if d in dense}
        rerank_scores: dict[str, float] = {}
        reports: dict[str, RerankResult] = {}
        if rr is not None:
            rerank_scores, best_passage, reports = self._rerank(rr, query, qv, cand, docs, reranker_instruction,
                                                                long_documents)
            order = sorted(range(len(cand)), key=lambda i: (-rerank_scores[cand[i]], i))
            cand = [cand[i] for i in order if min_score is None or rerank_scores[cand[i]] >= min_score]
        hits = []
        for rank, d in enumerate(cand[:k], 1):
            passages = docs[d]
            chunk = best_passage.get(d)
            hits.append(self._hit(
                d, passages, rank,
                score=rerank_scores[d] if rr is not None else (fused[d] if hybrid else dense_scores[d]),
                dense_score=dense_scores.get(d),
                rerank_score=rerank_scores.get(d),
                bm25_score=bm25.get(d) if hybrid else None,
                fusion_score=fused.get(d) if hybrid else None,
                passage=(passages[chunk].text if len(passages) > 1 and chunk is not None and chunk < len(passages)
                         else None),
                **_report_fields(reports.get(d)),
            ))
        return hits

    def lexical_search(self, query: str, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> list[SearchHit]:
        """The ``k`` best documents for ``query`` by BM25 alone (no model runs): the baseline a user compares
        the dense and reranked rankings with. ``score`` and ``bm25_score`` are the BM25 score.

        >>> import tempfile
        >>> from qrank.settings import Settings
        >>> settings = Settings(home=tempfile.mkdtemp())
        >>> p = Pipeline.open("docs", embedder="../shared/models/all-MiniLM-L6-v2", settings=settings)
        >>> _ = p.add(["Rotate keys every 90 days.", "Bananas are yellow."], ids=["k", "b"], progress=False)
        >>> [h.id for h in p.lexical_search("rotate keys", k=2)]
        ['k']
        >>> p.close()
        """
        query = check_query(query)
        k = _check_positive(k, "k")
        norm = check_filter(filter)
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

    def _rerank(self, rr: CachedReranker, query: str, qv: np.ndarray, cand: list[str], docs: dict[str, list[Passage]],
                reranker_instruction: str | None, long_documents=None,
                ) -> tuple[dict[str, float], dict[str, int], dict[str, RerankResult]]:
        """Max-passage reranking: score each candidate's best passages, keep each document's maximum."""
        limit = self.settings.index.rerank_passages
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
        scored = rr.score_documents(query, [p for _, p in pairs], instruction=reranker_instruction,
                                    long_documents=long_documents)
        best: dict[str, float] = {}
        best_chunk: dict[str, int] = {}
        reports: dict[str, RerankResult] = {}
        for (d, c), r in zip(owners, scored):
            if d not in best or r.score > best[d]:
                best[d], best_chunk[d], reports[d] = r.score, c, r
        return best, best_chunk, reports

    # --- describing -----------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """A JSON-ready description: name, backend, ``count`` (documents), passages, dim, embedder, reranker,
        chunking, path, store details and cache statistics."""
        out = self.collection.info()
        out["cache"] = self.cache.stats() if self.cache is not None else None
        return out

    def close(self) -> None:
        self.collection.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, backend={self.collection.manifest.backend!r})"


def _load_embedder(src: Any, settings: Settings):
    if src is None:
        raise InvalidInput("embedder", "no embedder given and the collection names none")
    if isinstance(src, CachedEmbedder):
        return src.embedder
    if isinstance(src, str):
        from .embedder import Embedder

        return Embedder.from_pretrained(src, settings=settings)
    if not hasattr(src, "embed") or not hasattr(src, "info"):
        raise InvalidInput("embedder", f"must be a model name or an Embedder, got {type(src).__name__}")
    return src


def list_collections(settings: Settings | None = None) -> list[CollectionSummary]:
    """Every collection under ``settings.home`` (name, backend, count, dim, embedder, reranker, path).

    >>> import tempfile
    >>> from qrank.index.collection import Collection, Manifest
    >>> settings = Settings(home=tempfile.mkdtemp())
    >>> for name in ("docs", "scifact"):
    ...     Collection.create(settings, Manifest(name, "faiss", 4, {"name": "e"}, 256, 32)).close()
    >>> [c.name for c in list_collections(settings)]
    ['docs', 'scifact']
    """
    return _list_collections(settings)


def delete_collection(name: str, settings: Settings | None = None) -> None:
    """Remove a whole collection (folder, and its Milvus collection on a cluster)."""
    drop_collection(settings or Settings(), check_name(name))

