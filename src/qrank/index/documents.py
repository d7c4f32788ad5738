"""Documents going into a collection: validation, version hashes, and readers for txt/md/jsonl/csv files.

JSONL lines are ``{"id", "text", "title"?, "metadata"?}``; BEIR's ``corpus.jsonl`` spells the id ``_id``
and both are accepted. CSV files need a header with ``text`` (and ``id``/``_id``, optional ``title``); other
columns become metadata. A ``.txt``/``.md`` file is one document whose id is its path relative to the
folder given (or its name when the file itself was given).

>>> docs = to_documents(["first", {"id": "b", "text": "second", "title": "B"}], ids=None)
>>> [(d.id, d.title) for d in docs][1]
('b', 'B')
>>> indexed_text(docs[1])
'B second'
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md", ".jsonl", ".csv")
MAX_ID_CHARS = 512  # ids are keys, not content; also the Milvus doc_id VARCHAR's length (there in bytes)


@dataclass(frozen=True)
class Document:
    """A document as the caller gave it."""

    id: str
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def canonical_json(obj: Any) -> str:
    """The one JSON spelling of ``obj`` that hashes are taken over (sorted keys, no spaces).

    NaN and infinity are refused (``ValueError``): they are not JSON, and SQLite's JSON functions fail on
    every row of a filtered search once one of them is stored.

    >>> canonical_json({"b": 1, "a": [True, None]})
    '{"a":[true,null],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def nonfinite_path(value: Any, where: str) -> str | None:
    """The first place in a JSON-like value holding NaN or infinity (``where.key[2]``), else None.

    >>> nonfinite_path({"a": [1, {"b": float("inf")}]}, "metadata")
    'metadata.a[1].b'
    >>> nonfinite_path({"a": 1.5}, "metadata") is None
    True
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, Mapping):
        items = ((f"{where}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, v in items:
        found = nonfinite_path(v, path)
        if found is not None:
            return found
    return None


def indexed_text(doc: Document) -> str:
    """What is chunked, embedded and BM25-indexed: ``title + " " + text`` (BEIR convention) or the text."""
    return f"{doc.title} {doc.text}" if doc.title else doc.text


def strip_title(text: str, title: str | None) -> str:
    """Undo :func:`indexed_text` for display."""
    if title and text.startswith(title + " "):
        return text[len(title) + 1 :]
    return text


def doc_hash(doc: Document, chunking: Sequence[int]) -> str:
    """Fingerprint of a document version and the chunking it was cut with; equal hash = nothing to do."""
    payload = {"text": doc.text, "title": doc.title, "metadata": doc.metadata, "chunking": list(chunking)}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def check_ids(ids: Any, field_name: str = "ids") -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InvalidInput(field_name, f"must be a list of strings, got {type(ids).__name__}")
    out = []
    for i, x in enumerate(ids):
        if isinstance(x, bool) or not isinstance(x, (str, int)):
            raise InvalidInput(f"{field_name}[{i}]", f"must be a string, got {type(x).__name__}")
        x = str(x)
        if not x.strip() or len(x) > MAX_ID_CHARS:
            raise InvalidInput(f"{field_name}[{i}]", f"must be 1-{MAX_ID_CHARS} characters and not blank")
        out.append(x)
    return out


def check_metadata(value: Any, field_name: str) -> dict:
    """A document's metadata as stored: a JSON object (a copy), with only finite numbers.

    >>> check_metadata({"year": 2020}, "metadata")
    {'year': 2020}
    >>> check_metadata({"x": [float("nan")]}, "metadata")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: metadata.x[0]: must be a finite number (NaN and infinity are not JSON)
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(field_name, f"must be an object, got {type(value).__name__}")
    bad = nonfinite_path(value, field_name)
    if bad is not None:
        raise InvalidInput(bad, "must be a finite number (NaN and infinity are not JSON)")
    try:
        return json.loads(canonical_json(dict(value)))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(field_name, f"must be JSON-serialisable ({exc})") from exc


