"""The vector-store contract every backend fulfils, and what backends share.

A store holds *passages*: a document is cut into one or more passages (see :mod:`qrank.index.chunking`),
each with its own vector. Writes are per document: ``add`` replaces every passage of each document it
names, ``delete`` removes documents. Searches return passages; :mod:`qrank.pipeline` folds them back
into documents (max-passage).

>>> p = Passage(doc_id="d1", chunk=0, start=0, text="hello")
>>> Hit(p, 0.5).doc_id
'd1'
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidInput, QrankError
from ..settings import IndexSettings

_FILTER_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")  # fullmatch: "$" would let a trailing newline in
# SQLite caps an expression's depth (1000) and its bound parameters; a filter stays far below both
MAX_FILTER_KEYS = 64
MAX_FILTER_VALUES = 1024
_SCALARS = (str, int, float, bool)


class CorruptStore(QrankError):
    """A collection's stored data cannot be read (not a database, truncated, empty): says how to get out.

    >>> str(CorruptStore("docs", "store.sqlite is empty"))  # doctest: +ELLIPSIS
    "collection 'docs' is corrupt: store.sqlite is empty; see `qrank index check docs`, ..."
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"collection {name!r} is corrupt: {reason}; see `qrank index check {name}`, or delete it "
                         f"with `qrank index drop {name}` and add its documents again", field="collection")
        self.name = name
        self.reason = reason


class StoreUnavailable(QrankError):
    """A collection's vector store lives on a server that cannot be reached now (a Milvus server that is down,
    a wrong URI, a refused connection, no answer in time). Nothing is wrong with the collection: try again when
    the server is back. ``where`` is the store's address as it may be shown (a password in it hidden).

    >>> str(StoreUnavailable("docs", "http://m:19530", "connection refused"))  # doctest: +ELLIPSIS
    "collection 'docs': the vector store at http://m:19530 cannot be reached (connection refused); check ...
    """

    retry_after = 5.0  # seconds a client may wait before trying again (the server's Retry-After)

    def __init__(self, name: str, where: str, why: str) -> None:
        super().__init__(f"collection {name!r}: the vector store at {where} cannot be reached ({why}); check that "
                         "the server is running and that index.milvus_uri names it, then try again",
                         field="collection")
        self.name = name
        self.where = where
        self.why = why
        self.reason = f"the vector store at {where} cannot be reached ({why})"  # what a listing of collections says


@contextlib.contextmanager
def store_errors(name: str) -> Iterator[None]:
    """Turn SQLite's own error from a damaged store, met in the middle of a read or write (a header that opened
    over damaged pages), into :class:`CorruptStore` naming collection ``name``: one clear error for every door
    (the CLI's line, the server's JSON), never a traceback.

    Only real damage (:func:`is_corruption`) is called corrupt: a closed connection, a full disk, an I/O error or
    a lock held too long says nothing about the files, and goes on unchanged (calling it corrupt would tell the
    user to drop a healthy collection, and make the server forget one that other requests are using).

    >>> with store_errors("docs"):  # doctest: +ELLIPSIS
    ...     raise sqlite3.DatabaseError("database disk image is malformed")
    Traceback (most recent call last):
    qrank.index.store.CorruptStore: collection 'docs' is corrupt: its store is unreadable (database disk image ...
    >>> with store_errors("docs"):
    ...     raise sqlite3.OperationalError("database is locked")
    Traceback (most recent call last):
    sqlite3.OperationalError: database is locked
    """
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        raise CorruptStore(name, f"its store is unreadable ({exc})") from exc


_CORRUPT_CODES = frozenset(
    code for code in (getattr(sqlite3, "SQLITE_CORRUPT", None), getattr(sqlite3, "SQLITE_NOTADB", None)) if code
)


