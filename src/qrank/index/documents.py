"""Documents going into a collection: validation, version hashes, and readers for txt/md/jsonl/csv/tsv files.

JSONL lines are ``{"id", "text", "title"?, "metadata"?}``; BEIR's ``corpus.jsonl`` spells the id ``_id``
and both are accepted. CSV (and TSV: tab-separated) files need a header with ``text`` and ``id``/``_id``
(optional ``title``); other columns become metadata, as text (no type is guessed: ``00123`` stays
``"00123"``). TSV is read as BEIR and MS MARCO write it, without quoting: each line is a row and a ``"`` is
just a character, so a TSV text holds no tab and no line break. A cell may be as long as a JSONL text (the
csv module's own bound, 131,072 characters, is lifted while our rows are read). A ``.txt``/``.md`` file is
one document whose id is its path relative to the folder given, or its name when the file itself was given:
the same file reached through two paths gets two ids. Every file is read as UTF-8, with or without a
byte-order mark (Excel's "CSV UTF-8" writes one).

One rule for empty documents in every format: a file, line or row whose text is empty or blank is skipped,
counted and warned about (:class:`FileDocuments`), whatever else it holds (an empty id too); a CSV/TSV row
whose cells are all empty (Excel's ``,,``) is skipped and counted without a warning. Anything else that is not
a document (no id, a text that is not a string, broken JSON) is an error naming ``file:line``. A CSV/TSV file
found in a folder whose header has no ``text`` column (BEIR's ``qrels/test.tsv``) is not a document table: it
is skipped with a warning; named on its own, it is an error.

>>> docs = to_documents(["first", {"id": "b", "text": "second", "title": "B"}], ids=None)
>>> [(d.id, d.title) for d in docs][1]
('b', 'B')
>>> indexed_text(docs[1])
'B second'
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md", ".jsonl", ".csv", ".tsv")
RECORD_KEYS = ("id", "_id", "text", "title", "metadata")  # what a JSONL object may hold
_FEW = 5  # places or ids named in one warning
MAX_ID_CHARS = 512  # ids are keys, not content; also the Milvus doc_id VARCHAR's length (there in bytes)
TEXT_SUFFIXES = (".txt", ".md")  # one document per file, its id made from its path
# a CSV/TSV cell may be as long as a JSONL text: csv's process-wide bound (131,072) is lifted while one of our
# rows is parsed, then put back (_long_cells), so other csv readers of the process keep theirs
_CELL_LIMIT = min(sys.maxsize, 2**31 - 1)
_cell_limit_lock = threading.Lock()


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
    return [check_id(x, f"{field_name}[{i}]") for i, x in enumerate(ids)]


def check_id(x: Any, field_name: str) -> str:
    """One document id as stored: a non-blank string (a number is turned into one) of at most MAX_ID_CHARS.

    >>> check_id(7, "id")
    '7'
    >>> check_id("x" * 600, "documents[0].id")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: documents[0].id: must be at most 512 characters, got 600
    """
    if isinstance(x, bool) or not isinstance(x, (str, int)):
        raise InvalidInput(field_name, f"must be a string, got {type(x).__name__}")
    x = str(x)
    if not x.strip():
        raise InvalidInput(field_name, "must not be empty or blank")
    if len(x) > MAX_ID_CHARS:
        raise InvalidInput(field_name, f"must be at most {MAX_ID_CHARS} characters, got {len(x)}")
    return x


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
            doc = Document(check_id(raw_id, f"{where}.id"), item.get("text"), title or None,
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
class NotADocumentTable(InvalidInput):
    """A CSV/TSV file whose header has no ``text`` column: an error for a file named on its own; a file found
    in a folder is skipped (:func:`read_documents`), as a BEIR folder's ``qrels/test.tsv`` is."""


class _BlankRow:
    def __repr__(self) -> str:
        return "BLANK_ROW"


