"""Persistent, bounded caches of embeddings and reranker scores (one SQLite file, LRU eviction).

Keys are SHA-256 digests of a canonical JSON of everything that changes the answer:
embeddings ``(model id, revision, dims, instruction, is_query, text)``, scores ``(model id, revision,
instruction, query, document)``. Values are raw little-endian floats (never pickles). Each entry also
carries a *tag*, the digest of the text it belongs to, so that deleting a document can forget its
embeddings and every score computed for it.

The cache layers (:class:`CachedScorer`, :class:`CachedEmbeddingModel`) are models wrapping a model;
:class:`CachedReranker` / :class:`CachedEmbedder` are the facades over them:

>>> import tempfile
>>> cache = Cache(Path(tempfile.mkdtemp()) / "cache.sqlite", max_bytes=10_000_000)
>>> em = CachedEmbedder(Embedder.from_pretrained("../shared/models/all-MiniLM-L6-v2"), cache)
>>> em.embed(["a", "b"]).shape, em.embed(["a", "b"]).shape, cache.stats()["hits"]["embedding"], em.embedded
((2, 384), (2, 384), 2, 2)
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .embedder import Embedder, query_keyword
from .models.base import CountingEmbeddingModel, CountingScorer, Layer, check_finite, check_scores, check_vectors
from .reranker import Reranker
from .settings import Settings
from .types import ModelInfo, model_key_name

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    tag BLOB,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_used ON entries (used);
CREATE INDEX IF NOT EXISTS entries_tag ON entries (tag);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL,
                                   entries INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS entries_ins AFTER INSERT ON entries
    BEGIN UPDATE totals SET bytes = bytes + NEW.size, entries = entries + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS entries_del AFTER DELETE ON entries
    BEGIN UPDATE totals SET bytes = bytes - OLD.size, entries = entries - 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS entries_upd AFTER UPDATE OF size ON entries
    BEGIN UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0; END;
"""
_IN_CHUNK = 500  # keys per "IN (...)" lookup: far below SQLite's bound-parameter limit (999 in old builds)
_OVERHEAD = 64  # rough per-row bytes beyond key and value, so that the limit tracks the file size
KINDS = ("embedding", "score")


_FIELDS: Any = object()  # "no positional object given": the keyword fields are the object


def cache_key(obj: Any = _FIELDS, /, **fields: Any) -> bytes:
    """SHA-256 of the canonical JSON of ``obj``, or of the keyword ``fields`` as one dict (the one key of qrank).

    Canonical = sorted keys, no spaces, UTF-8; values JSON cannot hold are written as ``str(value)``. The
    model cache keys its rows with the digest, the evaluation's result store names its files with ``.hex()``.

    >>> cache_key(a=1, b="x") == cache_key(b="x", a=1) == cache_key({"b": "x", "a": 1})
    True
    >>> cache_key([1, 2]).hex()[:12]
    '49a64717d5d4'
    """
    if obj is _FIELDS:
        obj = fields
    elif fields:
        raise TypeError("cache_key takes one object or keyword fields, not both")
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).digest()


