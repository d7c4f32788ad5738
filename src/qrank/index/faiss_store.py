"""The embedded default store: SQLite (WAL) is the source of truth, FAISS a rebuildable search index.

Why this split: SQLite gives atomic, crash-safe writes of passages *and their vectors* (float32 blobs);
the FAISS index is derived from it and saved (``persist``) as ``faiss.<generation>.index`` through a
temporary file, fsync and an atomic rename. Every write bumps a generation counter and appends the row
ids it added and removed to a ``changes`` journal, in the same SQLite transaction. An index that is
behind (loaded from an older file after a crash, or in a process that did not make the latest writes)
catches up by replaying the journal; when that is impossible (no usable file) it is rebuilt from SQLite.
Nothing is pickled: SQLite rows, raw float32 bytes, and FAISS's own format.

Below ``hnsw_threshold`` passages the index is exact (``IndexFlatIP``), above it HNSW; both sit in an
``IndexIDMap2`` keyed by the SQLite row id. HNSW cannot remove vectors, so deletions become tombstones
excluded at search time until the next rebuild.

>>> import tempfile
>>> from qrank.settings import IndexSettings
>>> store = FaissStore(Path(tempfile.mkdtemp()), 2, IndexSettings())
>>> store.add([Passage("a", 0, 0, "cats purr"), Passage("b", 0, 0, "dogs bark")], np.eye(2, dtype=np.float32))
>>> [(h.doc_id, h.score) for h in store.search(np.array([1.0, 0.0], dtype=np.float32), 1)]
[('a', 1.0)]
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput, QrankError
from ..fileio import atomic_write
from ..settings import IndexSettings
from .faiss_index import build_index, faiss_ids, flat_search, index_kind, load_faiss, search_params
from .sqlite_passages import (HASH_INDEX, WriteTxn, delete_docs, docs_where, exact_top_k, filter_sql, filtered_pids,
                              has_hash_index, hashes_of, ids_by_hash, insert_passages, open_db, passages_by_pid,
                              passages_of, read_meta, row_passage, rows_after, vector_blobs, vectors_by_pid)
from .store import Hit, Passage, check_filter, check_vectors

log = logging.getLogger(__name__)

_EXACT_SUBSET = 10_000  # filtered searches over at most this many passages are scored exactly
_REBUILD_DEAD_FRACTION = 0.2  # deleted vectors stay in the index as dead ids; past 20% they cost more than a rebuild


def _written_by_live_process(path: Path) -> bool:
    """A ``*.tmp-<pid>`` file another running process is still writing (left alone)."""
    _, sep, pid = path.name.rpartition(".tmp-")
    if not sep or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FaissStore:
    """Passages and vectors in ``<dir>/store.sqlite``, the FAISS index in ``<dir>/faiss.<gen>.index``.

    Thread-safe: one lock guards the connection and the in-memory index (searches run one at a time;
    FAISS itself uses all cores for each).
    """

    backend = "faiss"

    def __init__(self, path: Path, dim: int, settings: IndexSettings, *, existing: bool = False,
                 name: str | None = None) -> None:
        load_faiss()
        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.settings = settings
        self._lock = threading.RLock()
        self._db, stored = open_db(self.dir / "store.sqlite", name or self.dir.name, existing)
        if stored is None:
            with self._write():
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('dim', ?), ('generation', '0'), ('journal_base', '0')",
                    (str(self.dim),),
                )
            stored = self._meta("dim")
        if int(stored) != self.dim:
            raise InvalidInput("embedder", f"this store holds {stored}-dimensional vectors, not {self.dim}")
        self._index = None  # loaded lazily: writers need only SQLite
        self._kind = "flat"
        self._gen = -1
        self._dead: set[int] = set()
        self._dead_sel = None
        self._dirty = False
        self._hash_index = False  # known to exist (ids_with_hashes looks once)

    # --- SQLite helpers -------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        return read_meta(self._db, key)

    def _write(self) -> WriteTxn:
        return WriteTxn(self._db, self._lock)

    def generation(self) -> int:
        with self._lock:
            return int(self._meta("generation") or 0)

    def _bump(self) -> int:
        gen = int(self._meta("generation") or 0)
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen + 1),))
        return gen

    # --- writes ---------------------------------------------------------------------------------
    def add(self, passages: Sequence[Passage], vectors: np.ndarray) -> None:
        vectors = check_vectors(vectors, len(passages), self.dim)
        if not passages:
            return
        doc_ids = list(dict.fromkeys(p.doc_id for p in passages))
        with self._lock:
            try:
                with self._write():
                    gen = self._bump()
                    old = self._remove_docs(doc_ids, gen + 1)
                    new_pids = insert_passages(self._db, passages, vectors)
                    self._db.executemany("INSERT INTO changes VALUES (?, 1, ?)", [(gen + 1, pid) for pid in new_pids])
            except sqlite3.IntegrityError as exc:
                raise InvalidInput("passages", f"two passages share a (document id, chunk) pair: {exc}") from exc
            self._after_write(gen, old, np.asarray(new_pids, dtype=np.int64), vectors)

    def delete(self, doc_ids: Sequence[str]) -> int:
        doc_ids = list(dict.fromkeys(doc_ids))
        if not doc_ids:
            return 0
        with self._lock:
            with self._write():
                existing = set(self.hashes(doc_ids))
                if not existing:
                    return 0
                gen = self._bump()
                old = self._remove_docs(doc_ids, gen + 1)
            self._after_write(gen, old, np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32))
            return len(existing)

    def _remove_docs(self, doc_ids: Sequence[str], gen: int) -> list[int]:
        """Delete the passages of ``doc_ids`` (inside a write transaction) and journal their row ids."""
        out = delete_docs(self._db, doc_ids)
        self._db.executemany("INSERT INTO changes VALUES (?, 0, ?)", [(gen, pid) for pid in out])
        return out

    def _after_write(self, gen_before: int, removed: list[int], new_pids: np.ndarray, vectors: np.ndarray) -> None:
        """Mirror a committed write in the loaded index when it was current (else the journal catches up)."""
        if self._index is None or self._gen != gen_before:
            return
        try:
            self._drop_ids(removed)
            if len(new_pids):
                self._index.add_with_ids(vectors, new_pids)
            self._gen = gen_before + 1
            self._dirty = True
        except Exception:
            self._index = None
            raise

    def _drop_ids(self, pids) -> None:
        if len(pids) == 0:
            return
        if self._kind == "flat":
            self._index.remove_ids(np.asarray(list(pids), dtype=np.int64))
        else:  # HNSW cannot remove: tombstones, excluded at search time, gone at the next rebuild
            self._dead.update(int(p) for p in pids)
            self._dead_sel = None

    # --- the FAISS index ------------------------------------------------------------------------
    def _desired_kind(self, n: int) -> str:
        return "hnsw" if n > self.settings.hnsw_threshold else "flat"

    def _file(self, gen: int) -> Path:
        return self.dir / f"faiss.{gen}.index"

    def _ensure_index(self) -> None:
        """Make the in-memory index match SQLite: load the newest usable file or rebuild, then replay."""
        gen = int(self._meta("generation") or 0)
        if self._index is not None and gen == self._gen:
            return
        base = int(self._meta("journal_base") or 0)
        if self._index is None or self._gen < base:
            if not self._load_file(base, gen):
                self._index, self._gen = self._rebuild()
                self._kind, self._dead, self._dead_sel, self._dirty = index_kind(self._index), set(), None, True
        self._catch_up()

    def _load_file(self, base: int, gen: int) -> bool:
        """Load the newest ``faiss.<g>.index`` with ``base <= g <= gen`` (the journal covers the rest)."""
        faiss = load_faiss()
        files = []
        for f in self.dir.glob("faiss.*.index"):
            g = f.name.split(".")[1]
            if g.isdigit() and base <= int(g) <= gen:
                files.append((int(g), f))
        for g, path in sorted(files, reverse=True):
            try:
                index = faiss.read_index(str(path))
                if not isinstance(index, faiss.IndexIDMap2) or index.d != self.dim:
                    raise QrankError(f"{path.name} is not an ID-mapped {self.dim}-d index")
            except (RuntimeError, QrankError) as exc:
                log.warning("FAISS file %s unusable (%s)", path, exc)
                continue
            self._index, self._gen, self._kind = index, g, index_kind(index)
            self._dead, self._dead_sel, self._dirty = set(), None, False
            if self._kind == "hnsw":  # tombstones are not saved: they are the ids SQLite no longer has
                ids = faiss_ids(index)
                live = np.fromiter((r[0] for r in self._db.execute("SELECT pid FROM passages")), dtype=np.int64)
                self._dead = set(np.setdiff1d(ids, live).tolist())
            log.info("loaded %s (%d vectors)", path.name, index.ntotal)
            return True
        return False

    def _catch_up(self) -> None:
        """Replay journaled changes newer than the loaded index."""
        self._db.execute("BEGIN")  # one snapshot for the generation, the journal and the vectors
        try:
            gen = int(self._meta("generation") or 0)
            if gen == self._gen:
                return
            rows = self._db.execute("SELECT added, pid FROM changes WHERE gen > ? AND gen <= ? ORDER BY gen",
                                    (self._gen, gen)).fetchall()
            removed = [pid for added, pid in rows if not added]
            added = [pid for added, pid in rows if added]
            pids, vecs = vectors_by_pid(self._db, added, self.dim)
        finally:
            self._db.execute("COMMIT")
        self._drop_ids(removed)  # ids the index never had are ignored by FAISS and harmless as tombstones
        if pids:
            self._index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), np.asarray(pids, dtype=np.int64))
        log.debug("FAISS index caught up from generation %d to %d (+%d, -%d)", self._gen, gen, len(pids), len(removed))
        self._gen, self._dirty = gen, True

    def _rebuild(self):
        from tqdm.auto import tqdm

        self._db.execute("BEGIN")
        try:
            gen = int(self._meta("generation") or 0)
            n = self._db.execute("SELECT COUNT(*) FROM passages").fetchone()[0]
            index = build_index(self.dim, self._desired_kind(n), self.settings)
            cur = self._db.execute("SELECT pid, vector FROM passages ORDER BY pid")
            with tqdm(total=n, desc="building FAISS index", unit="vec", disable=None if n > 20_000 else True) as bar:
                while rows := cur.fetchmany(20_000):
                    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), self.dim)
                    index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids)
                    bar.update(len(rows))
        finally:
            self._db.execute("COMMIT")
        log.info("built FAISS %s index of %d vectors (generation %d)", index_kind(index), n, gen)
        return index, gen

    def persist(self, force: bool = False) -> None:
        """Write the FAISS file for the current generation (rebuilding first when the collection
        crossed ``hnsw_threshold`` or tombstones pile up), trim the journal, delete older files.

        Unless ``force``, nothing is written while a file exists and the journal since it is short
        (under 1,000 changes or 5% of the passages): replaying it on open is cheaper than rewriting a
        large index after every small add."""
        with self._lock:
            if not force and any(self.dir.glob("faiss.*.index")):
                journal = self._db.execute("SELECT COUNT(*) FROM changes").fetchone()[0]
                if journal < max(1000, 0.05 * self.count_passages()):
                    return
            self._ensure_index()
            n = self._index.ntotal - len(self._dead)
            if self._kind != self._desired_kind(n) or len(self._dead) > _REBUILD_DEAD_FRACTION * max(
                self._index.ntotal, 1
            ):
                self._index = None
                self._index, self._gen = self._rebuild()
                self._kind, self._dead, self._dead_sel, self._dirty = index_kind(self._index), set(), None, True
            path = self._file(self._gen)
            if self._dirty or not path.is_file():
                atomic_write(path, lambda tmp: load_faiss().write_index(self._index, tmp))
                self._dirty = False
            with self._write():
                base = max(int(self._meta("journal_base") or 0), self._gen)
                self._db.execute("DELETE FROM changes WHERE gen <= ?", (base,))
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'journal_base'", (str(base),))
            for old in self.dir.glob("faiss.*.index*"):
                if old != path and not _written_by_live_process(old):
                    old.unlink(missing_ok=True)

    # --- reads ----------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        query = check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1), 1, self.dim)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInput("k", f"must be a positive integer, got {k!r}")
        norm = check_filter(filter)
        faiss = load_faiss()
        with self._lock:
            self._ensure_index()
            if norm:
                allowed = filtered_pids(self._db, norm)
                if not allowed:
                    return []
                if len(allowed) <= _EXACT_SUBSET:
                    scores, pids = exact_top_k(self._db, query[0], allowed, k, self.dim)
                    return self._hits(pids, scores)
                sel = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            elif self._dead:
                if self._dead_sel is None:
                    self._dead_batch = faiss.IDSelectorBatch(np.fromiter(self._dead, dtype=np.int64))
                    self._dead_sel = faiss.IDSelectorNot(self._dead_batch)
                sel = self._dead_sel
            else:
                sel = None
            k_eff = min(k, max(self._index.ntotal, 1))
            if self._kind == "flat" and sel is None:
                scores, labels = flat_search(self._index, query[0], k_eff)
                return self._hits(labels.tolist(), scores.tolist())
            scores, labels = self._index.search(
                query, k_eff, params=search_params(self._kind, k_eff, self.settings, sel)
            )
            keep = labels[0] >= 0
            return self._hits(labels[0][keep].tolist(), scores[0][keep].tolist())

    def _hits(self, pids: list[int], scores: list[float]) -> list[Hit]:
        found = passages_by_pid(self._db, pids)
        return [Hit(found[p], float(s)) for p, s in zip(pids, scores) if p in found]

    def matching(self, filter: Mapping[str, Any]) -> set[str]:
        norm = check_filter(filter)
        if not norm:
            raise InvalidInput("filter", "must name at least one metadata key")
        where, params = filter_sql(norm)
        with self._lock:
            return docs_where(self._db, where, params)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(DISTINCT doc_id) FROM passages").fetchone()[0])

    def count_passages(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM passages").fetchone()[0])

    def get(self, doc_ids: Sequence[str]) -> dict[str, list[Passage]]:
        with self._lock:
            return passages_of(self._db, doc_ids)

    def vectors(self, doc_ids: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            rows = vector_blobs(self._db, doc_ids)
        return {
            d: np.frombuffer(b"".join(b), dtype="<f4").reshape(len(b), self.dim).astype(np.float32)
            for d, b in rows.items()
        }

    def hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        with self._lock:
            return hashes_of(self._db, doc_ids)

    def ids_with_hashes(self, hashes: Sequence[str],
                        limit: int | Mapping[str, int] | None = None) -> dict[str, list[str]]:
        """The ids of the stored documents whose version hash is one of ``hashes``, by hash, at most ``limit``
        per hash when given (a number, or ``{hash: number}``; see :func:`ids_by_hash`): an indexed lookup whose
        cost is the ids returned. A store made before the index was added builds it once, on its first lookup."""
        with self._lock:
            if not self._hash_index:
                if not has_hash_index(self._db):
                    with self._write():
                        self._db.execute(HASH_INDEX)
                self._hash_index = True
            return ids_by_hash(self._db, hashes, limit)

    def iter_passages(self) -> Iterator[Passage]:
        last = ("", -1)
        while True:
            with self._lock:
                rows = rows_after(self._db, last)
            if not rows:
                return
            for row in rows:
                yield row_passage(row)
            last = (rows[-1][0], rows[-1][1])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "backend": self.backend,
                # not loaded: the kind persist() builds for this size
                "index": self._kind if self._index is not None else self._desired_kind(self.count_passages()),
                "documents": self.count(),
                "passages": self.count_passages(),
                "tombstones": len(self._dead),
                "generation": self.generation(),
                "dim": self.dim,
            }

    def drop(self) -> None:
        """Close the store and delete its files (the database and every FAISS file) from the folder."""
        with self._lock:
            self.close()
            for f in [*self.dir.glob("store.sqlite*"), *self.dir.glob("faiss.*.index*")]:
                f.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()  # closing twice is harmless
            self._index = None