def to_documents(
    documents: Iterable[str | Mapping | Document],
    *,
    ids: Sequence[str] | None = None,
    metadata: Sequence[Mapping | None] | None = None,
) -> list[Document]:
    """Validate what :meth:`Pipeline.add` was given. Strings get ``ids[i]`` or, without ids, a content
    hash (so re-adding the same text is a no-op); a later duplicate id replaces an earlier one."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Iterable):
        raise InvalidInput("documents", "must be a list of strings, {'id','text',...} objects or Documents")
    items = list(documents)
    if ids is not None:
        ids = check_ids(ids)
        if len(ids) != len(items):
            raise InvalidInput("ids", f"has {len(ids)} entries for {len(items)} documents")
    if metadata is not None and (isinstance(metadata, (str, Mapping)) or len(metadata) != len(items)):
        raise InvalidInput("metadata", f"must be a list with one object per document ({len(items)})")
    out: dict[str, Document] = {}
    for i, item in enumerate(items):
        where = f"documents[{i}]"
        if isinstance(item, Document):
            doc = Document(item.id, item.text, item.title, check_metadata(item.metadata, f"{where}.metadata"))
        elif isinstance(item, str):
            # a content id: 24 hex digits = 96 bits, no collision in practice
            doc_id = ids[i] if ids is not None else "sha256:" + hashlib.sha256(item.encode("utf-8")).hexdigest()[:24]
            doc = Document(doc_id, item)
        elif isinstance(item, Mapping):
            raw_id = item.get("id", item.get("_id")) if ids is None else ids[i]
            if raw_id is None:
                raise InvalidInput(f"{where}.id", "is missing (give 'id' or '_id', or pass ids=)")
            title = item.get("title")
            if title is not None and not isinstance(title, str):
                raise InvalidInput(f"{where}.title", "must be a string")
            doc = Document(check_ids([raw_id], f"{where}.id")[0], item.get("text"), title or None,
                           check_metadata(item.get("metadata"), f"{where}.metadata"))
        else:
            raise InvalidInput(where, f"must be a string or an object, got {type(item).__name__}")
        if ids is not None and not isinstance(item, Mapping):
            doc = Document(ids[i], doc.text, doc.title, doc.metadata)
        if metadata is not None and metadata[i] is not None:
            doc = Document(
                doc.id, doc.text, doc.title, {**doc.metadata, **check_metadata(metadata[i], f"metadata[{i}]")}
            )
        if not isinstance(doc.text, str) or not doc.text.strip():
            raise InvalidInput(f"{where}.text", "must be a non-empty string")
        out.pop(doc.id, None)
        out[doc.id] = doc
    return list(out.values())


# --- files -----------------------------------------------------------------------------------------
def iter_files(paths: Sequence[str | Path]) -> Iterator[tuple[Path, Path]]:
    """``(file, root)`` for every supported file under the given files and folders, sorted."""
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES):
                yield f, path
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise InvalidInput("paths", f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")
            yield path, path.parent
        else:
            raise InvalidInput("paths", f"{path}: no such file or folder")


def read_file(path: Path, root: Path) -> Iterator[Document]:
    """The documents of one file (see the module docstring for the formats)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        raise InvalidInput("documents", f"{path}:{n}: not valid JSON ({exc.msg})") from exc
                    if not isinstance(obj, dict):
                        raise InvalidInput("documents", f"{path}:{n}: expected an object")
                    yield _from_record(obj, f"{path}:{n}")
        elif suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or "text" not in reader.fieldnames:
                    raise InvalidInput("documents", f"{path}: a CSV needs a header row with a 'text' column")
                for n, rec in enumerate(reader, 2):
                    meta = {k: v for k, v in rec.items() if k not in ("id", "_id", "text", "title") and k is not None}
                    yield _from_record(
                        {**{k: rec.get(k) for k in ("id", "_id", "text", "title")}, "metadata": meta}, f"{path}:{n}"
                    )
        else:
            text = path.read_text(encoding="utf-8")
            if text.strip():
                yield Document(path.relative_to(root).as_posix(), text.strip(), None, {"source": str(path)})
            else:
                log.warning("%s is empty; skipped", path)
    except UnicodeDecodeError as exc:
        raise InvalidInput("documents", f"{path}: not UTF-8 text") from exc
    except OSError as exc:
        raise InvalidInput("documents", f"{path}: cannot read ({exc.strerror})") from exc


def _from_record(obj: Mapping, where: str) -> Document:
    raw_id = obj.get("id", obj.get("_id"))
    if raw_id is None or raw_id == "":
        raise InvalidInput("documents", f"{where}: no 'id' or '_id'")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("documents", f"{where}: 'text' must be a non-empty string")
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise InvalidInput("documents", f"{where}: 'title' must be a string")
    return Document(check_ids([raw_id], f"{where}: id")[0], text, title or None,
                    check_metadata(obj.get("metadata"), f"{where}: metadata"))


def read_paths(paths: Sequence[str | Path], limit: int | None = None) -> list[Document]:
    """Every document under ``paths`` (later duplicates of an id replace earlier ones).

    >>> read_paths(["/nonexistent"])  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: paths: /nonexistent: no such file or folder
    """
    out: dict[str, Document] = {}
    for path, root in iter_files(paths):
        for doc in read_file(path, root):
            out.pop(doc.id, None)
            out[doc.id] = doc
            if limit is not None and len(out) >= limit:
                return list(out.values())
    return list(out.values())