BLANK_ROW = _BlankRow()
"""What :func:`read_file` gives for a CSV/TSV row whose cells are all empty (Excel's ``,,``)."""


def _found_files(paths: Sequence[str | Path]) -> Iterator[tuple[Path, Path, bool]]:
    """``(file, root, found)``: :func:`iter_files`, and whether the file was found in a folder (not named)."""
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            queries = [f for f in found if _beir_queries(f)]
            if queries:
                log.warning("%s: the queries of a BEIR data set (corpus.jsonl, queries.jsonl, qrels/), not documents: "
                            "skipped (name the file to add it)", ", ".join(str(f) for f in queries))
            for f in found:
                if f not in queries:
                    yield f, path, True
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise InvalidInput("paths", f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")
            yield path, path.parent, False
        else:
            raise InvalidInput("paths", f"{path}: no such file or folder")


def _beir_queries(f: Path) -> bool:
    """Is ``f`` the ``queries.jsonl`` of a BEIR data set (beside its ``corpus.jsonl`` and ``qrels/``)? Added with
    the folder, its queries became documents, and one whose id matched a corpus id replaced that document."""
    return f.name == "queries.jsonl" and (f.parent / "corpus.jsonl").is_file() and (f.parent / "qrels").is_dir()


def iter_files(paths: Sequence[str | Path]) -> Iterator[tuple[Path, Path]]:
    """``(file, root)`` for every supported file under the given files and folders, sorted. ``root`` is what
    a text file's id is relative to: the folder given, or the file's own folder when the file was given."""
    for f, root, _ in _found_files(paths):
        yield f, root


def read_file(path: Path, root: Path) -> Iterator[tuple[str, Document | None | _BlankRow]]:
    """``(where, document)`` for each document of one file (see the module docstring for the formats);
    ``where`` is ``file:line`` (the file alone for txt/md, a row's first line for CSV), and ``document`` is
    None for an empty one, :data:`BLANK_ROW` for a CSV/TSV row of empty cells."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open(encoding="utf-8-sig") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        raise InvalidInput("documents", f"{path}:{n}: not valid JSON ({exc.msg})") from exc
                    if not isinstance(obj, dict):
                        raise InvalidInput("documents", f"{path}:{n}: expected an object")
                    yield f"{path}:{n}", _from_record(obj, f"{path}:{n}")
        elif suffix in (".csv", ".tsv"):
            yield from _read_table(path, "TSV" if suffix == ".tsv" else "CSV")
        else:
            where = str(path)
            text = path.read_text(encoding="utf-8-sig")
            yield where, (Document(path.relative_to(root).as_posix(), text.strip(), None, {"source": str(path)})
                          if text.strip() else None)
    except UnicodeDecodeError as exc:
        raise InvalidInput("documents", f"{path}: not UTF-8 text") from exc
    except OSError as exc:
        raise InvalidInput("documents", f"{path}: cannot read ({exc.strerror})") from exc


@contextlib.contextmanager
def _long_cells():
    """csv's cell bound lifted for as long as one row is parsed (see ``_CELL_LIMIT``)."""
    with _cell_limit_lock:
        before = csv.field_size_limit(_CELL_LIMIT)
        try:
            yield
        finally:
            csv.field_size_limit(before)


def _read_table(path: Path, kind: str) -> Iterator[tuple[str, Document | None | _BlankRow]]:
    """The rows of a CSV (Excel's dialect) or TSV (tabs, no quoting: each line a row) file with a header;
    columns other than id, text and title become metadata, kept as the text they are. ``where`` is the line a
    row starts on (a quoted CSV cell may hold line breaks)."""
    fmt: dict[str, Any] = {"dialect": "excel-tab", "quoting": csv.QUOTE_NONE} if kind == "TSV" else {"dialect": "excel"}
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, **fmt)

        def rows() -> Iterator[tuple[int, list[str]]]:
            while True:
                line = reader.line_num + 1  # where the next row starts (csv counts the lines it has read)
                try:
                    with _long_cells():
                        row = next(reader, None)
                except csv.Error as exc:  # e.g. a quote left open at the end of the file
                    raise InvalidInput("documents", f"{path}:{line}: not a readable {kind} row ({exc})") from exc
                if row is None:
                    return
                if row:  # a blank line is no row
                    yield line, row

        table = rows()
        line, columns = next(table, (1, []))
        found = ", ".join(sorted(c for c in columns if c)) or "none"
        if "text" not in columns:
            raise NotADocumentTable("documents", f"{path}:{line}: the {kind} header has no 'text' column (found: "
                                    f"{found}; use 'text', or 'title' + 'text')")
        if "id" not in columns and "_id" not in columns:
            raise InvalidInput("documents", f"{path}:{line}: the {kind} header has no 'id' or '_id' column (found: "
                               f"{found})")
        named = ("id", "_id", "text", "title")
        for line, row in table:
            where = f"{path}:{line}"
            if not any(cell.strip() for cell in row):
                yield where, BLANK_ROW
                continue
            # as csv.DictReader: a cell past the header's columns is dropped, a missing one is None
            rec = {name: row[i] if i < len(row) else None for i, name in enumerate(columns)}
            meta = {k: v for k, v in rec.items() if k not in named}
            fields = {k: rec.get(k) for k in named}
            if fields["text"] is None:  # a short row: its text cell is missing, which is an empty text
                fields["text"] = ""
            yield where, _from_record({**fields, "metadata": meta}, where)


