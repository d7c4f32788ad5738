"""The SQLite side of :class:`~qrank.index.faiss_store.FaissStore`: its schema, opening (and refusing) its
database, write transactions, and the queries over the ``passages`` table, which turn rows into
:class:`Passage` objects or score their stored vectors exactly.

The functions take the open connection and run under the store's lock, held by the caller (:class:`WriteTxn`
takes it); the generation counter, the ``changes`` journal and the FAISS index stay in ``faiss_store.py``.

>>> db = sqlite3.connect(":memory:")
>>> _ = db.executescript(SCHEMA)
>>> insert_passages(db, [Passage("a", 0, 0, "cats purr", metadata={"lang": "en"})], np.ones((1, 2), np.float32))
[1]
>>> [p.text for p in passages_of(db, ["a"])["a"]], filtered_pids(db, {"lang": ["en"]})
(['cats purr'], [1])
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Overloaded
from .store import CorruptStore, Passage

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS passages (
    pid INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    start INTEGER NOT NULL,
    text TEXT NOT NULL,
    title TEXT,
    metadata TEXT NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (doc_id, chunk)
);
CREATE TABLE IF NOT EXISTS changes (gen INTEGER NOT NULL, added INTEGER NOT NULL, pid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS changes_gen ON changes (gen);
CREATE INDEX IF NOT EXISTS doc_hashes ON passages (hash) WHERE chunk = 0;
"""
# a store made before the document-hash index gets it on its first hash lookup (FaissStore.ids_with_hashes)
HASH_INDEX = "CREATE INDEX IF NOT EXISTS doc_hashes ON passages (hash) WHERE chunk = 0"
_FIELDS = "doc_id, chunk, start, text, title, metadata, hash"
_IN_CHUNK = 900  # stay far below SQLite's bound-parameter limit


