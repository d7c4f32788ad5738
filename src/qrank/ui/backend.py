"""Where the UI gets its answers: models in this process (:class:`LocalBackend`) or a qrank server
(:class:`RemoteBackend`). Both speak :class:`UIBackend`; the handlers never know which one they have.

No model logic lives here: local calls go to the :class:`~qrank.Reranker` / :class:`~qrank.Embedder`
facades and :class:`~qrank.pipeline.Pipeline`, remote calls to :mod:`qrank.models.remote` and the
server's routes.

>>> import tempfile
>>> from qrank.settings import Settings
>>> backend = LocalBackend(Settings(home=tempfile.mkdtemp()), rerankers={"ce": "../shared/models/scifact-minilm-ce"})
>>> backend.rerank("ce", "what is bm25?", ["BM25 ranks documents", "cats"])[0].index
0
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import ModelNotFound
from ..settings import Settings
from ..types import RerankResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """A search result as the UI shows it (whatever produced it)."""

    doc_id: str
    score: float
    text: str
    title: str = ""


@dataclass(frozen=True)
class SearchResult:
    """The three rankings the search tab shows side by side, with the time each took."""

    bm25: list[Hit]
    first_stage: list[Hit]
    reranked: list[Hit] | None
    first_stage_name: str  # "dense" or "hybrid"
    latency_ms: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)  # per column, e.g. how many scores came from the cache


@dataclass(frozen=True)
class CollectionEntry:
    """One collection as the search tab lists it: ``status`` "ok", or why it cannot be opened ("corrupt",
    "unavailable", with the ``reason``), as ``qrank index list`` says."""

    name: str
    status: str = "ok"
    reason: str | None = None


class UIBackend(Protocol):
    """What the UI's handlers call."""

    def describe(self) -> str:
        """One line for the page header: where answers come from."""
        ...

    def reranker_names(self) -> list[str]: ...

    def embedder_names(self) -> list[str]: ...

    def rerank(
        self, model: str, query: str, documents: Sequence[str], *, top_n: int | None = None,
        instruction: str | None = None, long_documents: str | None = None,
    ) -> list[RerankResult]:
        """``Reranker.rerank`` of the named model: results best first, each with its input ``index``;
        ``instruction`` is the reranker's (a Qwen3 reranker's task), never an embedder's; ``long_documents``
        the policy for documents longer than the window (None: the model's)."""
        ...

    def collection_names(self) -> list[str]:
        """The collections that can be searched (those whose ``status`` is "ok")."""
        ...

    def collections(self) -> list[CollectionEntry]:
        """Every collection, the ones that cannot be opened too (with their status and reason)."""
        ...

    def refresh(self) -> None:
        """Drop whatever is cached about collections (the page's *Refresh* button)."""
        ...

    def search(
        self, collection: str, query: str, *, k: int, candidates: int | None, hybrid: bool, reranker: str | None,
        embedder: str | None,
    ) -> SearchResult:
        """BM25 and the reranked list (``k`` hits each) and the whole first stage (dense or hybrid: the
        ``candidates`` the reranker sees, default ``settings.index.candidates``), best first."""
        ...


def display_name(source: str) -> str:
    """A short label for a model given as a folder (its last part) or a hub id (kept whole).

    >>> display_name("../shared/models/scifact-minilm-ce")
    'scifact-minilm-ce'
    >>> display_name("Qwen/Qwen3-Reranker-0.6B")
    'Qwen/Qwen3-Reranker-0.6B'
    """
    path = Path(source).expanduser()
    return path.name if path.is_dir() else source


class LocalBackend:
    """Models loaded in this process, by public name; a name maps to a source (loaded on first use) or a facade.

    Loading happens under a lock so that two browser tabs asking for the same model load it once.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        rerankers: Mapping[str, Any] | None = None,
        embedders: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._sources: dict[str, dict[str, Any]] = {"reranker": dict(rerankers or {}),
                                                    "embedder": dict(embedders or {})}
        self._loaded: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        from .search import PipelineCache

        self.pipelines = PipelineCache()

    @classmethod
    def from_sources(
        cls, settings: Settings, rerankers: Sequence[str] = (), embedders: Sequence[str] = ()
    ) -> LocalBackend:
        """Name each model by :func:`display_name` (the full source when two would clash)."""
        return cls(settings, rerankers=_named(rerankers), embedders=_named(embedders))

    def describe(self) -> str:
        return "models loaded in this process"

    def reranker_names(self) -> list[str]:
        return list(self._sources["reranker"])

    def embedder_names(self) -> list[str]:
        return list(self._sources["embedder"])

    def source(self, role: str, name: str):
        """What ``name`` was given as: a folder or hub id, or an already loaded facade."""
        return self._sources[role][name]

    def refresh(self) -> None:
        """Forget opened collections, so that documents indexed since are found."""
        self.pipelines.clear()

    def model(self, role: str, name: str | None):
        """The loaded facade of ``role`` called ``name`` (default: the first), loading it if needed."""
        sources = self._sources[role]
        if not sources:
            flag = "--reranker" if role == "reranker" else "--embedder"
            raise ModelNotFound(
                f"no {role} is configured; start the UI with {flag} MODEL (or --server URL)", field=role
            )
        name = name or next(iter(sources))
        if name not in sources:
            raise ModelNotFound(f"{role} {name!r} is not offered here; choose one of: {', '.join(sources)}", field=role)
        key = (role, name)
        if key in self._loaded:
            return self._loaded[key]
        with self._lock:
            if key not in self._loaded:
                source = sources[name]
                if isinstance(source, str):
                    log.info("loading %s %s from %s", role, name, source)
                    self._loaded[key] = self._load(role, source)
                else:
                    self._loaded[key] = source
        return self._loaded[key]

    def _load(self, role: str, source: str):
        from ..pipeline import _source_name

        # the spelling the CLI's collections record (absolute for a folder): the model's id, and so its keys in
        # the shared score/embedding cache, are then the same as in `qrank search`, and the UI reuses its scores
        source = _source_name(source)
        if role == "reranker":
            from ..reranker import Reranker

            return Reranker.from_pretrained(source, settings=self.settings)
        from ..embedder import Embedder

        return Embedder.from_pretrained(source, settings=self.settings)

    def rerank(self, model, query, documents, *, top_n=None, instruction=None,
               long_documents=None) -> list[RerankResult]:
        return self.model("reranker", model).rerank(query, documents, top_n=top_n, instruction=instruction or None,
                                                    long_documents=long_documents)

    def collection_names(self) -> list[str]:
        return [c.name for c in self.collections() if c.status == "ok"]

    def collections(self) -> list[CollectionEntry]:
        from ..pipeline import list_collections

        # the broken ones too, with why: the page names them rather than leaving them out silently
        found = list_collections(self.settings, include_broken=True)
        return [CollectionEntry(c.name, c.status, c.reason) for c in found]

    def search(self, collection, query, *, k, candidates=None, hybrid=False, reranker=None, embedder=None,
               progress=None) -> SearchResult:
        from .search import local_search

        return local_search(self, collection, query, k=k, candidates=candidates, hybrid=hybrid, reranker=reranker,
                            embedder=embedder, progress=progress)


def _named(sources: Sequence[str]) -> dict[str, str]:
    names = [display_name(s) for s in sources]
    return {(n if names.count(n) == 1 else s): s for n, s in zip(names, sources)}
