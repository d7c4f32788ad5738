"""Evaluation data sets: the BEIR layout and a simpler layout for a user's own judgements.

A data set is a folder. Two layouts are read:

* **BEIR** (``../shared/datasets/scifact`` and every BEIR/MTEB retrieval set)::

      corpus.jsonl       {"_id": "d1", "title": "...", "text": "..."}
      queries.jsonl      {"_id": "q1", "text": "..."}
      qrels/test.tsv     query-id <TAB> corpus-id <TAB> score   (one header line)

* **your own** (no ``qrels/`` folder): the judgements sit beside each query::

      corpus.jsonl       as above ("_id" or "id"; "title" optional)  — or corpus.csv with columns id,title,text
      queries.jsonl      {"query": "...", "relevant": ["d1", "d7"]}    ("id" optional; "relevant" may be
                         {"d1": 2, "d7": 1} for graded judgements)
                         — or queries.csv with columns query,relevant[,id]; ids in "relevant" split on ";" or space

A document's text for embedding and BM25 is ``title + " " + text`` (stripped), the BEIR/MTEB convention,
so figures are comparable with published ones. Only queries with at least one judgement are evaluated.

>>> ds = load_dataset("../shared/datasets/scifact")
>>> len(ds.doc_ids), len(ds.queries)
(5183, 300)
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput

log = logging.getLogger(__name__)

FIELD = "dataset"


@dataclass
class Dataset:
    """A corpus, the queries to evaluate and their relevance judgements (``qrels[qid][doc_id] = grade``)."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    source: str = ""
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def fingerprint(self) -> str:
        """A hash of everything in the data set that changes a result (ids, texts, queries, judgements).

        >>> Dataset("x", ["d"], ["t"], {"q": "a"}, {"q": {"d": 1}}).fingerprint()[:8]
        'f2e0c361'
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            for part in (self.doc_ids, self.doc_texts, self.queries, self.qrels):
                h.update(json.dumps(part, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
                h.update(b"\x00")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def corpus_fingerprint(self) -> str:
        """A hash of the corpus alone (ids and texts): indexes depend on nothing else."""
        h = hashlib.sha256(
            json.dumps([self.doc_ids, self.doc_texts], ensure_ascii=False, separators=(",", ":")).encode()
        )
        return h.hexdigest()

    def queries_fingerprint(self) -> str:
        """A hash of the queries alone (ids and texts): rankings depend on them and the corpus only."""
        return hashlib.sha256(
            json.dumps(self.queries, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        ).hexdigest()

    def summary(self) -> dict:
        n_rel = sum(1 for rels in self.qrels.values() for g in rels.values() if g > 0)
        return {
            "name": self.name,
            "documents": len(self.doc_ids),
            "queries": len(self.queries),
            "judgements": n_rel,
            "source": self.source,
        }


def doc_text(title: str | None, text: str | None) -> str:
    """The text that is embedded and indexed: ``title + " " + text``.

    >>> doc_text("Title.", "Body")
    'Title. Body'
    >>> doc_text(None, "Body")
    'Body'
    """
    return ((title or "") + " " + (text or "")).strip()


def load_dataset(path: str | Path, *, split: str = "test") -> Dataset:
    """Read a data set folder in the BEIR layout or the simple one (see the module's doc).

    >>> load_dataset("/no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: dataset: /no/such/folder is not a folder
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InvalidInput(FIELD, f"{path} is not a folder")
    doc_ids, doc_texts = _read_corpus(root)
    qrels_dir = root / "qrels"
    if qrels_dir.is_dir():
        queries, qrels = _read_beir_queries(root, qrels_dir, split)
    else:
        queries, qrels = _read_own_queries(root)
    known = set(doc_ids)
    missing = {d for rels in qrels.values() for d in rels if d not in known}
    if missing:
        log.warning(
            "%d judged document ids are not in the corpus (e.g. %s); they count as unfound",
            len(missing),
            sorted(missing)[:3],
        )
    if not queries:
        raise InvalidInput(FIELD, f"{root}: no query has a relevance judgement")
    return Dataset(name=root.name, doc_ids=doc_ids, doc_texts=doc_texts, queries=queries, qrels=qrels, source=str(root))


def subset(ds: Dataset, *, max_queries: int | None = None, max_docs: int | None = None, seed: int = 0) -> Dataset:
    """A smaller data set: the first ``max_queries`` queries, and a corpus of at most ``max_docs`` documents.

    The corpus keeps every document judged for the kept queries, then fills up with a seeded random
    sample of the others, so a subset is reproducible and every relevant document can still be found.

    >>> ds = Dataset("x", ["a", "b", "c"], ["A", "B", "C"], {"1": "q1", "2": "q2"}, {"1": {"b": 1}, "2": {"c": 1}})
    >>> small = subset(ds, max_queries=1, max_docs=2)
    >>> list(small.queries), "b" in small.doc_ids, len(small.doc_ids)
    (['1'], True, 2)
    """
    for name, value in (("max_queries", max_queries), ("max_docs", max_docs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidInput(name, f"must be a positive integer, got {value!r}")
    qids = list(ds.queries)[: max_queries or None]
    queries = {q: ds.queries[q] for q in qids}
    qrels = {q: ds.qrels[q] for q in qids}
    keep = list(range(len(ds.doc_ids)))
    if max_docs is not None and max_docs < len(ds.doc_ids):
        judged = {d for q in qids for d in qrels[q]}
        must = [i for i, d in enumerate(ds.doc_ids) if d in judged]
        others = [i for i, d in enumerate(ds.doc_ids) if d not in judged]
        random.Random(seed).shuffle(others)
        keep = sorted(must + others[: max(0, max_docs - len(must))])
    suffix = []
    if max_queries is not None:
        suffix.append(f"q{len(qids)}")
    if max_docs is not None:
        suffix.append(f"d{len(keep)}")
    return Dataset(
        name=ds.name + ("-" + "-".join(suffix) if suffix else ""),
        doc_ids=[ds.doc_ids[i] for i in keep],
        doc_texts=[ds.doc_texts[i] for i in keep],
        queries=queries,
        qrels=qrels,
        source=ds.source,
    )


# ---------------------------------------------------------------------------------------------- corpus


def _read_corpus(root: Path) -> tuple[list[str], list[str]]:
    jsonl, csv_path = root / "corpus.jsonl", root / "corpus.csv"
    if jsonl.is_file():
        rows = ((where, obj) for where, obj in _jsonl(jsonl))
    elif csv_path.is_file():
        rows = _csv(csv_path, required=("text",))
    else:
        raise InvalidInput(FIELD, f"{root}: no corpus.jsonl or corpus.csv")
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for where, obj in rows:
        doc_id = obj.get("_id", obj.get("id"))
        if doc_id is None or str(doc_id).strip() == "":
            raise InvalidInput(FIELD, f"{where}: document has no '_id' (or 'id')")
        doc_id = str(doc_id)
        text = obj.get("text")
        if not isinstance(text, str):
            raise InvalidInput(FIELD, f"{where}: document {doc_id!r} has no string 'text'")
        title = obj.get("title")
        if title is not None and not isinstance(title, str):
            raise InvalidInput(FIELD, f"{where}: document {doc_id!r} has a non-string 'title'")
        if doc_id in seen:
            raise InvalidInput(FIELD, f"{where}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        ids.append(doc_id)
        texts.append(doc_text(title, text))
    if not ids:
        raise InvalidInput(FIELD, f"{root}: the corpus is empty")
    return ids, texts


# --------------------------------------------------------------------------------------------- queries


def _read_beir_queries(root: Path, qrels_dir: Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    qpath, tsv = root / "queries.jsonl", qrels_dir / f"{split}.tsv"
    if not qpath.is_file():
        raise InvalidInput(FIELD, f"{root}: no queries.jsonl")
    if not tsv.is_file():
        have = sorted(p.stem for p in qrels_dir.glob("*.tsv"))
        raise InvalidInput("split", f"{qrels_dir} has no {split}.tsv (splits here: {', '.join(have) or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    with tsv.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if n == 1 and parts[0] in ("query-id", "qid", "query_id"):
                continue
            if not line.strip():
                continue
            if len(parts) < 3:
                raise InvalidInput(FIELD, f"{tsv}:{n}: expected query-id<TAB>corpus-id<TAB>score")
            try:
                grade = int(float(parts[-1]))
            except ValueError as exc:
                raise InvalidInput(FIELD, f"{tsv}:{n}: score {parts[-1]!r} is not a number") from exc
            qrels.setdefault(parts[0], {})[parts[-2]] = grade
    texts: dict[str, str] = {}
    for where, obj in _jsonl(qpath):
        qid, text = obj.get("_id", obj.get("id")), obj.get("text")
        if qid is None or not isinstance(text, str):
            raise InvalidInput(FIELD, f"{where}: a query needs '_id' and a string 'text'")
        texts[str(qid)] = text
    unknown = [q for q in qrels if q not in texts]
    if unknown:
        raise InvalidInput(
            FIELD, f"{tsv}: {len(unknown)} judged query ids are not in queries.jsonl (e.g. {unknown[0]!r})"
        )
    order = [q for q in texts if q in qrels]  # file order of queries.jsonl, judged ones only
    return {q: texts[q] for q in order}, {q: qrels[q] for q in order}


def _read_own_queries(root: Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    jsonl, csv_path = root / "queries.jsonl", root / "queries.csv"
    if jsonl.is_file():
        rows: Iterator[tuple[str, dict]] = _jsonl(jsonl)
    elif csv_path.is_file():
        rows = _csv(csv_path, required=("query", "relevant"))
    else:
        raise InvalidInput(FIELD, f"{root}: no qrels/ folder (BEIR layout) and no queries.jsonl or queries.csv")
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for n, (where, obj) in enumerate(rows, 1):
        text = obj.get("query", obj.get("text"))
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(FIELD, f"{where}: a query needs a non-empty string 'query'")
        if "relevant" not in obj:
            raise InvalidInput(
                FIELD,
                f"{where}: no 'relevant' field (the ids of the relevant documents); "
                "a BEIR data set needs a qrels/ folder instead",
            )
        qid = str(obj.get("id", obj.get("_id", f"q{n}")))
        if qid in queries:
            raise InvalidInput(FIELD, f"{where}: duplicate query id {qid!r}")
        queries[qid] = text
        qrels[qid] = _relevant(obj["relevant"], where)
    return queries, qrels


def _relevant(value, where: str) -> dict[str, int]:
    if isinstance(value, str):  # CSV cell
        value = [v for v in re.split(r"[;\s]+", value) if v]
    if isinstance(value, dict):
        out = {}
        for k, g in value.items():
            if isinstance(g, bool) or not isinstance(g, (int, float)):
                raise InvalidInput(FIELD, f"{where}: grade of {k!r} in 'relevant' must be a number")
            out[str(k)] = int(g)
    elif isinstance(value, list):
        out = {str(v): 1 for v in value if not isinstance(v, (dict, list))}
        if len(out) != len(value):
            raise InvalidInput(FIELD, f"{where}: 'relevant' must list document ids (strings or numbers)")
    else:
        raise InvalidInput(FIELD, f"{where}: 'relevant' must be a list of document ids or an {{id: grade}} object")
    if not any(g > 0 for g in out.values()):
        raise InvalidInput(FIELD, f"{where}: 'relevant' names no relevant document")
    return out


# ----------------------------------------------------------------------------------------------- files


def _jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        f = path.open(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(FIELD, f"cannot read {path}: {exc.strerror}") from exc
    with f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise InvalidInput(FIELD, f"{path}:{n}: not valid JSON ({exc.msg})") from exc
                if not isinstance(obj, dict):
                    raise InvalidInput(FIELD, f"{path}:{n}: each line must be a JSON object")
                yield f"{path}:{n}", obj
        except UnicodeDecodeError as exc:
            raise InvalidInput(FIELD, f"{path} is not UTF-8 text") from exc


def _csv(path: Path, *, required: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    try:
        f = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise InvalidInput(FIELD, f"cannot read {path}: {exc.strerror}") from exc
    with f:
        try:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            lacking = [c for c in required if c not in cols]
            if lacking:
                raise InvalidInput(
                    FIELD, f"{path}: missing column(s) {', '.join(lacking)} (has: {', '.join(cols) or 'none'})"
                )
            for row in reader:
                yield f"{path}:{reader.line_num}", {k: v for k, v in row.items() if k is not None}
        except UnicodeDecodeError as exc:
            raise InvalidInput(FIELD, f"{path} is not UTF-8 text") from exc
