"""Milvus through pymilvus: Milvus Lite (a local folder) by default, a cluster with ``index.milvus_uri``.

The same code talks to both; the only difference is the URI (and a token for a secured cluster):

    QRANK_INDEX__BACKEND=milvus                        # new collections use Milvus
    QRANK_INDEX__MILVUS_URI=http://milvus:19530        # unset = Milvus Lite at <collection>/milvus.db
    QRANK_INDEX__MILVUS_TOKEN=root:Milvus              # or an API key
    QRANK_INDEX__MILVUS_INDEX=HNSW                     # FLAT (exact, default), HNSW, IVF_FLAT, AUTOINDEX
    QRANK_INDEX__MILVUS_SHARDS=4                       # shards of new collections (cluster)
    QRANK_INDEX__MILVUS_PARTITION_KEY=tenant           # metadata key that routes documents to partitions

One qrank collection is one Milvus collection named ``qrank_<name>`` with one row per passage, searched
by inner product. The primary key is ``<sha256(doc_id)[:32]>:<chunk>`` and every row carries its document's
passage count, so every per-document operation is a primary-key lookup (filter scans are slow in Milvus
Lite). Milvus has no multi-row transactions, so unlike the FAISS store (the crash-safe default) a write that
stops half-way (a crash, a server that stops answering) can leave a document with a mix of old and new
passages. The document's first row (chunk 0, which carries its hash and passage count) is therefore its
commit mark: before any other row of a document is written or deleted, that row reads ``pending`` (with a passage
count that covers every row the document has or gets), and it gets its real hash last (an add) or goes last (a
delete). So at every point of a write cut short, every row of a document lies within its first row's count, and the
first row shows a real hash only when all the rows are that version: the next add of the same documents (of either
version) does not skip an unfinished one as unchanged and completes it, the next delete finds it, and re-running
an add or a delete is harmless.

Sharding and partitions are fixed when the Milvus collection is created and recorded in its properties,
so later processes need not repeat the settings. With a partition key, every row also carries ``part``
(the document's value of that metadata key, as text) as Milvus's partition-key field: a filter on that
key searches only the partitions that can hold matches.

A server that cannot be reached (down, a wrong URI, a refused connection, no answer within
``index.milvus_connect_timeout_s``), when the store opens or at any later call, raises
:class:`~qrank.index.store.StoreUnavailable` naming the collection and the URI (its password hidden): every door
says so in one line (the server answers 503 with ``Retry-After``), and the next call tries again (pymilvus
reconnects by itself once the server is back). So does a server that took the connection but does not answer a
request (hung, overloaded, a stopped process): every call gets ``index.milvus_request_timeout_s`` as its gRPC
deadline, and a write cut short says that it may be incomplete and that running it again completes it.
Tested in tests/integration/test_milvus_unreachable.py.

Usage (Milvus Lite starts a local process; tested in tests/integration/test_index_milvus.py):
``MilvusStore(Path("/tmp/c"), "docs", 384, IndexSettings()).count()``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
import shutil
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput, QrankError, require
from ..fileio import atomic_write_json
from ..settings import IndexSettings
from .milvus_errors import gave_up_waiting, public_uri, quiet_pymilvus_logs, unreachable_reason
from .store import Hit, Passage, StoreUnavailable, check_filter, check_vectors

log = logging.getLogger(__name__)

_OUT = ["doc_id", "chunk", "start", "text", "title", "metadata", "hash"]
_MAX_VARCHAR = 65535  # Milvus's largest VARCHAR max_length (bytes)
_MAX_LIMIT = 16384  # Milvus caps search/query results per call
_IN_CHUNK = 1000  # primary keys per get/query call: keeps each request and its filter expression small
_INSERT_ROWS = 2000  # rows per insert/upsert: ~10 MB with 512-token passages + vectors, under the gRPC limit
_MAX_PART = 512  # bytes of a partition-key value (the `part` VARCHAR); ids and metadata values are short
_KEY_PROPERTY = "qrank.partition_key"  # collection property naming the metadata key behind `part`
_PENDING = "pending"  # the hash of a first row written ahead of the document's other rows (never a real hash)


def _pk(doc_id: str, chunk: int) -> str:
    # a digest, not the id itself: Milvus's paging expressions break on quotes inside string keys
    return f"{hashlib.sha256(doc_id.encode('utf-8')).hexdigest()[:32]}:{chunk}"


def milvus_name(name: str) -> str:
    """A legal Milvus collection name for a qrank collection name.

    >>> milvus_name("my-docs")
    'qrank_my_docs'
    """
    return "qrank_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def part_value(value: Any) -> str:
    """The partition-key text of a metadata value (strings as they are, anything else as JSON; none = "").

    >>> part_value("acme"), part_value(7), part_value(None)
    ('acme', '7', '')
    """
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def filter_expr(norm: Mapping[str, list], partition_key: str | None = None) -> str:
    """A Milvus boolean expression for a normalised metadata filter (see ``check_filter``).

    Milvus Lite cannot apply ``in`` to JSON paths, so each key becomes ORed equalities. A filter on the
    collection's partition key also names the partitions to search (a superset: the JSON test decides).

    >>> filter_expr({"lang": ["en", "de"], "year": [2020]})
    '(metadata["lang"] == "en" or metadata["lang"] == "de") and (metadata["year"] == 2020)'
    >>> filter_expr({"tenant": ["acme"]}, partition_key="tenant")
    'part in ["acme"] and (metadata["tenant"] == "acme")'
    """
    parts = []
    if partition_key and partition_key in norm:
        parts.append("part in " + json.dumps(sorted({part_value(v) for v in norm[partition_key]})))
    for key, values in norm.items():
        parts.append("(" + " or ".join(f'metadata["{key}"] == {json.dumps(v)}' for v in values) + ")")
    return " and ".join(parts)


def _reaching(method: Callable) -> Callable:
    """Run a store method with "cannot reach the server" turned into :class:`StoreUnavailable`."""

    @functools.wraps(method)
    def run(self: MilvusStore, *args: Any, **kwargs: Any) -> Any:
        with self._reachable():
            return method(self, *args, **kwargs)

    return run


def _passage(row: Mapping[str, Any]) -> Passage:
    return Passage(doc_id=row["doc_id"], chunk=int(row["chunk"]), start=int(row["start"]), text=row["text"],
                   title=row["title"] or None, metadata=dict(row["metadata"] or {}), hash=row["hash"])


class MilvusStore:
    """A :class:`~qrank.index.store.VectorStore` on Milvus (Lite or cluster)."""

    backend = "milvus"

    def __init__(self, path: Path, name: str, dim: int, settings: IndexSettings) -> None:
        pymilvus = require("pymilvus", "milvus")
        quiet_pymilvus_logs()
        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.settings = settings
        self.collection = name
        self.name = milvus_name(name)
        self._lock = threading.RLock()
        self._state = self.dir / "milvus.state.json"
        self._closed = True  # until a client exists
        # every call after connecting gets this gRPC deadline: a server that took the connection but stopped
        # answering (hung, overloaded, a stopped process) is then StoreUnavailable, never a call that waits forever
        self.timeout = settings.milvus_request_timeout_s
        if settings.milvus_uri:
            uri = settings.milvus_uri
        else:
            require("milvus_lite", "milvus")
            uri = str(self.dir / "milvus.db")
        self.where = public_uri(uri) if settings.milvus_uri else uri
        with self._reachable():
            try:
                self.client = pymilvus.MilvusClient(
                    uri=uri, token=settings.milvus_token or "", db_name=settings.milvus_db or "",
                    timeout=settings.milvus_connect_timeout_s,
                )
            except Exception as exc:
                if unreachable_reason(exc) is not None:
                    raise  # said by _reachable
                raise QrankError(f"cannot connect to Milvus at {self.where}: {self._scrub(str(exc))}",
                                 field="milvus_uri") from exc
        self._closed = False
        try:
            with self._reachable():
                self._open(pymilvus)
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _reachable(self, unfinished: str | None = None) -> Iterator[None]:
        """pymilvus's "cannot reach the server", met anywhere inside, as :class:`StoreUnavailable` naming the
        collection and the URI (no secrets) and which deadline passed; any other error goes on unchanged.
        ``unfinished`` (a write) is added to the reason: what was cut short, and how to complete it."""
        try:
            yield
        except QrankError:
            raise
        except Exception as exc:
            reason = unreachable_reason(exc, self.settings.milvus_connect_timeout_s, self.timeout)
            if reason is None:
                raise
            raise StoreUnavailable(self.collection, self.where,
                                   f"{reason}; {unfinished}" if unfinished else reason) from exc

    @contextlib.contextmanager
    def _writing(self, again: str) -> Iterator[None]:
        """Around a write's calls to the server: a write cut short may be partly applied (the server may even apply
        the last request after its deadline), so the error says so and how to complete it, and the generation moves
        on whatever happened (derived indexes such as BM25 must not keep trusting what they read before)."""
        try:
            with self._reachable(f"the write may be incomplete: {again} completes it"):
                yield
        finally:
            self._bump()

    def _scrub(self, message: str) -> str:
        """``message`` without the raw URI (which may hold a password) or the token."""
        uri, token = self.settings.milvus_uri, self.settings.milvus_token
        if uri:
            message = message.replace(uri, self.where)
        return message.replace(token, "***") if token else message

    def _open(self, pymilvus: Any) -> None:
        t = self.timeout
        if not self.client.has_collection(self.name, timeout=t):
            self._create(pymilvus.DataType)
        desc = self.client.describe_collection(self.name, timeout=t)
        stored = next(int(f["params"]["dim"]) for f in desc["fields"] if f["name"] == "vector")
        if stored != self.dim:
            raise InvalidInput(
                "embedder", f"Milvus collection {self.name} holds {stored}-dimensional vectors, not {self.dim}"
            )
        self.partition_key: str | None = (desc.get("properties") or {}).get(_KEY_PROPERTY) or None
        self.shards = int(desc.get("num_shards") or 1)
        try:
            self.client.load_collection(self.name, timeout=t)
        except Exception as exc:
            # a large collection a cluster has not loaded yet (after a release): the server answers, and goes on
            # loading after pymilvus stops waiting, so a later open finds it loaded
            if not gave_up_waiting(exc, "loading collection"):
                raise
            raise StoreUnavailable(self.collection, self.where, f"the collection is still loading after {t:g} s") \
                from exc
        # the index the collection was created with decides the search parameters, not today's settings
        self.index_type = str(
            self.client.describe_index(self.name, "vector", timeout=t).get("index_type", self.settings.milvus_index)
        ).upper()

    def _create(self, DataType) -> None:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)  # 32 hex + ":" + chunk number
        schema.add_field("doc_id", DataType.VARCHAR, max_length=512)
        schema.add_field("chunk", DataType.INT64)
        schema.add_field("n_chunks", DataType.INT64)
        schema.add_field("start", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=_MAX_VARCHAR)
        schema.add_field("title", DataType.VARCHAR, max_length=_MAX_VARCHAR)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("hash", DataType.VARCHAR, max_length=128)  # a hex digest (64 for SHA-256), with room
        key = self.settings.milvus_partition_key
        extra: dict[str, Any] = {"shards_num": self.settings.milvus_shards}
        if key:
            schema.add_field("part", DataType.VARCHAR, max_length=_MAX_PART, is_partition_key=True)
            extra["num_partitions"] = self.settings.milvus_partitions
            extra["properties"] = {_KEY_PROPERTY: key}
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        params = self.client.prepare_index_params()
        kind = self.settings.milvus_index
        build = (
            {"M": self.settings.hnsw_m, "efConstruction": self.settings.hnsw_ef_construction} if kind == "HNSW" else {}
        )
        if kind == "IVF_FLAT":
            build = {"nlist": 1024}  # the usual ~sqrt(N) clusters, for about a million passages
        params.add_index(field_name="vector", index_type=kind, metric_type="IP", params=build)
        self.client.create_collection(self.name, schema=schema, index_params=params, timeout=self.timeout, **extra)
        log.info("created Milvus collection %s (%s, %d shards%s)", self.name, kind, self.settings.milvus_shards,
                 f", partition key metadata[{key!r}] over {self.settings.milvus_partitions} partitions" if key else "")

    # --- generation (a local counter: Milvus has none) -------------------------------------------
    def generation(self) -> int:
        try:
            return int(json.loads(self._state.read_text())["generation"])
        except (OSError, ValueError, KeyError):
            return 0

    def _bump(self) -> None:
        atomic_write_json(self._state, {"generation": self.generation() + 1})

    # --- writes ---------------------------------------------------------------------------------
    @_reaching
    def add(self, passages: Sequence[Passage], vectors: np.ndarray) -> None:
        vectors = check_vectors(vectors, len(passages), self.dim)
        if not passages:
            return
        n_chunks: dict[str, int] = {}
        for p in passages:
            n_chunks[p.doc_id] = n_chunks.get(p.doc_id, 0) + 1
            for field, value in (("text", p.text), ("title", p.title or "")):
                if len(value.encode("utf-8")) > _MAX_VARCHAR:
                    raise InvalidInput(
                        field,
                        f"document {p.doc_id!r}: over {_MAX_VARCHAR} bytes, Milvus's limit (lower index.chunk_tokens)",
                    )
            if len(p.doc_id.encode("utf-8")) > 512:  # the doc_id VARCHAR's max_length (MAX_ID_CHARS, in bytes)
                raise InvalidInput("ids", f"{p.doc_id[:40]!r}…: over 512 bytes")
            if self.partition_key and len(part_value(p.metadata.get(self.partition_key)).encode("utf-8")) > _MAX_PART:
                raise InvalidInput(f"metadata.{self.partition_key}",
                                   f"document {p.doc_id!r}: the partition key's value is over {_MAX_PART} bytes")
        rows = [{"pk": _pk(p.doc_id, p.chunk), "doc_id": p.doc_id, "chunk": p.chunk, "n_chunks": n_chunks[p.doc_id],
                 "start": p.start, "text": p.text, "title": p.title or "", "metadata": p.metadata, "hash": p.hash,
                 "vector": v.tolist()} for p, v in zip(passages, vectors)]
        if self.partition_key:
            for r in rows:
                r["part"] = part_value(r["metadata"].get(self.partition_key))
        with self._lock:
            heads = self._heads(list(n_chunks))
            # the passage count each known document's first row holds: every row it has lies below it
            reach = {d: int(h["n_chunks"]) for d, h in heads.items()}
            first = {r["doc_id"]: r for r in rows if r["chunk"] == 0}
            # The first row (the hash `hashes` reports, the count every lookup uses) gets its real hash last. Before
            # any other row of a document is written or deleted (a new document of several passages, a known one of
            # several passages before or after), that row is written first with the hash "pending" and a count
            # covering both versions' rows: a write cut short then leaves each unfinished document reading as
            # "pending", which no add skips as unchanged (not even one of its old version), with every row it has
            # within reach (a later add deletes what it does not need as surplus). A document whose first row holds
            # this very version already (the same hash and count) keeps it: rewriting its rows changes nothing.
            same = {d for d, h in heads.items() if d in first and h["hash"] and h["hash"] == first[d]["hash"]
                    and reach[d] == n_chunks[d]}
            pending = [{**first[d], "n_chunks": max(n, reach.get(d, 0)), "hash": _PENDING}
                       for d, n in n_chunks.items() if d in first and d not in same and max(n, reach.get(d, 0)) > 1]
            surplus = [_pk(d, c) for d, h in reach.items() for c in range(n_chunks[d], h)]
            with self._writing("adding the same documents again"):
                self._put(pending, n_chunks)  # upserted, new documents too: one request per batch of first rows
                if surplus:
                    self.client.delete(self.name, ids=surplus, timeout=self.timeout)
                self._put([r for r in rows if r["chunk"] != 0], reach)
                self._put(list(first.values()), reach.keys() | {r["doc_id"] for r in pending})

    def _put(self, rows: list[dict], known: Collection[str]) -> None:
        """Write ``rows`` in bounded batches: upserted for the ``known`` documents, whose rows may exist (inserting
        an existing primary key would duplicate it), inserted for the others, which have no rows yet (Milvus
        inserts faster: an upsert also deletes). Callers write a document's other rows only after its first row
        reads ``pending`` (unless that first row is its only one), so no document has rows its first row does not
        show."""
        for write, part in ((self.client.upsert, [r for r in rows if r["doc_id"] in known]),
                            (self.client.insert, [r for r in rows if r["doc_id"] not in known])):
            for i in range(0, len(part), _INSERT_ROWS):
                write(self.name, part[i : i + _INSERT_ROWS], timeout=self.timeout)

    @_reaching
    def _heads(self, doc_ids: Sequence[str], whole: bool = False) -> dict[str, dict]:
        """First-passage rows (doc_id, hash, n_chunks; ``whole``: every field, to write the row back) of the known
        documents, by primary key."""
        doc_ids = list(dict.fromkeys(doc_ids))
        fields = ["doc_id", "hash", "n_chunks"]
        if whole:
            fields = ["pk", *_OUT, "n_chunks", "vector", *(["part"] if self.partition_key else [])]
        out: dict[str, dict] = {}
        with self._lock:
            for i in range(0, len(doc_ids), _IN_CHUNK):
                ids = [_pk(d, 0) for d in doc_ids[i : i + _IN_CHUNK]]
                for row in self.client.get(self.name, ids=ids, output_fields=fields, timeout=self.timeout):
                    row = {f: row[f] for f in fields}
                    if whole:
                        row["vector"] = np.asarray(row["vector"], dtype=np.float32).tolist()
                    out[row["doc_id"]] = row
        return out

    def _all_pks(self, doc_ids: Sequence[str]) -> list[str]:
        return [_pk(d, c) for d, h in self._heads(doc_ids).items() for c in range(int(h["n_chunks"]))]

    @_reaching
    def delete(self, doc_ids: Sequence[str]) -> int:
        with self._lock:
            heads = self._heads(doc_ids, whole=True)
            if heads:
                # as in add: a document of several rows first reads "pending" (its first row written back so), then
                # loses its other rows, then its first row. A delete cut short leaves each unfinished document with
                # its first row, which deleting the same ids again finds and which no add skips as unchanged (adding
                # the document again then completes it instead of leaving it short of passages)
                pending = [{**h, "hash": _PENDING} for h in heads.values()
                           if int(h["n_chunks"]) > 1 and h["hash"] != _PENDING]
                rest = [_pk(d, c) for d, h in heads.items() for c in range(1, int(h["n_chunks"]))]
                with self._writing("deleting the same documents again"):
                    self._put(pending, heads)
                    if rest:
                        self.client.delete(self.name, ids=rest, timeout=self.timeout)
                    self.client.delete(self.name, ids=[_pk(d, 0) for d in heads], timeout=self.timeout)
        return len(heads)

    @_reaching
    def persist(self, force: bool = False) -> None:
        with self._lock:
            try:
                self.client.flush(self.name, timeout=self.timeout)
            except Exception as exc:
                # the rows are written and durable already (Milvus logs each write): a flush that is slow to
                # finish (sealing segments on a busy cluster) finishes on its own, so this is no error
                if not gave_up_waiting(exc, "flush"):
                    raise
                log.warning("Milvus has not finished flushing %s after %g s; it goes on by itself", self.name,
                            self.timeout)

    # --- reads ----------------------------------------------------------------------------------
    @_reaching
    def search(self, vector: np.ndarray, k: int, filter: Mapping[str, Any] | None = None) -> list[Hit]:
        query = check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1), 1, self.dim)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInput("k", f"must be a positive integer, got {k!r}")
        norm = check_filter(filter)
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(self.settings.hnsw_ef_search, k)}
        with self._lock:
            res = self.client.search(self.name, query.tolist(), limit=min(k, _MAX_LIMIT),
                                     filter=filter_expr(norm, self.partition_key) if norm else "", output_fields=_OUT,
                                     search_params=params, timeout=self.timeout)
        return [Hit(_passage(r["entity"]), float(r["distance"])) for r in res[0]]

    @_reaching
    def _query(self, expr: str, fields: list[str]) -> list[dict]:
        with self._lock:
            return list(self.client.query(self.name, filter=expr, output_fields=fields, limit=_MAX_LIMIT,
                                          timeout=self.timeout))

    @_reaching
    def _rows(self, doc_ids: Sequence[str], fields: list[str]) -> list[dict]:
        pks = self._all_pks(doc_ids)
        rows: list[dict] = []
        with self._lock:
            for i in range(0, len(pks), _IN_CHUNK):
                rows += self.client.get(self.name, ids=pks[i : i + _IN_CHUNK], output_fields=fields,
                                        timeout=self.timeout)
        return sorted(rows, key=lambda r: (r["doc_id"], r["chunk"]))

    def get(self, doc_ids: Sequence[str]) -> dict[str, list[Passage]]:
        out: dict[str, list[Passage]] = {}
        for row in self._rows(doc_ids, _OUT):
            out.setdefault(row["doc_id"], []).append(_passage(row))
        return out

    def vectors(self, doc_ids: Sequence[str]) -> dict[str, np.ndarray]:
        rows: dict[str, list] = {}
        for row in self._rows(doc_ids, ["doc_id", "chunk", "vector"]):
            rows.setdefault(row["doc_id"], []).append(row["vector"])
        return {d: np.asarray(v, dtype=np.float32) for d, v in rows.items()}

    def hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        return {d: h["hash"] for d, h in self._heads(doc_ids).items()}

    def _iterate(self, expr: str, fields: list[str]) -> Iterator[dict]:
        with self._reachable():  # a generator: its calls run as it is read, not when it is made
            with self._lock:
                # pymilvus (3.0) makes the iterator ask for the collection's description without a deadline: asking
                # with one first fails fast on a server that stopped answering (the iterator's pages have one)
                self.client.describe_collection(self.name, timeout=self.timeout)
                it = self.client.query_iterator(self.name, batch_size=1000, filter=expr, output_fields=fields,
                                                timeout=self.timeout)
            try:
                while True:
                    with self._lock:
                        batch = it.next()
                    if not batch:
                        return
                    yield from batch
            finally:
                with contextlib.suppress(Exception):  # closing an iterator of a server that went away
                    it.close()

    def iter_passages(self) -> Iterator[Passage]:
        # Milvus returns rows in no useful order; group them here (BM25 rebuilds need whole documents)
        rows = sorted(self._iterate("", _OUT), key=lambda r: (r["doc_id"], r["chunk"]))
        for row in rows:
            yield _passage(row)

    def matching(self, filter: Mapping[str, Any]) -> set[str]:
        norm = check_filter(filter)
        if not norm:
            raise InvalidInput("filter", "must name at least one metadata key")
        return {
            r["doc_id"] for r in self._iterate(f"chunk == 0 and {filter_expr(norm, self.partition_key)}", ["doc_id"])
        }

    def _count(self, expr: str) -> int:
        rows = self._query(expr, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def count(self) -> int:
        return self._count("chunk == 0")

    def count_passages(self) -> int:
        return self._count("")

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "index": self.index_type,
            "milvus_collection": self.name,
            "shards": self.shards,
            "partition_key": self.partition_key,
            "uri": self.where,  # a password in the URI hidden
            "documents": self.count(),
            "passages": self.count_passages(),
            "generation": self.generation(),
            "dim": self.dim,
        }

    @_reaching
    def drop(self) -> None:
        """Remove the Milvus collection (a cluster keeps it otherwise when the qrank folder is deleted),
        close the store and delete its local files (the generation counter, a Milvus Lite database)."""
        with self._lock:
            self.client.drop_collection(self.name, timeout=self.timeout)
            self.close()
            self._state.unlink(missing_ok=True)
            lite = self.dir / "milvus.db"
            if not self.settings.milvus_uri and lite.exists():
                shutil.rmtree(lite) if lite.is_dir() else lite.unlink()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.client.close()