def text_tag(text: str) -> bytes:
    """The tag of every entry computed from ``text`` (see :meth:`Cache.forget`)."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


def quantization_fields(q: str | dict | None) -> dict:
    """The cache-key fields of a quantization (a setting's name, or ``ModelInfo.extra["quantization"]``): none for
    float answers (so old keys stay valid), the method otherwise, for int8 the recipe's version (a changed recipe
    never reads the older one's answers), and for FP8 whatever changes its scores (fast accumulation, FP8
    attention, a pre-quantized checkpoint's source) but never the gate's numbers, which differ between machines.

    >>> quantization_fields("none"), quantization_fields("fp8")
    ({}, {'quantization': 'fp8'})
    >>> quantization_fields({"method": "fp8", "accumulation": "fast", "attention": "bfloat16", "tau_mean": 0.98})
    {'quantization': 'fp8', 'accumulation': 'fast'}
    >>> quantization_fields({"method": "fp8", "attention": "q, k e4m3 (static bound of their norms); p, v bfloat16"})
    {'quantization': 'fp8', 'attention': 'qk'}
    """
    entry = q if isinstance(q, dict) else {"method": q}
    method = entry.get("method")
    if method == "int8":
        from .models.hf_encoder import INT8_RECIPE

        return {"quantization": method, "recipe": INT8_RECIPE}
    if method in (None, "none"):
        return {}
    out = {"quantization": method}
    if entry.get("accumulation") == "fast":
        out["accumulation"] = "fast"
    attention = entry.get("attention")
    if attention not in (None, "", "bfloat16"):  # the gate's words ('q, k e4m3 (...)') or the setting's form
        out["attention"] = "qk" if attention in ("qk", True) or attention.startswith("q, k") else "all"
    if entry.get("source"):
        out["source"] = entry["source"]
    return out


def _quantized(info: ModelInfo) -> dict:
    return quantization_fields((info.extra or {}).get("quantization"))


def _deterministic(info: ModelInfo) -> dict:
    # deterministic mode's answers are one rounding among those batched runs give: their own keys, so a cached
    # batched score never answers a deterministic request (no key added otherwise: old keys stay valid)
    return {"deterministic": True} if (info.extra or {}).get("deterministic") else {}


def _model(info: ModelInfo) -> str:
    return model_key_name(info.id, info.revision)


def embedding_key(info: ModelInfo, dim: int | None, instruction: str | None, is_query: bool, text: str) -> bytes:
    return cache_key(kind="embedding", model=_model(info), revision=info.revision, dim=dim, instruction=instruction,
                     is_query=bool(is_query), text=text, **_quantized(info), **_deterministic(info))


def _calibrated(info: ModelInfo) -> dict:
    # calibrated scores are keyed by their map: never mixed with raw ones, and a refitted map starts afresh
    cal = (info.extra or {}).get("calibration")
    return {"calibration": cal.get("digest")} if isinstance(cal, dict) else {}


def score_key(info: ModelInfo, instruction: str | None, query: str, document: str) -> bytes:
    # the window is part of a score: a pair longer than max_length is cut there (truncate), and a chunk made for
    # one window would be cut by a smaller one; the policy itself needs no key, since a chunk is keyed by its text
    # and an aggregate is never cached under a document's key (eval.stages._plain_policy)
    return cache_key(kind="score", model=_model(info), revision=info.revision, instruction=instruction, query=query,
                     document=document, max_length=info.max_length, **_quantized(info), **_calibrated(info),
                     **_deterministic(info))


class Cache:
    """A byte-bounded LRU map ``key -> bytes`` in SQLite, shared by threads and processes.

    ``stats()`` reports this process's hits and misses per kind plus the stored entries and bytes.
    """

    def __init__(self, path: Path | str, max_bytes: int) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a lost cache entry costs a recomputation, nothing more
        self._db.executescript(_SCHEMA)
        self.hits = dict.fromkeys(KINDS, 0)
        self.misses = dict.fromkeys(KINDS, 0)
        self.evictions = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Cache | None:
        """The cache ``settings.cache`` describes, or None when caching is off.

        >>> Cache.from_settings(Settings(cache={"enabled": False})) is None
        True
        """
        if not settings.cache.enabled:
            return None
        return cls(settings.cache.path or settings.home / "cache" / "cache.sqlite", settings.cache.max_bytes)

    def get_many(self, kind: str, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """Stored values of the keys present (marking them recently used); counts hits and misses."""
        keys = list(dict.fromkeys(keys))
        found: dict[bytes, bytes] = {}
        with self._lock:
            for i in range(0, len(keys), _IN_CHUNK):
                part = keys[i : i + _IN_CHUNK]
                marks = ",".join("?" * len(part))
                found.update(
                    self._db.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", part).fetchall()
                )
            if found:
                now = time.time_ns()
                hit = list(found)
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for i in range(0, len(hit), _IN_CHUNK):
                        part = hit[i : i + _IN_CHUNK]
                        self._db.execute(
                            f"UPDATE entries SET used = ? WHERE key IN ({','.join('?' * len(part))})", [now, *part]
                        )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            self.hits[kind] = self.hits.get(kind, 0) + len(found)
            self.misses[kind] = self.misses.get(kind, 0) + len(keys) - len(found)
        return found

    def put_many(self, kind: str, items: Iterable[tuple[bytes, bytes | None, bytes]]) -> None:
        """Store ``(key, tag, value)`` entries, then evict least recently used ones above ``max_bytes``."""
        rows = [(k, kind, tag, value, len(k) + len(value) + _OVERHEAD, time.time_ns()) for k, tag, value in items]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO entries (key, kind, tag, value, size, used) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET tag = excluded.tag, value = excluded.value, size = "
                    "excluded.size, used = excluded.used",
                    rows,
                )
                self._evict()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _evict(self) -> None:
        total = self._db.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0]
        if total <= self.max_bytes:
            return
        target = int(self.max_bytes * 0.9)  # evict a little extra so that the next put does not evict again
        while total > target:
            victims = self._db.execute("SELECT key, size FROM entries ORDER BY used LIMIT 512").fetchall()
            if not victims:
                break
            chosen, freed = [], 0
            for key, size in victims:
                chosen.append(key)
                freed += size
                if total - freed <= target:
                    break
            for i in range(0, len(chosen), _IN_CHUNK):
                part = chosen[i : i + _IN_CHUNK]
                self._db.execute(f"DELETE FROM entries WHERE key IN ({','.join('?' * len(part))})", part)
            self.evictions += len(chosen)
            total -= freed

    def forget(self, texts: Iterable[str]) -> int:
        """Drop every entry computed from these texts (their embeddings, and scores with them as document)."""
        tags = list({text_tag(t) for t in texts})
        removed = 0
        with self._lock:
            for i in range(0, len(tags), _IN_CHUNK):
                part = tags[i : i + _IN_CHUNK]
                removed += self._db.execute(
                    f"DELETE FROM entries WHERE tag IN ({','.join('?' * len(part))})", part
                ).rowcount
        return removed

    def contains(self, kind: str, key: bytes) -> bool:
        """Whether ``key`` is stored (does not count as a hit or touch recency)."""
        with self._lock:
            return (
                self._db.execute("SELECT 1 FROM entries WHERE key = ? AND kind = ?", (key, kind)).fetchone() is not None
            )

    def stats(self) -> dict[str, Any]:
        """``{"hits": {kind: n}, "misses": {...}, "evictions", "entries", "bytes", "max_bytes", "path"}``."""
        with self._lock:
            total, entries = self._db.execute("SELECT bytes, entries FROM totals WHERE id = 0").fetchone()
            return {"hits": dict(self.hits), "misses": dict(self.misses), "evictions": self.evictions,
                    "entries": int(entries), "bytes": int(total), "max_bytes": self.max_bytes, "path": str(self.path)}

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM entries")

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- the cache layers ------------------------------------------------------------------------------
class CachedEmbeddingModel(Layer):
    """An :class:`~qrank.models.base.EmbeddingModel` that asks ``inner`` only for texts ``cache`` lacks.

    Keys hold the effective instruction (a query's default instruction when none is given), so an
    explicit default and an omitted one share entries.
    """

    def __init__(self, inner, cache: Cache | None) -> None:
        super().__init__(inner)
        self.cache = cache

    def embed_batch(self, texts, *, is_query: bool = False, instruction: str | None = None, dim: int | None = None):
        texts = list(texts)
        if self.cache is None or not texts:
            return self.inner.embed_batch(texts, is_query=is_query, instruction=instruction, dim=dim)
        info = self.info
        eff_instruction = instruction if instruction is not None else (info.default_instruction if is_query else None)
        keys = [embedding_key(info, dim or info.dim, eff_instruction, is_query, t) for t in texts]
        found = self.cache.get_many("embedding", keys)
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        fresh: dict[str, np.ndarray] = {}
        if missing:
            raw = self.inner.embed_batch(missing, is_query=is_query, instruction=instruction, dim=dim)
            # only finite answers are stored: a NaN must fail every time, not once
            fresh = dict(zip(missing, check_finite(check_vectors(raw, len(missing)))))
            self.cache.put_many("embedding", [(embedding_key(info, dim or info.dim, eff_instruction, is_query, t),
                                               text_tag(t), v.astype("<f4").tobytes()) for t, v in fresh.items()])
        rows = [fresh[t] if t in fresh else np.frombuffer(found[k], dtype="<f4") for t, k in zip(texts, keys)]
        return np.stack(rows).astype(np.float32)


class CachedScorer(Layer):
    """A :class:`~qrank.models.base.ScoringModel` that asks ``inner`` only for pairs ``cache`` lacks.

    Keys hold the effective instruction (the model's default when none is given).
    """

    def __init__(self, inner, cache: Cache | None) -> None:
        super().__init__(inner)
        self.cache = cache

    def score_pairs(self, pairs, *, instruction: str | None = None) -> np.ndarray:
        pairs = [(q, d) for q, d in pairs]
        if self.cache is None or not pairs:
            return self.inner.score_pairs(pairs, instruction=instruction)
        eff = instruction or self.info.default_instruction
        keys = [score_key(self.info, eff, q, d) for q, d in pairs]
        found = self.cache.get_many("score", keys)
        missing = list(dict.fromkeys((q, d) for (q, d), k in zip(pairs, keys) if k not in found))
        fresh: dict[tuple[str, str], float] = {}
        if missing:
            raw = self.inner.score_pairs(missing, instruction=instruction)
            fresh = dict(zip(missing, check_finite(check_scores(raw, len(missing))).tolist()))
            rows = [(score_key(self.info, eff, q, d), text_tag(d), np.float32(s).astype("<f4").tobytes())
                    for (q, d), s in fresh.items()]
            self.cache.put_many("score", rows)
        out = [fresh[p] if p in fresh else np.frombuffer(found[k], dtype="<f4")[0] for p, k in zip(pairs, keys)]
        return np.array(out, dtype=np.float32)


# --- the facades over them ------------------------------------------------------------------------
def _stack(wrapped, facade_cls, counting_cls, cached_cls, cache: Cache | None):
    """The wrapped facade (a bare model is welcome), a counting layer over its model, the cache layer on top."""
    wrapped = wrapped if isinstance(wrapped, facade_cls) else facade_cls(wrapped)
    counting = counting_cls(wrapped.model)
    return wrapped, counting, cached_cls(counting, cache)


class CachedEmbedder(Embedder):
    """An :class:`~qrank.embedder.Embedder` whose work goes through a :class:`Cache`:
    ``Embedder(CachedEmbeddingModel(CountingEmbeddingModel(embedder.model)))``.

    ``embedder`` is the facade it wraps; ``embedded`` counts texts actually sent to the model.
    """

    def __init__(self, embedder: Embedder, cache: Cache | None) -> None:
        self.embedder, self._counting, layer = _stack(embedder, Embedder, CountingEmbeddingModel,
                                                      CachedEmbeddingModel, cache)
        self.cache = cache
        super().__init__(layer)
        self._local_dim_bound = self.embedder._local_dim_bound

    @property
    def embedded(self) -> int:
        return self._counting.count

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.embedder!r})"


class CachedReranker(Reranker):
    """A :class:`~qrank.reranker.Reranker` whose scores go through a :class:`Cache`:
    ``Reranker(CachedScorer(CountingScorer(reranker.model)))`` with the reranker's instruction.

    ``reranker`` is the facade it wraps; ``scored`` counts pairs actually sent to the model.
    """

    def __init__(self, reranker: Reranker, cache: Cache | None) -> None:
        if not isinstance(reranker, Reranker) and callable(getattr(reranker, "rerank", None)):
            # something that ranks but is no Reranker (a proxy) would be taken for a bare model: its long-document
            # policy would then run under the cache, which keys by the whole document's text
            raise TypeError(f"CachedReranker wraps a Reranker or a bare scoring model, not {type(reranker).__name__}")
        self.reranker, self._counting, layer = _stack(reranker, Reranker, CountingScorer, CachedScorer, cache)
        self.cache = cache
        super().__init__(layer, instruction=self.reranker.instruction, long_documents=self.reranker.long_documents)

    @property
    def scored(self) -> int:
        return self._counting.count

    def __repr__(self) -> str:
        return f"CachedReranker({self.reranker!r})"


def cached_embed(embedder: Embedder, texts: Sequence[str], cache: Cache | None, *, is_query: bool = False,
                 instruction: str | None = None, dim: int | None = None) -> np.ndarray:
    """``embedder.embed(texts, ...)`` as an ``(n, dim)`` matrix, computing only what ``cache`` lacks.

    >>> import tempfile
    >>> cache = Cache(Path(tempfile.mkdtemp()) / "cache.sqlite", max_bytes=10_000_000)
    >>> em = Embedder.from_pretrained("../shared/models/all-MiniLM-L6-v2")
    >>> cached_embed(em, ["a", "b"], cache).shape
    (2, 384)
    """
    # ``instruction`` is the backend's (one meaning per model): hand it to the facade under the model's role name
    role = {query_keyword(embedder.info): instruction} if instruction is not None else {}
    return CachedEmbedder(embedder, cache).embed(list(texts), is_query=is_query, dim=dim, **role)


def cached_scores(reranker: Reranker, pairs: Sequence[tuple[str, str]], cache: Cache | None, *,
                  instruction: str | None = None) -> np.ndarray:
    """Scores of ``(query, document)`` pairs in order, asking the reranker only for uncached pairs.

    >>> import tempfile
    >>> cache = Cache(Path(tempfile.mkdtemp()) / "cache.sqlite", max_bytes=10_000_000)
    >>> rr = Reranker.from_pretrained("../shared/models/scifact-minilm-ce")
    >>> pairs = [("what is bm25?", "Cats purr."), ("what is bm25?", "BM25 ranks documents.")]
    >>> bool((cached_scores(rr, pairs, cache) == cached_scores(rr, pairs, cache)).all()), cache.stats()["hits"]["score"]
    (True, 2)
    """
    return CachedReranker(reranker, cache).score_pairs(list(pairs), instruction=instruction)
