"""Move a collection to another vector store (FAISS + SQLite <-> Milvus Lite or a Milvus cluster).

Passages and their vectors are copied as stored: nothing is re-embedded, so the collection keeps its
embedder, chunking and ids, and searches give the same results (exactly so between exact indexes).

The copy is safe to interrupt: the source stays the collection's store until the target holds every
document (counted on both sides); only then is the manifest switched, in one atomic rename. A re-run
after an interruption skips documents the target already holds in the same version, and removes
documents the source no longer has.

Usage (needs a collection and Milvus; tested in tests/integration/test_index_migrate.py):
``migrate_collection(Settings(index={"milvus_uri": "http://milvus:19530"}), "docs", "milvus")``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InvalidInput, QrankError
from ..settings import Settings
from .collection import Collection, Manifest, store_location, store_settings
from .store import Passage, by_document, open_store

log = logging.getLogger(__name__)

BACKENDS = ("faiss", "milvus")


def _location(manifest: Manifest) -> tuple[str, Any]:
    return manifest.backend, manifest.store.get("uri") if manifest.backend == "milvus" else None


def migrate_collection(settings: Settings, name: str, backend: str, *, keep_source: bool = False,
                       batch_docs: int = 512, progress: bool = True) -> dict[str, Any]:
    """Copy collection ``name`` into the ``backend`` store that ``settings.index`` describes (for Milvus:
    ``milvus_uri``/``milvus_db``/``milvus_token``, ``milvus_index``, ``milvus_shards``,
    ``milvus_partition_key``), switch the collection to it, then delete the old store unless
    ``keep_source``. Returns a report: documents and passages copied or skipped, source and target.

    With ``Settings()`` the target is a Milvus Lite file in the collection's folder.
    """
    if backend not in BACKENDS:
        raise InvalidInput("to", f"unknown vector store {backend!r} (expected one of {', '.join(BACKENDS)})")
    if batch_docs < 1:
        raise InvalidInput("batch_docs", "must be at least 1")
    src = Collection.open(settings, name)
    target_manifest = replace(src.manifest, backend=backend, store=store_location(backend, settings.index))
    if _location(target_manifest) == _location(src.manifest):
        src.close()
        where = f" at {target_manifest.store.get('uri') or 'Milvus Lite'}" if backend == "milvus" else ""
        raise InvalidInput("to", f"collection {name!r} already lives in {backend}{where}")
    target = open_store(
        src.path, src.manifest.name, src.manifest.dim, backend, store_settings(target_manifest, settings)
    )
    report = {"collection": name, "from": src.manifest.backend, "to": backend, "documents": 0, "passages": 0,
              "skipped": 0, "removed": 0}
    try:
        resumed = target.count() > 0  # only an earlier, interrupted run leaves documents behind
        total = src.store.count()
        bar = tqdm(total=total, unit="doc", desc=f"migrating {name} to {backend}", disable=not progress)
        seen: set[str] = set()
        batch: list[list[Passage]] = []

        def flush() -> None:
            ids = [ps[0].doc_id for ps in batch]
            have = target.hashes(ids)
            todo = [ps for ps in batch if have.get(ps[0].doc_id) != ps[0].hash or not ps[0].hash]
            report["skipped"] += len(batch) - len(todo)
            if todo:
                vectors = src.store.vectors([ps[0].doc_id for ps in todo])
                passages = [p for ps in todo for p in ps]
                target.add(passages, np.concatenate([vectors[ps[0].doc_id] for ps in todo]))
                report["documents"] += len(todo)
                report["passages"] += len(passages)
            bar.update(len(batch))
            batch.clear()

        with bar:
            for passages in by_document(src.store.iter_passages()):
                seen.add(passages[0].doc_id)
                batch.append(passages)
                if len(batch) >= batch_docs:
                    flush()
            if batch:
                flush()
        if resumed:  # copies of documents deleted from the source since that run
            stale = sorted({p.doc_id for p in target.iter_passages()} - seen)
            if stale:
                report["removed"] = target.delete(stale)
        target.persist(force=True)
        counts = (target.count(), target.count_passages()), (src.store.count(), src.store.count_passages())
        if counts[0] != counts[1]:
            raise QrankError(
                f"migration of {name!r} incomplete: the target holds {counts[0]} documents/passages, "
                f"the source {counts[1]}; the collection still uses {src.manifest.backend} (re-run to retry)"
            )
        report["target"] = target.stats()
        target_manifest.save(src.path)  # the switch: atomic, and the last step that matters
        log.info("collection %s now uses %s (%d documents copied, %d already there)", name, backend,
                 report["documents"], report["skipped"])
    except BaseException:
        target.close()
        src.close()
        raise
    target.close()
    # derived from the old store's generation counter; rebuilt from the new store on the next hybrid search
    for old in src.path.glob("bm25.*"):
        shutil.rmtree(old, ignore_errors=True)
    if keep_source:
        src.close()
    else:
        src.store.drop()
    report["source_kept"] = keep_source
    return report
