"""A collection on disk: its folder, its manifest, its vector store and its BM25 index (no models).

Layout under ``settings.home``::

    collections/<name>/collection.json   manifest: backend, embedder (name, id, revision, dim), chunking
    collections/<name>/store.sqlite      FAISS backend: passages + vectors (source of truth)
    collections/<name>/faiss.<gen>.index FAISS backend: the search index (rebuilt when stale)
    collections/<name>/milvus.db/        Milvus Lite backend (or a cluster: the manifest records its URI)
    collections/<name>/bm25.<gen>/       BM25 (built on the first hybrid search after a change)

>>> check_name("my-docs")
'my-docs'
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CollectionNotFound, InvalidInput, Overloaded
from ..fileio import atomic_write_json
from ..settings import IndexSettings, Settings
from .bm25 import BM25Index
from .documents import strip_title
from .store import CorruptStore, StoreUnavailable, VectorStore, by_document, join_passages, open_store

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: "$" would accept a trailing newline
MANIFEST = "collection.json"
WRITE_LOCK = "write.lock"
# held only while one field of the manifest is reloaded, changed and saved (the write lock may be held by our own
# add meanwhile: a second file lock on it in this process would wait for ourselves)
MANIFEST_LOCK = "manifest.lock"
MANIFEST_LOCK_WAIT_S = 60.0
# how long an add waits for another writer of the same collection (a large first add takes minutes)
WRITE_LOCK_WAIT_S = 3600.0


def check_name(name: Any) -> str:
    """A collection name: 1-64 letters, digits, '_', '.', '-' (starting with a letter or digit); the one check
    every door (CLI, Python, HTTP) goes through.

    >>> check_name("docs ")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: collection: 'docs ' is not a valid name ...
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput("collection", f"{name!r} is not a valid name (1-64 letters, digits, '_', '.', '-')")
    return name


def collections_root(settings: Settings) -> Path:
    return settings.home / "collections"


def collection_dir(settings: Settings, name: str) -> Path:
    return collections_root(settings) / check_name(name)


_MANIFEST_TYPES: dict[str, type | tuple] = {
    "name": str, "backend": str, "dim": int, "embedder": dict, "chunk_tokens": int, "chunk_overlap": int,
    "reranker": (str, type(None)), "store": dict, "created": str, "version": int,
    "passage_tokens": (int, type(None)), "passage_overlap": (int, type(None)),
}
_KIND_NAMES = {str: "a string", int: "an integer", dict: "an object", (str, type(None)): "a string or null",
               (int, type(None)): "an integer or null"}


@dataclass
class Manifest:
    """What a collection remembers about itself."""

    name: str
    backend: str
    dim: int
    embedder: dict[str, Any]  # name (loadable), id, revision, kind
    chunk_tokens: int
    chunk_overlap: int
    reranker: str | None = None  # default reranker for searches (a loadable name)
    store: dict[str, Any] = field(default_factory=dict)  # where the store lives: Milvus {"uri", "db"} (no secrets)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    version: int = 1
    # the passages the embedder really gets: chunk_tokens capped at its window, the overlap at half a passage (what
    # the Chunker made, recorded so that info() says it without loading a model); None in a manifest written before
    # 2026-12-08 until its next add
    passage_tokens: int | None = None
    passage_overlap: int | None = None

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"a JSON object expected, got {type(data).__name__}")
            for key, kinds in _MANIFEST_TYPES.items():
                # a hand-edited or foreign file of the wrong shape is named here, not met as an AttributeError later
                if key in data and not isinstance(data[key], kinds) or isinstance(data.get(key), bool):
                    raise TypeError(f"{key!r} must be {_KIND_NAMES[kinds]}, got {type(data[key]).__name__}")
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (OSError, ValueError, TypeError) as exc:
            raise CollectionNotFound(path.name, f"collection {path.name!r} has an unreadable manifest ({exc})") from exc

    def save(self, path: Path) -> None:
        atomic_write_json(path / MANIFEST, asdict(self), indent=2)


