"""The evaluation's own cache of finished stage results (rankings, latencies, scores), as JSON files.

A key is :func:`qrank.cache.cache_key` (SHA-256 of the canonical JSON of everything that changes the result (data set
fingerprint, model id and revision, depths, settings), as hex), so a re-run recomputes only stages whose
inputs changed; a local model is named by its content fingerprint, not its path (:func:`qrank.types.model_key_name`).
Embeddings and reranker scores themselves live in qrank's shared cache (:mod:`qrank.cache`). Files are
written to a temporary name and renamed, so an interrupted run never leaves a half-written entry behind.

>>> import tempfile
>>> store = ResultStore(Path(tempfile.mkdtemp()))
>>> store.put({"stage": "x"}, {"value": 1})
>>> store.get({"stage": "x"})
{'value': 1}
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..cache import cache_key
from ..fileio import atomic_write_json

log = logging.getLogger(__name__)


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
        path = self._path(cache_key(key_obj).hex(), ".json")
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
        atomic_write_json(self._path(cache_key(key_obj).hex(), ".json"), value, make_parents=True)
