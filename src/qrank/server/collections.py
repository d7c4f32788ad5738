"""Collections behind the search routes: one opened :class:`~qrank.pipeline.Pipeline` per collection,
using the server's own models (through their queues), never a second copy of them.

A collection can only be searched when the server serves the embedder it was built with. The reranker
is the request's (a served name), else the collection's default when the server serves it, else the
server's first reranker. Everything here runs in worker threads (the pipeline is synchronous).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..errors import InvalidInput, ModelNotFound
from ..settings import Settings
from .queued_models import QueuedEmbedder, QueuedReranker
from .state import ModelPool, ServedModel


def _matches(served: ServedModel, built: dict | str | None) -> bool:
    """Is ``served`` the model a collection recorded (by weights revision, id or loadable name)?"""
    if not built:
        return False
    if isinstance(built, str):
        return built in (served.name, served.info.id)
    revision = built.get("revision")
    if revision and revision == served.info.revision:
        return True
    return served.info.id in (built.get("id"), built.get("name")) or served.name in (built.get("id"), built.get("name"))


class ServerCollections:
    """Opens collections lazily and keeps them open until the server stops."""

    def __init__(self, settings: Settings, pool: ModelPool, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.pool = pool
        self.loop = loop
        self._pipelines: dict[tuple[str, str | None], Any] = {}
        self._lock = threading.Lock()
        self._cache: Any = None
        self._cache_opened = False

    def _shared_cache(self):
        if not self._cache_opened:
            from ..cache import Cache

            self._cache, self._cache_opened = Cache.from_settings(self.settings), True
        return self._cache

    def names(self) -> list[dict]:
        """Every collection, as ``qrank index list --json`` shows it: each with ``status`` ("ok"), and one that
        cannot be opened listed too, ``status`` "corrupt" or "unavailable" with the ``reason`` (never left out
        silently; the server's data folder in a reason reads ``$QRANK_HOME``, as in error bodies)."""
        from ..pipeline import list_collections
        from .errors import hide_paths, private_paths

        hidden = private_paths(self.settings)
        out = []
        for c in list_collections(self.settings, include_broken=True):
            entry = c.to_dict()
            if entry.get("reason"):
                entry["reason"] = hide_paths(entry["reason"], hidden)
            out.append(entry)
        return out

    def _embedder_for(self, manifest_embedder: dict, name: str) -> ServedModel:
        for m in self.pool.models:
            if m.role == "embedder" and _matches(m, manifest_embedder):
                return m
        # the model's id, never the folder it was loaded from (a server-side path)
        raise ModelNotFound(
            f"collection {name!r} was built with the embedder {manifest_embedder.get('id')!r}, which this server "
            "does not serve; start the server with that embedder",
            field="collection",
        )

    def _reranker_for(self, requested: str | None, default: str | None) -> ServedModel | None:
        if requested is not None:
            return self.pool.get(requested, "reranker")
        rerankers = [m for m in self.pool.models if m.role == "reranker"]
        for m in rerankers:
            if default and (default in (m.name, m.info.id)):
                return m
        return rerankers[0] if rerankers else None

    def pipeline(self, name: str, *, reranker: str | None = None):
        """The pipeline of an existing collection, with the chosen served reranker (or none)."""
        from ..index.collection import Collection, check_name
        from ..pipeline import Pipeline

        check_name(name)
        with self._lock:
            base = self._pipelines.get((name, None))
            if base is None:
                collection = Collection.open(self.settings, name)  # CollectionNotFound names the known ones
                embedder = self._embedder_for(collection.manifest.embedder, name)
                base = Pipeline(
                    collection,
                    embedder=QueuedEmbedder(embedder, self.loop),
                    reranker=None,
                    settings=self.settings,
                    cache=self._shared_cache(),
                )
                base.embedder  # noqa: B018 - checks the served embedder against the collection now
                self._pipelines[(name, None)] = base
            chosen = self._reranker_for(reranker, base.collection.manifest.reranker)
            if chosen is None:
                return base
            key = (name, chosen.name)
            if key not in self._pipelines:
                # same collection object (same store, same writes), another reranker
                self._pipelines[key] = Pipeline(
                    base.collection,
                    embedder=base.embedder.embedder,
                    reranker=QueuedReranker(chosen, self.loop),
                    settings=self.settings,
                    cache=base.cache,
                )
            return self._pipelines[key]

    def create_or_open(self, name: str, embedder: str | None):
        """The pipeline of ``name``, created with the served ``embedder`` (default: the first) if it is new."""
        from ..index.collection import Collection, check_name
        from ..pipeline import Pipeline

        check_name(name)
        with self._lock:
            exists = (name, None) in self._pipelines or Collection.exists(self.settings, name)
            if not exists:
                served = self.pool.get(embedder, "embedder")
                created = Pipeline.open(
                    name, embedder=QueuedEmbedder(served, self.loop), settings=self.settings, create=True
                )
                created.close()
        p = self.pipeline(name)
        if embedder is not None and not _matches(self.pool.get(embedder, "embedder"), p.collection.manifest.embedder):
            raise InvalidInput(
                "embedder", f"collection {name!r} exists and was built with another embedder; leave 'embedder' out"
            )
        return p

    def forget(self, name: str, pipeline: Any) -> None:
        """Drop the cached pipelines of ``name`` that use the collection ``pipeline`` (the one whose store turned
        out damaged), so that the next request opens it afresh: a collection dropped and rebuilt meanwhile is then
        served, a still damaged one refused.

        Only that very collection object is dropped: when another request has already forgotten it and opened the
        collection again, the fresh copy stays. Nothing is closed here: other requests may still be searching or
        writing through the dropped copy (closing its SQLite connection under them would fail them with "Cannot
        operate on a closed database"); it is closed when the last of them lets go of it (garbage collection
        closes its connection) or when the server stops."""
        collection = getattr(pipeline, "collection", None)
        if collection is None:
            return
        with self._lock:
            for key in [k for k, p in self._pipelines.items() if k[0] == name and p.collection is collection]:
                del self._pipelines[key]

    def close(self) -> None:
        with self._lock:
            closed = set()
            for p in self._pipelines.values():
                if id(p.collection) not in closed:
                    closed.add(id(p.collection))
                    p.collection.close()
            self._pipelines.clear()
            if self._cache is not None:
                self._cache.close()
            self._cache, self._cache_opened = None, False