@dataclass(frozen=True)
class CollectionSummary:
    """One line of :func:`list_collections` (also readable as a mapping: ``summary["name"]``)."""

    name: str
    backend: str
    count: int | None
    dim: int | None
    embedder: str
    reranker: str | None
    path: str
    # "ok"; "corrupt" (its store or manifest cannot be read) or "unavailable" (its store could not be opened,
    # e.g. a Milvus cluster that does not answer), with ``reason`` saying why and ``count`` None
    status: str = "ok"
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class Collection:
    """An opened collection: manifest + store + BM25."""

    def __init__(self, path: Path, manifest: Manifest, store: VectorStore, settings: Settings) -> None:
        self.path = path
        self.manifest = manifest
        self.store = store
        self.settings = settings
        self.bm25 = BM25Index(path, settings.index.bm25_stopwords)

    @property
    def name(self) -> str:
        return self.manifest.name

    @classmethod
    def exists(cls, settings: Settings, name: str) -> bool:
        return (collection_dir(settings, name) / MANIFEST).is_file()

    @classmethod
    def open(cls, settings: Settings, name: str) -> Collection:
        path = collection_dir(settings, name)
        if not (path / MANIFEST).is_file():
            known = ", ".join(sorted(c.name for c in iter_collection_dirs(settings))) or "none"
            raise CollectionNotFound(
                name,
                f"no collection named {name!r} under {collections_root(settings)} "
                f"(known: {known}); create it with `qrank index add --collection {name} --embedder MODEL FILES`",
            )
        manifest = Manifest.load(path)
        index = store_settings(manifest, settings)
        store = open_store(path, manifest.name, manifest.dim, manifest.backend, index, existing=True)
        return cls(path, manifest, store, settings)

    @classmethod
    def create(cls, settings: Settings, manifest: Manifest) -> Collection:
        path = collection_dir(settings, manifest.name)
        path.mkdir(parents=True, exist_ok=True)
        if not manifest.store:
            manifest.store = store_location(manifest.backend, settings.index)
        store = open_store(path, manifest.name, manifest.dim, manifest.backend, store_settings(manifest, settings))
        manifest.save(path)  # last: a folder without a manifest is not a collection yet
        log.info("created collection %s (%s, dim %d) at %s", manifest.name, manifest.backend, manifest.dim, path)
        return cls(path, manifest, store, settings)

    @contextlib.contextmanager
    def writing(self, wait_s: float = WRITE_LOCK_WAIT_S) -> Iterator[None]:
        """Hold the collection's write lock (a file lock: other processes and threads wait here), so that two
        concurrent adds never both embed the same documents: the second sees the first's work as unchanged.

        >>> import tempfile
        >>> from qrank.settings import Settings
        >>> settings = Settings(home=tempfile.mkdtemp())
        >>> collection = Collection.create(settings, Manifest("docs", "faiss", 4, {"name": "e"}, 256, 32))
        >>> with collection.writing():
        ...     (collection.path / WRITE_LOCK).exists()
        True
        >>> collection.close()
        """
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path / WRITE_LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("collection %s is being written by another process; waiting for it (up to %.0f s)",
                        self.name, wait_s)
            try:
                lock.acquire(timeout=wait_s)
            except Timeout:
                raise Overloaded(f"collection {self.name!r} has been written by another process for more than "
                                 f"{wait_s:.0f} s; try again when it finishes", retry_after=60.0) from None
        try:
            yield
        finally:
            lock.release()

    def update_manifest(self, **fields: Any) -> None:
        """Change only ``fields`` of the manifest: reloaded from disk under its own short lock, changed and saved,
        so that what another process changed since this collection was opened (a default reranker, say) is kept,
        never overwritten by this copy's older values; this copy then holds the new values too. An OSError (a
        read-only folder) goes to the caller, with this copy unchanged.

        >>> import tempfile
        >>> from qrank.settings import Settings
        >>> settings = Settings(home=tempfile.mkdtemp())
        >>> a = Collection.create(settings, Manifest("docs", "faiss", 4, {"name": "e"}, 256, 32))
        >>> b = Collection.open(settings, "docs")
        >>> b.update_manifest(reranker="rr")
        >>> a.update_manifest(passage_tokens=128)
        >>> m = Manifest.load(a.path)
        >>> (m.reranker, m.passage_tokens, a.manifest.passage_tokens)
        ('rr', 128, 128)
        >>> a.close(); b.close()
        """
        from filelock import FileLock

        unknown = set(fields) - set(Manifest.__dataclass_fields__)
        if unknown:
            raise TypeError(f"not manifest fields: {sorted(unknown)}")
        with FileLock(str(self.path / MANIFEST_LOCK), timeout=MANIFEST_LOCK_WAIT_S):
            current = Manifest.load(self.path)
            for key, value in fields.items():
                setattr(current, key, value)
            current.save(self.path)
        for key, value in fields.items():
            setattr(self.manifest, key, value)

    def documents(self) -> Iterator[tuple[str, str]]:
        """``(id, indexed text)`` of every document, rebuilt from its passages."""
        for passages in by_document(self.store.iter_passages()):
            yield passages[0].doc_id, join_passages(passages)

    def bm25_search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        self.bm25.ensure(self.store.generation(), self.documents)
        return self.bm25.search(query, k, allowed)

    def document_text(self, passages) -> tuple[str, str | None]:
        """``(text, title)`` of a document as the caller gave them."""
        title = passages[0].title if passages else None
        return strip_title(join_passages(passages), title), title

    def info(self) -> dict[str, Any]:
        stats = self.store.stats()
        return {
            "name": self.name,
            "backend": self.manifest.backend,
            "count": stats.get("documents"),
            "passages": stats.get("passages"),
            "dim": self.manifest.dim,
            "embedder": dict(self.manifest.embedder),
            "reranker": self.manifest.reranker,
            "chunk_tokens": self.manifest.chunk_tokens,
            "chunk_overlap": self.manifest.chunk_overlap,
            "passage_tokens": self.manifest.passage_tokens,
            "passage_overlap": self.manifest.passage_overlap,
            "created": self.manifest.created,
            "path": str(self.path),
            "store": stats,
        }

    def summary(self) -> CollectionSummary:
        return CollectionSummary(self.name, self.manifest.backend, self.store.count(), self.manifest.dim,
                                 self.manifest.embedder.get("name") or self.manifest.embedder.get("id", ""),
                                 self.manifest.reranker, str(self.path))

    def close(self) -> None:
        self.store.close()


