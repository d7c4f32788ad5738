"""The evaluation's own cache of finished stage results (rankings, latencies, scores), as JSON files.

A key is the SHA-256 of the canonical JSON of everything that changes the result (data set
fingerprint, model id and revision, depths, settings), so a re-run recomputes only stages whose
inputs changed. Embeddings and reranker scores themselves live in qrank's shared cache
(:mod:`qrank.cache`). Files are written to a temporary name and renamed, so an interrupted run never
leaves a half-written entry behind.

>>> store = ResultStore(Path(tempfile.mkdtemp()))
>>> store.put({"stage": "x"}, {"value": 1})
>>> store.get({"stage": "x"})
{'value': 1}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def cache_key(obj) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys, no spaces).

    >>> cache_key({"b": 1, "a": [1, 2]}) == cache_key({"a": [1, 2], "b": 1})
    True
    """
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ResultStore:
    """A folder of cached stage results; ``enabled=False`` turns every lookup into a miss."""

    def __init__(self, root: Path, *, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def _path(self, key: str, suffix: str) -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def get(self, key_obj) -> dict | None:
        path = self._path(cache_key(key_obj), ".json")
        if not self.enabled or not path.is_file():
            self.misses += 1
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key_obj, value: dict) -> None:
        if not self.enabled:
            return
        path = self._path(cache_key(key_obj), ".json")
        _atomic(path, lambda f: f.write(json.dumps(value, ensure_ascii=False).encode()))


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