def _from_record(obj: Mapping, where: str) -> Document | None:
    """The document of one JSONL object or CSV row, None when its text is empty or blank (whatever its id)."""
    text = obj.get("text")
    if isinstance(text, str) and not text.strip():
        return None
    raw_id = obj.get("id")
    if raw_id is None:  # BEIR's spelling (a CSV with an '_id' column has no 'id' cell)
        raw_id = obj.get("_id")
    if raw_id is None and "id" not in obj and "_id" not in obj:
        raise InvalidInput("documents", f"{where}: missing 'id' (found keys: {_keys(obj)}; use 'id' or '_id')")
    if raw_id is None or raw_id == "":
        raise InvalidInput("documents", f"{where}: 'id' must not be empty")
    if "text" not in obj:
        raise InvalidInput("documents", f"{where}: missing 'text' (found keys: {_keys(obj)}; use 'text', or "
                           "'title' + 'text')")
    if not isinstance(text, str):
        raise InvalidInput("documents", f"{where}: 'text' must be a string, got {_type_name(text)}")
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise InvalidInput("documents", f"{where}: 'title' must be a string, got {_type_name(title)}")
    doc_id = check_id(raw_id, f"{where}: id")
    metadata = check_metadata(obj.get("metadata"), f"{where}: metadata")
    return Document(doc_id, text, title or None, metadata)


def _keys(obj: Mapping) -> str:
    return ", ".join(sorted(str(k) for k in obj)) or "none"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def few(items: Sequence[str]) -> str:
    """The first few of ``items``, joined, and how many more there are.

    >>> few(["a", "b"]), few([str(i) for i in range(7)])
    ('a, b', '0, 1, 2, 3, 4 and 2 more')
    """
    head = ", ".join(items[:_FEW])
    return head if len(items) <= _FEW else f"{head} and {len(items) - _FEW} more"


@dataclass
class FileDocuments:
    """What :func:`read_documents` read: the documents (one per id, the last one read), where each empty
    document that was skipped was (``file:line``), where each CSV/TSV row of empty cells was, each record that a
    later one with the same id replaced (``(id, where it was, where the one kept is)``), the files found in a
    folder that were skipped as no document table, and how many documents came from .txt/.md files (whose ids
    are made from their paths)."""

    documents: list[Document]
    empty: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    blank_rows: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    text_files: int = 0

    def summary(self) -> dict[str, int]:
        """The counts an add reports beside its own: ``empty_skipped`` (empty documents and rows of empty
        cells) and ``duplicate_ids`` (records dropped for a later one with the same id)."""
        return {"empty_skipped": len(self.empty) + len(self.blank_rows), "duplicate_ids": len(self.duplicates)}


