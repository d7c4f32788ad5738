"""BM25 over a collection's documents with ``bm25s``, saved next to the collection.

bm25s indexes are static, so the index is rebuilt from the store when the store's generation moved
(any add or delete), on the first hybrid search after the change. It is saved as
``bm25.<generation>/`` (bm25s's own .npy/.json files, written with ``allow_pickle=False``, plus
``ids.json``) through a temporary folder and a rename, so a crash never leaves a half-written index in use.

>>> import tempfile
>>> idx = BM25Index(Path(tempfile.mkdtemp()))
>>> idx.ensure(0, lambda: [("a", "cats purr softly"), ("b", "dogs bark loudly")])
>>> [doc_id for doc_id, _ in idx.search("cats", 1)]
['a']
>>> idx.ensure(1, lambda: [("c", "a"), ("d", "the")])  # no indexable word: nothing found, no error
>>> idx.search("the cats", 5)
[]
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..errors import require

log = logging.getLogger(__name__)


def _bm25s():
    module = require("bm25s", "index")
    # bm25s pins its own logger to DEBUG on import; hand the level back to the application's config
    lg = logging.getLogger("bm25s")
    if lg.level == logging.DEBUG:
        lg.setLevel(logging.NOTSET)
    return module


class BM25Index:
    """Whole-document BM25 (bm25s defaults: Lucene variant, k1=1.5, b=0.75; English stopwords)."""

    def __init__(self, directory: Path, stopwords: str | None = "en") -> None:
        self.dir = Path(directory)
        self.stopwords = stopwords
        self._lock = threading.Lock()
        self._gen: int | None = None
        self._retriever = None
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}

    def _tokenize(self, texts: list[str]):
        bm25s = _bm25s()
        return bm25s.tokenize(texts, stopwords=self.stopwords or [], show_progress=False)

    def ensure(self, generation: int, documents: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """Load the index saved for ``generation``, or build it from ``documents()`` (``(id, text)`` pairs)."""
        with self._lock:
            if self._gen == generation:
                return
            bm25s = _bm25s()
            path = self.dir / f"bm25.{generation}"
            retriever, ids = None, None
            if (path / "ids.json").is_file():
                try:
                    ids = json.loads((path / "ids.json").read_text(encoding="utf-8"))
                    # ids without bm25s's files: documents without a single indexable word (see _build)
                    indexed = ids and (path / "params.index.json").is_file()
                    retriever = bm25s.BM25.load(str(path), allow_pickle=False, show_progress=False) if indexed else None
                except (OSError, ValueError) as exc:
                    log.warning("BM25 index %s unreadable (%s); rebuilding", path, exc)
                    ids = None
            if ids is None:
                retriever, ids = self._build(documents)
                self._save(path, retriever, ids)
            self._retriever, self._ids, self._gen = retriever, ids, generation
            self._pos = {d: i for i, d in enumerate(ids)}

    def _build(self, documents: Callable[[], Iterable[tuple[str, str]]]):
        bm25s = _bm25s()
        ids, texts = [], []
        for doc_id, text in documents():
            ids.append(doc_id)
            texts.append(text)
        if not ids:
            return None, []
        tokenized = self._tokenize(texts)
        if not tokenized.vocab:  # only stopwords and one-letter words: nothing to match (bm25s would fail)
            log.info("BM25 index over %d documents has no indexable word; BM25 finds nothing", len(ids))
            return None, ids
        retriever = bm25s.BM25()
        retriever.index(tokenized, show_progress=False)
        log.info("built BM25 index over %d documents", len(ids))
        return retriever, ids

    def _save(self, path: Path, retriever, ids: list[str]) -> None:
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if retriever is not None:
            retriever.save(str(tmp), allow_pickle=False, show_progress=False)
        (tmp / "ids.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
        if path.exists():  # same generation written by another process meanwhile: equal content
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, path)
        for old in self.dir.glob("bm25.*"):
            if old != path and old.is_dir() and ".tmp-" not in old.name:
                shutil.rmtree(old, ignore_errors=True)

    def search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """Documents containing a query term, best first: ``(id, score)``; ``allowed`` restricts the ids."""
        with self._lock:
            retriever, ids, pos = self._retriever, self._ids, self._pos
        if retriever is None or k < 1:
            return []
        tokens = _bm25s().tokenize([query], stopwords=self.stopwords or [], return_ids=False, show_progress=False)[0]
        tokens = [t for t in tokens if t in retriever.vocab_dict]
        if not tokens:
            return []
        scores = np.asarray(retriever.get_scores(tokens), dtype=np.float32)
        if allowed is not None:
            mask = np.zeros(len(ids), dtype=bool)
            mask[[pos[d] for d in allowed if d in pos]] = True
            scores = np.where(mask, scores, 0.0)
        k = min(k, int((scores > 0).sum()))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]
        return [(ids[i], float(scores[i])) for i in top]
