"""``qrank index check``: is a collection readable, and what is wrong with it if not.

Checks the manifest, the store (SQLite's own ``quick_check`` for FAISS collections) and every row's
metadata (JSON that SQLite can filter on: NaN and infinity written by older versions are not).
``repair=True`` fixes what can be fixed in place: unreadable metadata is rewritten (non-finite numbers
become ``null``; unparseable text becomes ``{}``) and the FAISS files are removed so the index is rebuilt
from SQLite; a healthy collection keeps its index and loses only leftover FAISS files no search reads (older
than the journal, or temporary files of a writer that died). A store that is not a database cannot be
repaired: drop the collection and add it again.

>>> import tempfile
>>> from qrank.index.collection import Collection, Manifest
>>> settings = Settings(home=tempfile.mkdtemp())
>>> Collection.create(settings, Manifest("docs", "faiss", 4, {"name": "e"}, 256, 32)).close()
>>> report = check_collection(settings, "docs")
>>> report["ok"], report["problems"]
(True, [])
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import CollectionNotFound
from ..settings import Settings
from .collection import MANIFEST, Collection, Manifest, collection_dir
from .sqlite_passages import read_meta
from .store import CorruptStore

log = logging.getLogger(__name__)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None.

    >>> _finite({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _repaired_metadata(raw: str) -> str:
    try:
        value = json.loads(raw)  # Python reads NaN/Infinity; SQLite does not
    except (TypeError, ValueError):
        value = {}
    if not isinstance(value, dict):
        value = {}
    return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False)


def _check_faiss(path, repair: bool) -> tuple[list[str], list[str]]:
    """(problems, repairs) of a FAISS collection's ``store.sqlite``."""
    db_file = path / "store.sqlite"
    db = sqlite3.connect(db_file, timeout=60, isolation_level=None)
    problems, repairs = [], []
    try:
        result = [r[0] for r in db.execute("PRAGMA quick_check")]
        if result != ["ok"]:
            problems.append(f"{db_file.name}: " + "; ".join(result[:5]))
            return problems, repairs  # rows of a damaged file are not worth rewriting
        bad = [(pid, doc_id, meta) for pid, doc_id, meta in
               db.execute("SELECT pid, doc_id, metadata FROM passages WHERE NOT json_valid(metadata)")]
        if bad:
            ids = sorted({d for _, d, _ in bad})
            problems.append(f"{len(bad)} passages of {len(ids)} documents have metadata that is not JSON "
                            f"(e.g. NaN or Infinity): {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}")
            if repair:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("UPDATE passages SET metadata = ? WHERE pid = ?",
                               [(_repaired_metadata(meta), pid) for pid, _, meta in bad])
                db.execute("COMMIT")
                repairs.append(f"rewrote the metadata of {len(bad)} passages (non-finite numbers became null)")
        base = int(read_meta(db, "journal_base") or 0)
    finally:
        db.close()
    if repair and repairs:
        # the store was rewritten: its derived index goes too, rebuilt from SQLite on the next search
        removed = list(path.glob("faiss.*.index*"))
        for f in removed:
            f.unlink(missing_ok=True)
        if removed:
            repairs.append(f"removed {len(removed)} FAISS files (rebuilt from SQLite on the next search)")
    elif repair:
        # a healthy store keeps its index; only files no reader opens again go (an index older than the
        # journal, a temporary file left by a writer that died)
        leftovers = [f for f in sorted(path.glob("faiss.*.index*")) if _is_leftover(f, base)]
        for f in leftovers:
            f.unlink(missing_ok=True)
        if leftovers:
            repairs.append(f"removed {len(leftovers)} leftover FAISS files no search reads "
                           f"({', '.join(f.name for f in leftovers)})")
    return problems, repairs


def _is_leftover(f: Path, base: int) -> bool:
    """A FAISS file that no reader loads: older than the journal (generation below ``base``; a newer one may be
    being written right now), or a temporary file whose writer is gone.

    >>> [_is_leftover(Path(n), 2) for n in ("faiss.3.index", "faiss.1.index", "faiss.6.index.tmp-999999999")]
    [False, True, True]
    """
    from .faiss_store import _written_by_live_process

    if ".tmp-" in f.name:
        return not _written_by_live_process(f)
    parts = f.name.split(".")
    if len(parts) != 3 or parts[2] != "index" or not parts[1].isdigit():
        return False  # not a name qrank writes: not ours to delete
    return int(parts[1]) < base


def check_collection(settings: Settings, name: str, *, repair: bool = False) -> dict[str, Any]:
    """What is wrong with collection ``name`` (``ok``, ``problems``, ``repairs``, ``documents``)."""
    path = collection_dir(settings, name)
    if not (path / MANIFEST).is_file():
        Collection.open(settings, name)  # CollectionNotFound, naming the known collections
    report: dict[str, Any] = {"name": name, "path": str(path), "problems": [], "repairs": [], "documents": None}
    try:
        manifest = Manifest.load(path)
    except CollectionNotFound as exc:
        report["problems"].append(exc.message)
        report["ok"] = False
        return report
    try:
        col = Collection.open(settings, name)
    except CorruptStore as exc:
        report["problems"].append(exc.reason + " (cannot be repaired: drop the collection and add it again)")
        report["ok"] = False
        return report
    try:
        report["documents"] = col.store.count()
    except sqlite3.DatabaseError as exc:  # a readable header over damaged pages
        report["problems"].append(f"store.sqlite is damaged ({exc})")
    finally:
        col.close()
    if manifest.backend == "faiss":
        problems, repairs = _check_faiss(path, repair)
        report["problems"] += problems
        report["repairs"] += repairs
        if repair and repairs:
            problems, _ = _check_faiss(path, False)  # what is left after the repair
    # a store whose documents cannot be counted is not ok, whatever SQLite's own check says
    report["ok"] = (not problems if manifest.backend == "faiss" else True) and report["documents"] is not None
    return report