def read_documents(paths: Sequence[str | Path], limit: int | None = None) -> FileDocuments:
    """Every document under ``paths``, at most ``limit`` distinct ids. Empty documents are skipped and a
    repeated id keeps its last record; each is said in one warning naming the first few. Rows of empty cells
    are skipped and counted, unsaid; CSV/TSV files found in a folder without a ``text`` column are skipped
    with one warning naming them.

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
    >>> _ = f.write_text('{"id": "a", "text": "x"}\\n{"id": "b", "text": " "}\\n{"id": "a", "text": "y"}\\n')
    >>> got = read_documents([f])
    >>> [(d.id, d.text) for d in got.documents], got.summary()
    ([('a', 'y')], {'empty_skipped': 1, 'duplicate_ids': 1})
    """
    out: dict[str, Document] = {}
    seen_at: dict[str, str] = {}
    got = FileDocuments([])
    for path, root, found in _found_files(paths):
        try:
            if not _read_into(got, out, seen_at, path, root, limit):
                break
        except NotADocumentTable:
            if not found:
                raise
            got.skipped_files.append(str(path))
    got.documents = list(out.values())
    if got.skipped_files:
        n = len(got.skipped_files)
        log.warning("%d file%s found in a folder skipped: no 'text' column in %s header, so no documents (%s)", n,
                    "" if n == 1 else "s", "its" if n == 1 else "their", few(got.skipped_files))
    if got.empty:
        n = len(got.empty)
        rows = len(got.blank_rows)
        also = f"; and {rows} row{'' if rows == 1 else 's'} of empty cells" if rows else ""
        log.warning("%d empty document%s skipped (no text): %s%s", n, "" if n == 1 else "s", few(got.empty), also)
    if got.duplicates:
        n = len(got.duplicates)
        places: dict[str, list[str]] = {}  # each repeated id: where it was, in order (the last one is kept)
        for doc_id, before, after in got.duplicates:
            places.setdefault(doc_id, [before]).append(after)
        named = [f"{d!r} at {', '.join(w)}" for d, w in list(places.items())[:_FEW]]
        more = f"; and {len(places) - _FEW} more ids" if len(places) > _FEW else ""
        log.warning("%d duplicate id%s: the last one kept (%s%s)", n, "" if n == 1 else "s", "; ".join(named), more)
    return got


def _read_into(got: FileDocuments, out: dict[str, Document], seen_at: dict[str, str], path: Path, root: Path,
               limit: int | None) -> bool:
    """One file's documents into ``out`` (and what was skipped into ``got``); False once ``limit`` is reached."""
    for where, doc in read_file(path, root):
        if doc is BLANK_ROW:
            got.blank_rows.append(where)
            continue
        if doc is None:
            got.empty.append(where)
            continue
        assert isinstance(doc, Document)
        if path.suffix.lower() in TEXT_SUFFIXES:
            got.text_files += 1
        if doc.id in out:
            got.duplicates.append((doc.id, seen_at[doc.id], where))
            del out[doc.id]
        out[doc.id] = doc
        seen_at[doc.id] = where
        if limit is not None and len(out) >= limit:
            return False
    return True


def read_paths(paths: Sequence[str | Path], limit: int | None = None) -> list[Document]:
    """Every document under ``paths`` (later duplicates of an id replace earlier ones; empty ones are
    skipped): :func:`read_documents`' documents.

    >>> read_paths(["/nonexistent"])  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: paths: /nonexistent: no such file or folder
    """
    return read_documents(paths, limit).documents