def is_corruption(exc: sqlite3.Error) -> bool:
    """Does SQLite's ``exc`` say the database file itself is damaged (SQLITE_CORRUPT, SQLITE_NOTADB)?

    Python 3.11+ gives the error's code (its low byte is the primary code, e.g. SQLITE_CORRUPT_INDEX is
    SQLITE_CORRUPT); without one (an error raised by hand, an older Python) its message says it.

    >>> is_corruption(sqlite3.DatabaseError("file is not a database"))
    True
    >>> is_corruption(sqlite3.ProgrammingError("Cannot operate on a closed database."))
    False
    >>> is_corruption(sqlite3.OperationalError("database or disk is full"))
    False
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    message = str(exc).lower()
    return "malformed" in message or "not a database" in message


@dataclass(frozen=True)
class Passage:
    """One stored passage: ``text`` is ``indexed_text[start:start+len(text)]`` of its document.

    ``hash`` fingerprints the whole document version (text, title, metadata, chunking) so that
    re-adding an unchanged document costs nothing.
    """

    doc_id: str
    chunk: int
    start: int
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    hash: str = ""


@dataclass(frozen=True)
class Hit:
    """A passage found by a search, with its similarity (inner product of unit vectors = cosine)."""

    passage: Passage
    score: float

    @property
    def doc_id(self) -> str:
        return self.passage.doc_id


@runtime_checkable
class VectorStore(Protocol):
    """What :class:`~qrank.pipeline.Pipeline` needs from a backend (FAISS+SQLite, Milvus).

    Optional: ``ids_with_hashes(hashes, limit=None) -> {hash: [doc ids]}``, the stored documents whose version
    hash is one of ``hashes``, at most ``limit`` per hash (a number, or a ``{hash: n}``), by an indexed lookup, not
    a scan. An add uses it to say that documents it brings are stored already under other ids
    (:class:`~qrank.ingest.Indexer`); a store without it (Milvus, for now) skips that.
    """

    dim: int

    def add(self, passages: Sequence[Passage], vectors: np.ndarray) -> None:
        """Store passages with their vectors (row i of ``vectors`` belongs to ``passages[i]``).

        Every existing passage of each document named here is replaced; the write is atomic."""
        ...

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove documents (all their passages); returns how many existed."""
        ...

    def search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` most similar passages, best first; ``filter`` matches document metadata."""
        ...

    def count(self) -> int:
        """Number of documents."""
        ...

    def count_passages(self) -> int: ...

    def get(self, doc_ids: Sequence[str]) -> dict[str, list[Passage]]:
        """Passages of the named documents (in chunk order); unknown ids are absent."""
        ...

    def vectors(self, doc_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """``(n_passages, dim)`` vectors of the named documents, in chunk order."""
        ...

    def hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """Stored version hash of each known document."""
        ...

    def iter_passages(self) -> Iterator[Passage]:
        """Every passage, grouped by document, in chunk order."""
        ...

    def matching(self, filter: Mapping[str, Any]) -> set[str]:
        """Ids of the documents whose metadata match ``filter``."""
        ...

    def generation(self) -> int:
        """A number that changes with every write (derived indexes such as BM25 compare it)."""
        ...

    def persist(self, force: bool = False) -> None:
        """Bring derived on-disk state (e.g. the FAISS file) up to date when worthwhile, always with
        ``force``; written data is durable without it."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def drop(self) -> None:
        """Delete everything the store holds (its files, its Milvus collection) and close it."""
        ...

    def close(self) -> None:
        """Release the store (closing twice is harmless)."""
        ...


def check_filter(filter: Mapping[str, Any] | None) -> dict[str, list]:
    """Validate a metadata filter and normalise it to ``{key: [allowed values]}``.

    A filter is ``{"key": value}`` (equality) or ``{"key": [v1, v2]}`` (any of); keys are ANDed.

    >>> check_filter({"lang": "en", "year": [2020, 2021]})
    {'lang': ['en'], 'year': [2020, 2021]}
    >>> check_filter({"bad key!": 1})  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: filter: ...
    """
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise InvalidInput("filter", f"must be an object of metadata key -> value(s), got {type(filter).__name__}")
    if len(filter) > MAX_FILTER_KEYS:
        raise InvalidInput("filter", f"has {len(filter)} keys; at most {MAX_FILTER_KEYS} are allowed")
    out: dict[str, list] = {}
    for key, value in filter.items():
        if not isinstance(key, str) or not _FILTER_KEY.fullmatch(key):
            raise InvalidInput("filter", f"key {key!r} must be 1-64 letters, digits, '_' or '-'")
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise InvalidInput(f"filter.{key}", "must not be an empty list")
        for v in values:
            if not isinstance(v, _SCALARS) or (isinstance(v, float) and not np.isfinite(v)):
                raise InvalidInput(f"filter.{key}", f"values must be strings, numbers or booleans, got {v!r}")
            if isinstance(v, str) and ('"' in v or "\\" in v):
                raise InvalidInput(f"filter.{key}", "string values must not contain '\"' or '\\'")
        out[key] = values
    total = sum(len(v) for v in out.values())
    if total > MAX_FILTER_VALUES:
        raise InvalidInput("filter", f"has {total} values in all; at most {MAX_FILTER_VALUES} are allowed")
    return out


def check_vectors(vectors: np.ndarray, n: int, dim: int) -> np.ndarray:
    """float32, C-contiguous ``(n, dim)``, finite — or an error naming ``vectors``."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape != (n, dim):
        raise InvalidInput(
            "vectors", f"expected shape ({n}, {dim}), got {tuple(arr.shape)} (embedder dimension mismatch?)"
        )
    if not np.all(np.isfinite(arr)):
        raise InvalidInput("vectors", "contain NaN or inf")
    return arr


def by_document(passages: Iterator[Passage]) -> Iterator[list[Passage]]:
    """The passages of each document in turn, from a stream grouped by document (``iter_passages``).

    >>> stream = iter([Passage("a", 0, 0, "x"), Passage("a", 1, 1, "y"), Passage("b", 0, 0, "z")])
    >>> [[p.chunk for p in ps] for ps in by_document(stream)]
    [[0, 1], [0]]
    """
    current: list[Passage] = []
    for p in passages:
        if current and p.doc_id != current[0].doc_id:
            yield current
            current = []
        current.append(p)
    if current:
        yield current


def join_passages(passages: Sequence[Passage]) -> str:
    """Rebuild a document's indexed text from its overlapping passages (exact: they are slices).

    >>> ps = [Passage("d", 0, 0, "abc de"), Passage("d", 1, 4, "de fg")]
    >>> join_passages(ps)
    'abc de fg'
    """
    text = ""
    for p in sorted(passages, key=lambda p: p.chunk):
        text = text[: p.start] + p.text
    return text


def open_store(path: Path, name: str, dim: int, backend: str, settings: IndexSettings, *,
               existing: bool = False) -> VectorStore:
    """The backend named by ``backend`` for the collection directory ``path``; ``existing``: the collection
    has data already, so a missing or empty store file is corruption (never read as an empty collection).

    >>> import tempfile
    >>> from qrank.settings import IndexSettings
    >>> open_store(Path(tempfile.mkdtemp()), "docs", 384, "faiss", IndexSettings()).count()
    0
    """
    if backend == "faiss":
        from .faiss_store import FaissStore

        return FaissStore(path, dim, settings, existing=existing, name=name)
    if backend == "milvus":
        from .milvus_store import MilvusStore

        return MilvusStore(path, name, dim, settings)
    raise InvalidInput("backend", f"unknown vector store {backend!r} (expected 'faiss' or 'milvus')")
