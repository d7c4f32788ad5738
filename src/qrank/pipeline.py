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
from pathlib import Path
from typing import Any

from .cache import Cache, CachedEmbedder, CachedReranker
from .deprecation import warn_deprecated
from .embedder import legacy_query
from .errors import CollectionNotFound, InvalidInput
from .index.chunking import Chunker
from .index.collection import Collection, CollectionSummary, Manifest, check_name, drop_collection
from .index.collection import list_collections as _list_collections
from .index.documents import Document, check_ids, to_documents
from .index.store import check_filter
from .ingest import Indexer
from .long_documents import LongDocuments
from .reranker import check_min_score, check_query
from .retrieval import Query, Retriever, SearchHit
from .settings import IndexSettings, Settings

log = logging.getLogger(__name__)

__all__ = ["Pipeline", "SearchHit", "delete_collection", "list_collections", "long_documents_info"]

_MAX_K = 10_000  # k and candidates are for ranking, not export: a larger value is a mistake, said as a 4xx


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
        # the passages this embedder takes whole, measured now, before any document: info() and the log say them
        chunker = Chunker(em, settings.index.chunk_tokens, settings.index.chunk_overlap)
        manifest = Manifest(
            name=name,
            backend=backend,
            dim=int(em.dim),
            embedder={"name": _source_name(embedder), "id": em.info.id, "revision": em.info.revision,
                      "kind": em.info.kind, "dim": int(em.dim)},
            chunk_tokens=settings.index.chunk_tokens,
            chunk_overlap=settings.index.chunk_overlap,
            reranker=_source_name(reranker) if reranker is not None else None,
            passage_tokens=chunker.max_tokens,
            passage_overlap=chunker.overlap,
        )
        col = Collection.create(settings, manifest)
        p = cls(col, embedder=em, reranker=reranker, settings=settings, cache=cache)
        p._say_chunking(em.info.id)
        return p

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
        if em.info.revision != built.get("revision") and not self._restamp_legacy(em):
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

    def _restamp_legacy(self, em) -> bool:
        """A collection built before 2026-12-08 holds an older fingerprint of its local embedder (file times until
        2026-12-07, then contents without the settings files): when the folder still gives that one (the same
        files), store the current fingerprint instead, once, rather than warning at every open."""
        built = self.collection.manifest.embedder
        folder = Path(_source_name(em))
        if not em.info.revision.startswith("local-") or not folder.is_dir():
            return False
        from .models.base import legacy_local_revisions

        # a suffix after the fingerprint (+fp8 ...) says how the model runs: only the same suffix is the same model
        suffix = em.info.revision[len("local-") + 16:]
        if built.get("revision") not in {old + suffix for old in legacy_local_revisions(folder)}:
            return False
        try:  # this field alone: the rest of the manifest may have changed on disk since it was opened
            self.collection.update_manifest(embedder={**built, "revision": em.info.revision})
        except OSError as exc:  # a read-only collection: the files are the same, so it serves; it re-checks next time
            self.collection.manifest.embedder = {**built, "revision": em.info.revision}
            log.info("collection %s: could not store its embedder's new fingerprint (%s)", self.name, exc)
            return True
        log.info("collection %s: stored its embedder's current fingerprint %s (was %s, an older scheme of the same "
                 "files)", self.name, em.info.revision, built.get("revision"))
        return True

    def set_default_reranker(self, reranker: str | None) -> None:
        """Remember a reranker (a loadable name) for later searches of this collection."""
        with self._lock:
            self.collection.update_manifest(reranker=_source_name(reranker) if reranker else None)
            self._reranker_src, self._reranker = reranker, None

    def chunker(self) -> Chunker:
        with self._lock:
            if self._chunker is None:
                m = self.collection.manifest
                self._chunker = Chunker(self.embedder, m.chunk_tokens, m.chunk_overlap)
                self._record_passages(self._chunker)
            return self._chunker

    def _record_passages(self, chunker: Chunker) -> None:
        """Keep the manifest's passage size the one the embedder gives, so that info() says it without loading a
        model: a collection made before 2026-12-08 records it at its next add, and an embedder whose window
        changed (another ``max_length``) records its new size."""
        m = self.collection.manifest
        if (m.passage_tokens, m.passage_overlap) == (chunker.max_tokens, chunker.overlap):
            return
        try:  # these fields alone: the rest of the manifest may have changed on disk since it was opened
            self.collection.update_manifest(passage_tokens=chunker.max_tokens, passage_overlap=chunker.overlap)
        except OSError as exc:  # a read-only collection: the size is measured again at each open
            m.passage_tokens, m.passage_overlap = chunker.max_tokens, chunker.overlap
            log.info("collection %s: could not record its passage size (%s)", self.name, exc)

    def _say_chunking(self, embedder_id: str) -> None:
        """Say, when the collection is created and before any document is read, how long documents will be
        handled: an ``index.chunk_tokens`` beyond the embedder's window is capped there (a warning unless it is
        the default, which the docs promise to fit every embedder), and what the reranker does with a passage
        longer than its own window."""
        m, idx = self.collection.manifest, self.settings.index
        if m.passage_tokens is not None and m.chunk_tokens > m.passage_tokens:
            default = IndexSettings.model_fields["chunk_tokens"].default
            log.log(logging.INFO if m.chunk_tokens == default else logging.WARNING,
                    "collection %s: index.chunk_tokens=%d is more than the window of %s (%d tokens: its max length "
                    "less its special tokens), so its passages hold at most %d tokens", self.name, m.chunk_tokens,
                    embedder_id, m.passage_tokens, m.passage_tokens)
        if m.passage_overlap is not None and idx.chunk_overlap > m.passage_overlap:
            log.info("collection %s: index.chunk_overlap=%d is more than half a passage: neighbouring passages share "
                     "%d tokens", self.name, idx.chunk_overlap, m.passage_overlap)
        log.info("collection %s: %s", self.name, long_documents_info(m, self.long_documents_policy())["summary"])

    def long_documents_policy(self) -> LongDocuments:
        """What the reranker does with a passage longer than its window by default (``Pipeline.search``'s
        ``long_documents`` overrides it per search): a given reranker's own policy, else the settings'."""
        src = self._reranker if self._reranker is not None else self._reranker_src
        policy = getattr(src, "long_documents", None)
        return policy if isinstance(policy, LongDocuments) else LongDocuments.from_settings(self.settings.models)

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
        ``embedded``, ``same_text``: documents whose content is stored under another id too, warned about, and
        ``count``).

        Documents are strings (with ``ids`` or content-hash ids), ``{"id", "text", "title"?, "metadata"?}``
        mappings or :class:`~qrank.index.documents.Document`. A document whose id exists replaces it; an
        unchanged one costs nothing. Work runs in token-budget batches, each committed when done, so an
        interrupted add keeps every finished batch and a repeat redoes only the rest. ``progress``: a bar
        on a terminal, a log line every 30 s otherwise (:func:`qrank.progress.progress`); False for none.

        >>> import tempfile
        >>> from qrank.settings import Settings
        >>> settings = Settings(home=tempfile.mkdtemp())
        >>> p = Pipeline.open("docs", embedder="../shared/models/all-MiniLM-L6-v2", settings=settings)
        >>> doc = {"id": "a", "text": "Rotate keys every 90 days.", "metadata": {"lang": "en"}}
        >>> p.add([doc], progress=False)  # doctest: +NORMALIZE_WHITESPACE
        {'documents': 1, 'added': 1, 'replaced': 0, 'unchanged': 0, 'passages': 1, 'embedded': 1,
         'same_text': 0, 'count': 1}
        >>> p.close()
        """
        with self.collection.writing():  # a concurrent add of the same collection waits, then finds our work done
            docs = to_documents(documents, ids=ids, metadata=metadata)
            report = Indexer(self.collection, self.embedder, self.chunker(), self.settings).add(docs, progress)
            log.info("collection %s: %s", self.name, report)
            return report

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
        qv = self.embedder.embed(query, is_query=True, query_task=query_task, query_prompt=query_prompt)
        q = Query(query, qv, k, n_cand, norm, hybrid=hybrid, reranker_instruction=reranker_instruction,
                  long_documents=long_documents, min_score=min_score)
        return Retriever(self.collection, self.settings.index).search(q, reranker=rr)

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
        return Retriever(self.collection, self.settings.index).lexical(query, k, norm)

    # --- describing -----------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """A JSON-ready description: name, backend, ``count`` (documents), passages, dim, embedder, reranker,
        chunking (``chunk_tokens`` / ``chunk_overlap`` as asked, ``passage_tokens`` / ``passage_overlap`` as the
        embedder takes them), ``long_documents`` (:func:`long_documents_info`), path, store details and cache
        statistics."""
        out = self.collection.info()
        out["long_documents"] = long_documents_info(self.collection.manifest, self.long_documents_policy())
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


def long_documents_info(manifest: Manifest, policy: LongDocuments) -> dict[str, Any]:
    """How a collection treats long documents: indexing always splits a document longer than a passage into
    passages the embedder takes whole (nothing is cut there), and the reranker applies ``policy``
    (``models.long_documents``) to a passage longer than its own window. ``policy``, the chunking fields it uses
    (None unless it chunks) and one ``summary`` sentence saying both, for ``info()`` and ``qrank index info``.

    >>> m = Manifest("docs", "faiss", 384, {"name": "e"}, 512, 64, passage_tokens=254, passage_overlap=64)
    >>> info = long_documents_info(m, LongDocuments(chunk_tokens=128))
    >>> info["policy"], info["chunk_tokens"]
    ('truncate', None)
    >>> print(info["summary"])  # doctest: +NORMALIZE_WHITESPACE
    documents longer than 254 tokens are split into passages of at most 254 tokens overlapping by 64, so indexing
    cuts nothing; reranking does not chunk (models.long_documents='truncate'): a passage longer than the reranker's
    window is cut at the window and its hit says truncated=true (models.chunk_tokens=128 applies only with
    models.long_documents='chunk')
    """
    if manifest.passage_tokens is not None:
        size, overlap = manifest.passage_tokens, manifest.passage_overlap
        passages = (f"documents longer than {size} tokens are split into passages of at most {size} tokens "
                    f"overlapping by {overlap}, so indexing cuts nothing")
    else:  # written before 2026-12-08: the size is recorded at the next add
        passages = (f"documents are split into passages of at most {manifest.chunk_tokens} tokens (fewer when the "
                    f"embedder's window is smaller) overlapping by at most {manifest.chunk_overlap}, so indexing "
                    "cuts nothing")
    chunks = policy.policy == "chunk"
    if policy.policy == "truncate":
        rerank = ("reranking does not chunk (models.long_documents='truncate'): a passage longer than the reranker's "
                  "window is cut at the window and its hit says truncated=true")
        unused = [f"models.{name}={value}" for name, value in (("chunk_tokens", policy.chunk_tokens),
                                                               ("chunk_overlap", policy.chunk_overlap))
                  if value is not None]
        if unused:  # set, yet unused: say so rather than ignore them silently
            verb = "applies" if len(unused) == 1 else "apply"
            rerank += f" ({' and '.join(unused)} {verb} only with models.long_documents='chunk')"
    elif chunks:
        size = f"{policy.chunk_tokens} tokens" if policy.chunk_tokens else "what fits beside the query"
        rerank = (f"the reranker scores a passage longer than its window in chunks of {size} (models.long_documents="
                  f"'chunk', aggregated by {policy.aggregate}); its hit says how many chunks and which scored")
    else:
        rerank = ("a search fails when it would rerank a passage longer than the reranker's window "
                  "(models.long_documents='error')")
    return {
        "policy": policy.policy,
        "chunk_tokens": policy.chunk_tokens if chunks else None,
        "chunk_overlap": policy.chunk_overlap if chunks else None,
        "chunk_aggregate": policy.aggregate if chunks else None,
        "summary": f"{passages}; {rerank}",
    }


def list_collections(settings: Settings | None = None, *, include_broken: bool = False) -> list[CollectionSummary]:
    """Every collection under ``settings.home`` (name, backend, count, dim, embedder, reranker, path, status,
    reason). A collection that cannot be opened is left out (a warning in the log), or with ``include_broken``
    listed with ``status`` "corrupt" (or "unavailable") and the ``reason``.

    >>> import tempfile
    >>> from qrank.index.collection import Collection, Manifest
    >>> settings = Settings(home=tempfile.mkdtemp())
    >>> for name in ("docs", "scifact"):
    ...     Collection.create(settings, Manifest(name, "faiss", 4, {"name": "e"}, 256, 32)).close()
    >>> [c.name for c in list_collections(settings)]
    ['docs', 'scifact']
    """
    return _list_collections(settings, include_broken=include_broken)


def delete_collection(name: str, settings: Settings | None = None) -> None:
    """Remove a whole collection (folder, and its Milvus collection on a cluster)."""
    drop_collection(settings or Settings(), check_name(name))