def _chunks(items: Sequence, n: int = _IN_CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _marks(part: Sequence) -> str:
    return ",".join("?" * len(part))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def stored_metadata(doc_id: str, raw: str) -> dict[str, Any]:
    """A row's metadata; a row written before NaN was refused at ingest (or edited by hand) reads as ``{}``
    with a warning instead of failing every answer that includes it (``qrank index check`` lists them).

    >>> stored_metadata("d", '{"a": 1}'), stored_metadata("d", '{"a": NaN}')
    ({'a': 1}, {})
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (TypeError, ValueError) as exc:
        log.warning("document %r has unreadable metadata (%s); shown as {} (see `qrank index check`)", doc_id, exc)
        return {}
    return value if isinstance(value, dict) else {}


def row_passage(row) -> Passage:
    """The :class:`Passage` of one ``doc_id, chunk, start, text, title, metadata, hash`` row."""
    doc_id, chunk, start, text, title, metadata, hash_ = row
    return Passage(doc_id=doc_id, chunk=int(chunk), start=int(start), text=text, title=title,
                   metadata=stored_metadata(doc_id, metadata), hash=hash_)


# --- the database -------------------------------------------------------------------------------
def open_db(db_file: Path, name: str, existing: bool) -> tuple[sqlite3.Connection, str | None]:
    """Connect to the store's database (creating its tables unless ``existing``): ``(connection, stored
    dim or None)``. A missing, empty, unreadable or foreign ``existing`` file raises :class:`CorruptStore`."""
    if existing:
        # SQLite would silently make a new empty database here; an existing collection always has a
        # non-empty file (WAL mode writes its header when the store is created)
        if not db_file.is_file():
            raise CorruptStore(name, f"{db_file.name} is missing")
        if db_file.stat().st_size == 0:
            raise CorruptStore(name, f"{db_file.name} is empty (0 bytes)")
    db = sqlite3.connect(db_file, timeout=60, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # an acknowledged batch survives power loss too
        has_schema = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'changes'").fetchone() is not None
        if existing and not has_schema:
            raise CorruptStore(name, f"{db_file.name} holds no qrank tables")
        if not has_schema:
            db.executescript(SCHEMA)  # a new store (readers of an existing one take no write lock)
        stored = read_meta(db, "dim")
    except sqlite3.DatabaseError as exc:  # garbage bytes: "file is not a database", "malformed"
        db.close()
        raise CorruptStore(name, f"{db_file.name} is unreadable ({exc})") from exc
    except CorruptStore:
        db.close()
        raise
    return db, stored


def read_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


class WriteTxn:
    """``with WriteTxn(db, lock):`` holds ``lock`` and an immediate write transaction, committed when the
    block ends normally and rolled back when it raises."""

    def __init__(self, db: sqlite3.Connection, lock) -> None:
        self.db, self.lock = db, lock

    def __enter__(self):
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException as e:
            # keeping the lock would shut every other thread of this store out for good
            self.lock.release()
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                # another process held SQLite's write lock past the busy timeout: busy, not broken (a 429)
                raise Overloaded("the collection's database stayed locked by another writer; try again when it "
                                 "finishes", retry_after=30.0) from e
            raise

    def __exit__(self, exc_type, exc, tb):
        try:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.lock.release()
        return False


# --- writes (inside the caller's write transaction) ---------------------------------------------
def insert_passages(db: sqlite3.Connection, passages: Sequence[Passage], vectors: np.ndarray) -> list[int]:
    """Insert one row per passage with its vector; their new row ids, in order."""
    pids: list[int] = []
    for p, v in zip(passages, vectors):
        cur = db.execute(
            f"INSERT INTO passages ({_FIELDS}, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (p.doc_id, p.chunk, p.start, p.text, p.title,
             json.dumps(p.metadata, ensure_ascii=False, allow_nan=False), p.hash,
             v.astype("<f4").tobytes()),
        )
        pids.append(int(cur.lastrowid))
    return pids


def delete_docs(db: sqlite3.Connection, doc_ids: Sequence[str]) -> list[int]:
    """Delete the passages of ``doc_ids``; the row ids they had."""
    out: list[int] = []
    for part in _chunks(doc_ids):
        marks = _marks(part)
        out += [r[0] for r in db.execute(f"SELECT pid FROM passages WHERE doc_id IN ({marks})", part)]
        db.execute(f"DELETE FROM passages WHERE doc_id IN ({marks})", part)
    return out


# --- reads --------------------------------------------------------------------------------------
def vectors_by_pid(db: sqlite3.Connection, pids: Sequence[int], dim: int) -> tuple[list[int], np.ndarray]:
    """The vectors of the rows ``pids`` that exist: ``(their row ids, a float32 matrix in that order)``."""
    got_ids: list[int] = []
    mats = [np.zeros((0, dim), dtype="<f4")]
    for part in _chunks(pids):
        rows = db.execute(f"SELECT pid, vector FROM passages WHERE pid IN ({_marks(part)})", part).fetchall()
        got_ids += [r[0] for r in rows]
        mats.append(np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim))
    return got_ids, np.concatenate(mats)


def exact_top_k(db: sqlite3.Connection, query: np.ndarray, pids: list[int], k: int, dim: int
                ) -> tuple[list[float], list[int]]:
    """The ``k`` best of the rows ``pids`` for ``query``, scored on their stored vectors: ``(scores, row ids)``,
    best first, ties by row id."""
    got_ids, vecs = vectors_by_pid(db, pids, dim)
    scores = vecs @ query
    order = np.lexsort((np.asarray(got_ids), -scores))[:k]
    return scores[order].tolist(), [got_ids[i] for i in order]


def passages_by_pid(db: sqlite3.Connection, pids: Sequence[int]) -> dict[int, Passage]:
    """The passages of the rows ``pids`` that exist, by row id."""
    found: dict[int, Passage] = {}
    for part in _chunks(pids):
        q = f"SELECT pid, {_FIELDS} FROM passages WHERE pid IN ({_marks(part)})"
        for row in db.execute(q, part):
            found[row[0]] = row_passage(row[1:])
    return found


def filter_sql(norm: Mapping[str, list]) -> tuple[str, list]:
    """A ``WHERE`` clause and its parameters for a filter normalised by ``check_filter``."""
    conds, params = [], []
    for key, values in norm.items():
        # a row whose metadata is not valid JSON (NaN written by an older version) matches nothing
        # instead of failing the whole query with "malformed JSON"
        conds.append(
            f"json_extract(CASE WHEN json_valid(metadata) THEN metadata END, ?) IN ({','.join('?' * len(values))})"
        )
        params += [f'$."{key}"', *values]
    return " AND ".join(conds), params


def filtered_pids(db: sqlite3.Connection, norm: Mapping[str, list]) -> list[int]:
    """The row ids of the passages a normalised filter matches."""
    where, params = filter_sql(norm)
    return [r[0] for r in db.execute(f"SELECT pid FROM passages WHERE {where}", params)]


def docs_where(db: sqlite3.Connection, where: str, params: list) -> set[str]:
    """The ids of the documents whose first passage satisfies a :func:`filter_sql` clause."""
    return {r[0] for r in db.execute(f"SELECT DISTINCT doc_id FROM passages WHERE chunk = 0 AND {where}", params)}


def passages_of(db: sqlite3.Connection, doc_ids: Sequence[str]) -> dict[str, list[Passage]]:
    """The passages of each stored document of ``doc_ids``, in chunk order."""
    out: dict[str, list[Passage]] = {}
    for part in _chunks(list(doc_ids)):
        q = f"SELECT {_FIELDS} FROM passages WHERE doc_id IN ({_marks(part)}) ORDER BY doc_id, chunk"
        for row in db.execute(q, part):
            out.setdefault(row[0], []).append(row_passage(row))
    return out


def vector_blobs(db: sqlite3.Connection, doc_ids: Sequence[str]) -> dict[str, list[bytes]]:
    """The raw little-endian float32 vectors of each stored document of ``doc_ids``, in chunk order."""
    rows: dict[str, list[bytes]] = {}
    for part in _chunks(list(doc_ids)):
        q = f"SELECT doc_id, vector FROM passages WHERE doc_id IN ({_marks(part)}) ORDER BY doc_id, chunk"
        for doc_id, blob in db.execute(q, part):
            rows.setdefault(doc_id, []).append(blob)
    return rows


def hashes_of(db: sqlite3.Connection, doc_ids: Sequence[str]) -> dict[str, str]:
    """The content hash of each stored document of ``doc_ids`` (kept on its first passage)."""
    out: dict[str, str] = {}
    for part in _chunks(list(doc_ids)):
        q = f"SELECT doc_id, hash FROM passages WHERE chunk = 0 AND doc_id IN ({_marks(part)})"
        out.update(dict(db.execute(q, part).fetchall()))
    return out


def has_hash_index(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'doc_hashes'").fetchone() is not None


def ids_by_hash(db: sqlite3.Connection, hashes: Sequence[str],
                limit: int | Mapping[str, int] | None = None) -> dict[str, list[str]]:
    """The ids of the stored documents whose version hash is one of ``hashes``, by hash, in the order they were
    stored. ``limit`` (a number, or ``{hash: number}`` with 1 for a hash it leaves out) keeps at most that many
    ids per hash: each hash is one search of the ``doc_hashes`` index that stops there, so the cost is the ids
    returned, not the copies stored (60,000 documents with one text answer a limit of 2 with 2 rows).

    >>> db = sqlite3.connect(":memory:")
    >>> _ = db.executescript(SCHEMA)
    >>> _ = insert_passages(db, [Passage(d, 0, 0, "t", hash="h1") for d in "abc"], np.ones((3, 2), np.float32))
    >>> ids_by_hash(db, ["h1", "h2"]), ids_by_hash(db, ["h1"], limit=2), ids_by_hash(db, ["h1"], limit={"h1": 1})
    ({'h1': ['a', 'b', 'c']}, {'h1': ['a', 'b']}, {'h1': ['a']})
    """
    groups: dict[int, list[str]] = {}  # the limit -> the hashes looked up with it (-1: no limit, in SQLite)
    for h in dict.fromkeys(hashes):
        n = -1 if limit is None else limit if isinstance(limit, int) else limit.get(h, 1)
        if n != 0:
            groups.setdefault(max(n, -1), []).append(h)
    found: dict[str, list[str]] = {}
    q = ("SELECT k.value, p.doc_id FROM json_each(?) AS k JOIN passages AS p ON p.pid IN "
         "(SELECT q.pid FROM passages AS q WHERE q.chunk = 0 AND q.hash = k.value LIMIT ?) ORDER BY k.key, p.pid")
    for n, group in groups.items():
        for part in _chunks(group, 5000):
            for h, doc_id in db.execute(q, (json.dumps(list(part)), n)):
                found.setdefault(h, []).append(doc_id)
    return {h: found[h] for h in dict.fromkeys(hashes) if h in found}


def rows_after(db: sqlite3.Connection, last: tuple[str, int]) -> list[tuple]:
    """The next 5,000 passage rows (for :func:`row_passage`) after ``last``, a ``(doc_id, chunk)``, in that order."""
    return db.execute(
        f"SELECT {_FIELDS} FROM passages WHERE (doc_id, chunk) > (?, ?) ORDER BY doc_id, chunk LIMIT 5000",
        last,
    ).fetchall()