def store_location(backend: str, index: IndexSettings) -> dict[str, Any]:
    """What a manifest records about where its store lives: a Milvus URI and database (never a token).

    >>> store_location("faiss", IndexSettings()), store_location("milvus", IndexSettings())
    ({}, {'uri': None, 'db': None})
    """
    return {"uri": index.milvus_uri, "db": index.milvus_db} if backend == "milvus" else {}


def store_settings(manifest: Manifest, settings: Settings) -> IndexSettings:
    """The index settings that reach the collection's store: a Milvus collection is opened where its
    manifest says it lives, so no process needs the address in its environment. A Milvus Lite collection
    stays local whatever ``milvus_uri`` says; a cluster address given in the settings overrides the
    recorded one (the cluster moved), with a note in the log. Tokens are never recorded.

    >>> m = Manifest("d", "milvus", 8, {}, 512, 64, store={"uri": "http://m:19530", "db": None})
    >>> store_settings(m, Settings()).milvus_uri
    'http://m:19530'
    """
    if manifest.backend != "milvus" or not manifest.store:
        return settings.index
    uri, db = manifest.store.get("uri"), manifest.store.get("db")
    if uri and settings.index.milvus_uri and settings.index.milvus_uri != uri:
        log.info("collection %s: using Milvus at %s (the settings) instead of %s (its manifest)",
                 manifest.name, settings.index.milvus_uri, uri)
        return settings.index
    return settings.index.model_copy(update={"milvus_uri": uri, "milvus_db": db if uri else None})


def iter_collection_dirs(settings: Settings) -> Iterator[Path]:
    root = collections_root(settings)
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if (p / MANIFEST).is_file():
                yield p


def list_collections(settings: Settings | None = None, *, include_broken: bool = False) -> list[CollectionSummary]:
    """Every collection under ``settings.home``, with its document count.

    A collection that cannot be opened is left out with a warning in the log, or, with ``include_broken``,
    listed with ``status`` "corrupt" or "unavailable" and the ``reason`` (never as an empty collection).

    >>> list_collections(Settings(home="/nonexistent"))
    []
    """
    settings = settings or Settings()
    out = []
    down: dict[str, StoreUnavailable] = {}  # Milvus servers found unreachable in this listing: not waited for twice
    for path in iter_collection_dirs(settings):
        uri = None
        try:
            uri = _remote_store(path, settings)  # inside: a manifest of the wrong shape is this collection's fault
            if uri in down:
                raise StoreUnavailable(path.name, down[uri].where, down[uri].why)
            col = Collection.open(settings, path.name)
            try:
                out.append(col.summary())
            finally:
                col.close()
        except Exception as exc:  # one broken collection must not hide the others; say which and why
            if uri and isinstance(exc, StoreUnavailable):
                down[uri] = exc
            if not include_broken:
                log.warning("cannot open collection %s: %s", path.name, exc)
                continue
            corrupt = isinstance(exc, (CorruptStore, CollectionNotFound))  # the latter: an unreadable manifest
            reason = exc.reason if isinstance(exc, (CorruptStore, StoreUnavailable)) else str(exc)
            out.append(_broken_summary(path, "corrupt" if corrupt else "unavailable", reason))
    return out


def _remote_store(path: Path, settings: Settings) -> str | None:
    """The URI of the Milvus server a collection lives on (None: a local store, or an unreadable manifest)."""
    try:
        manifest = Manifest.load(path)
    except CollectionNotFound:
        return None
    return store_settings(manifest, settings).milvus_uri if manifest.backend == "milvus" else None


def _broken_summary(path: Path, status: str, reason: str) -> CollectionSummary:
    """The line of a collection that cannot be opened: what its manifest still says, if it can be read."""
    try:
        m = Manifest.load(path)
    except CollectionNotFound:
        return CollectionSummary(path.name, "?", None, None, "?", None, str(path), status, reason)
    return CollectionSummary(path.name, m.backend, None, m.dim, m.embedder.get("name") or m.embedder.get("id", ""),
                             m.reranker, str(path), status, reason)


def drop_collection(settings: Settings, name: str) -> None:
    """Delete a collection (its folder, and its Milvus collection when it lives on a cluster).

    A FAISS collection is only files, so its folder goes without opening the store: a corrupt store or
    manifest must never keep a collection from being dropped."""
    path = collection_dir(settings, name)
    if not (path / MANIFEST).is_file():
        Collection.open(settings, name)  # raises CollectionNotFound naming the known ones
    try:
        backend = Manifest.load(path).backend
    except CollectionNotFound as exc:
        log.warning("%s; deleting its folder", exc)
        backend = "faiss"
    if backend != "faiss":
        col = Collection.open(settings, name)
        try:
            col.store.drop()
        finally:
            col.close()
    shutil.rmtree(path)
