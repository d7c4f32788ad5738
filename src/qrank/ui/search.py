"""The search tab's three rankings — BM25, the first stage (dense or hybrid), the first stage reranked —
from a local :class:`~qrank.pipeline.Pipeline` or from a qrank server's search route.

All ranking is the pipeline's (or the server's); this module only asks for the three lists and times them.

>>> import tempfile
>>> from qrank import Pipeline
>>> from qrank.settings import Settings
>>> from qrank.ui.backend import LocalBackend
>>> settings = Settings(home=tempfile.mkdtemp())
>>> p = Pipeline.open("docs", embedder="../shared/models/all-MiniLM-L6-v2", settings=settings)
>>> _ = p.add(["Rotate keys every 90 days.", "Bananas are yellow."], ids=["k", "b"]); p.close()
>>> backend = LocalBackend(settings, rerankers={"ce": "../shared/models/scifact-minilm-ce"})
>>> res = local_search(backend, "docs", "how do I rotate keys?", k=1, reranker="ce")
>>> [len(res.bm25), res.first_stage_name, res.reranked[0].doc_id]
[1, 'dense', 'k']
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, QrankError
from .backend import CollectionEntry, Hit, SearchResult

log = logging.getLogger(__name__)


class PipelineCache:
    """Opened pipelines by (collection, embedder, reranker): opening one reads its index and may load its
    embedder, so the page opens each combination once. ``clear`` forgets them (the *Refresh* button)."""

    def __init__(self) -> None:
        self._pipelines: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()

    def get(self, backend, collection: str, embedder: str | None, reranker: str | None):
        from ..pipeline import Pipeline

        key = (collection, embedder or "", reranker or "")
        with self._lock:
            if key not in self._pipelines:
                self._pipelines[key] = Pipeline.open(
                    collection,
                    embedder=_embedder_for(backend, collection, embedder),
                    reranker=backend.model("reranker", reranker) if reranker else None,
                    settings=backend.settings,
                    create=False,
                )
            return self._pipelines[key]

    def clear(self) -> None:
        with self._lock:
            for p in self._pipelines.values():
                p.close()
            self._pipelines.clear()


def _embedder_for(backend, collection: str, embedder: str | None):
    """The chosen embedder; else the UI's own copy of the collection's embedder when it has one loaded
    (so the model is not loaded twice); else ``None``: the pipeline loads the collection's own."""
    if embedder:
        return backend.model("embedder", embedder)
    from ..pipeline import list_collections

    built_with = next((c.embedder for c in list_collections(backend.settings) if c.name == collection), None)
    for name in backend.embedder_names():
        source = backend.source("embedder", name)
        if isinstance(source, str) and built_with and _same_source(source, built_with):
            return backend.model("embedder", name)
    return None


def _same_source(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.is_dir() and pb.is_dir():
        return pa.resolve() == pb.resolve()
    return a == b


def local_search(backend, collection: str, query: str, *, k: int, candidates: int | None = None, hybrid: bool = False,
                 reranker: str | None = None, embedder: str | None = None, progress=None) -> SearchResult:
    """Three rankings from the pipeline: BM25 alone, the first stage (all its candidates, best first) and,
    when there is a reranker (chosen here or the collection's default), the first stage reranked.

    ``progress(text)`` is told each step as it starts, so the page can say what it is waiting for."""
    say = progress or (lambda _text: None)
    say(f"opening collection {collection} (the first search loads its index and models)…")
    p = backend.pipelines.get(backend, collection, embedder, reranker)
    candidates = max(candidates or backend.settings.index.candidates, k)
    latency: dict[str, float] = {}

    say("BM25…")
    start = time.perf_counter()
    bm25 = [_hit(h) for h in p.lexical_search(query, k=k)]
    latency["bm25"] = (time.perf_counter() - start) * 1000

    say("embedding the query and searching (first stage)…")
    start = time.perf_counter()
    first = [_hit(h) for h in p.search(query, k=candidates, rerank=False, hybrid=hybrid)]
    latency["first_stage"] = (time.perf_counter() - start) * 1000

    reranked, notes = None, {}
    if p.reranker is not None:
        say(f"reranking the top {candidates} candidates (scores already in the shared cache are reused)…")
        scored_before = p.reranker.scored
        start = time.perf_counter()
        reranked = [_hit(h) for h in p.search(query, k=k, candidates=candidates, rerank=True, hybrid=hybrid)]
        latency["reranked"] = (time.perf_counter() - start) * 1000
        # a repeated query is answered from the score cache; say so, or the latency would mislead
        scored = p.reranker.scored - scored_before
        notes["reranked"] = "all scores from the cache" if scored == 0 else f"{scored} pairs scored"
    return SearchResult(bm25=bm25, first_stage=first, reranked=reranked,
                        first_stage_name="hybrid" if hybrid else "dense", latency_ms=latency, notes=notes)


def _hit(h) -> Hit:
    return Hit(doc_id=str(h.id), score=float(h.score), text=h.text or "", title=h.title or "")


# ------------------------------------------------------------------------------------------- remote


def remote_collections(transport) -> list[CollectionEntry]:
    """The collections of the server's ``GET /v1/collections`` (none when it has no such route), each with the
    ``status`` and ``reason`` the server gives (an older server lists healthy ones only, without a status).

    >>> class _Server:
    ...     def request(self, method, path):
    ...         return {"data": [{"name": "a", "status": "ok"}, {"name": "b", "status": "corrupt", "reason": "x"}]}
    >>> [(c.name, c.status) for c in remote_collections(_Server())]
    [('a', 'ok'), ('b', 'corrupt')]
    """
    try:
        answer = transport.request("GET", "/v1/collections")
    except QrankError as exc:
        if "answered 404" in str(exc):  # a server without collections
            return []
        raise
    items = answer.get("data", answer.get("collections", [])) if isinstance(answer, dict) else answer
    out = []
    for c in items or []:
        if isinstance(c, dict):
            reason = c.get("reason")
            out.append(CollectionEntry(str(c["name"]), str(c.get("status") or "ok"), str(reason) if reason else None))
        else:
            out.append(CollectionEntry(str(c)))
    return out


def remote_search(
    transport,
    collection: str,
    query: str,
    *,
    k: int,
    candidates: int | None = None,
    hybrid: bool = False,
    reranker: str | None = None,
    embedder: str | None = None,
) -> SearchResult:
    """The three rankings from the server's ``POST /v1/search`` (one call per column)."""
    if embedder:
        raise InvalidInput("embedder", "with --server the collection's own embedder is used")
    latency: dict[str, float] = {}

    def ask(column: str, **body) -> list[Hit]:
        start = time.perf_counter()
        try:
            answer = transport.request("POST", "/v1/search", {"collection": collection, "query": query, **body})
        except QrankError as exc:
            if "answered 404" in str(exc) and "collection" not in str(exc).lower():
                raise QrankError(f"the server at {transport.base_url} has no search route (POST /v1/search); "
                                 "run `qrank ui` without --server to search local collections") from exc
            raise
        latency[column] = (time.perf_counter() - start) * 1000
        rows = answer.get("results", answer.get("hits", answer.get("data"))) if isinstance(answer, dict) else None
        if not isinstance(rows, list):
            raise QrankError("the server's search answer has no list of results")
        return [
            Hit(str(r.get("id")), float(r.get("score", 0.0)), r.get("text") or "", r.get("title") or "") for r in rows
        ]

    candidates = max(k, candidates or 100)
    bm25 = ask("bm25", k=k, mode="bm25", rerank=False)
    first = ask("first_stage", k=candidates, hybrid=hybrid, rerank=False)
    body = {"k": k, "candidates": candidates, "hybrid": hybrid, "rerank": True}
    if reranker:
        body["reranker"] = reranker
    reranked = ask("reranked", **body)
    return SearchResult(bm25=bm25, first_stage=first, reranked=reranked,
                        first_stage_name="hybrid" if hybrid else "dense", latency_ms=latency)
