"""Evaluation data sets: the BEIR layout and a simpler layout for a user's own judgements.

A data set is a folder. Two layouts are read:

* **BEIR** (``../shared/datasets/scifact`` and every BEIR/MTEB retrieval set)::

      corpus.jsonl       {"_id": "d1", "title": "...", "text": "..."}
      queries.jsonl      {"_id": "q1", "text": "..."}
      qrels/test.tsv     query-id <TAB> corpus-id <TAB> score   (header line optional)
                         — or TREC qrels: query-id iteration doc-id relevance (whitespace, no header)

* **your own** (no ``qrels/`` folder): the judgements sit beside each query::

      corpus.jsonl       as above ("_id" or "id"; "title" optional)  — or corpus.csv with columns id,title,text
      queries.jsonl      {"query": "...", "relevant": ["d1", "d7"]}    ("id" optional; "relevant" may be
                         {"d1": 2, "d7": 1} for graded judgements)
                         — or queries.csv with columns query,relevant[,id]; ids in "relevant" split on ";" or space

A document's text for embedding and BM25 is ``title + " " + text`` (stripped), the BEIR/MTEB convention,
so figures are comparable with published ones. Only queries with at least one judgement are evaluated: a query
with an empty judgement list is skipped (:attr:`Dataset.skipped`, one warning). A judgement naming a document the
corpus lacks counts as a relevant document never found; :meth:`Dataset.notes` says how many there are (one warning,
and the report's notes), so a typo in an id does not lower the figures unseen.

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
NOTE_EXAMPLES = 5  # examples (queries, and ids per query) a note or warning names
TREC_QRELS = "query-id iteration doc-id relevance"
BEIR_QRELS = "query-id<TAB>corpus-id<TAB>score"


@dataclass
class Dataset:
    """A corpus, the queries to evaluate and their relevance judgements (``qrels[qid][doc_id] = grade``)."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    source: str = ""
    skipped: list[str] = field(default_factory=list, compare=False)  # queries skipped: empty judgement list
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
        out = {
            "name": self.name,
            "documents": len(self.doc_ids),
            "queries": len(self.queries),
            "judgements": n_rel,
            "source": self.source,
        }
        notes = self.notes()
        return out | {"notes": notes} if notes else out

    def unknown_judged(self) -> dict[str, list[str]]:
        """``{query id: [judged document ids the corpus lacks]}``, in judgement order (queries that have any).

        >>> Dataset("x", ["d1"], ["t"], {"q": "a"}, {"q": {"d1": 1, "d9": 1}}).unknown_judged()
        {'q': ['d9']}
        """
        known = set(self.doc_ids)
        out = {}
        for qid, rels in self.qrels.items():
            missing = [d for d in rels if d not in known]
            if missing:
                out[qid] = missing
        return out

    def notes(self) -> dict:
        """What a reader of the figures must know about the data: ``unknown_judged_docs`` (judgements naming a
        document the corpus lacks: they count as relevant documents never found, so a typo in an id lowers recall
        and nDCG) and ``skipped_queries`` (queries left out for an empty judgement list), each with a count and
        the first few examples; empty when there is nothing to say.

        >>> ds = Dataset("x", ["d1"], ["t"], {"q": "a"}, {"q": {"d1": 1, "d9": 1, "d8": 0}}, skipped=["q2"])
        >>> ds.notes()["unknown_judged_docs"]
        {'judgements': 2, 'relevant': 1, 'documents': 2, 'queries': 1, 'examples': {'q': ['d9', 'd8']}}
        >>> ds.notes()["skipped_queries"]
        {'count': 1, 'reason': 'empty judgement list', 'examples': ['q2']}
        """
        out: dict = {}
        unknown = self.unknown_judged()
        if unknown:
            out["unknown_judged_docs"] = {
                "judgements": sum(len(ids) for ids in unknown.values()),
                "relevant": sum(1 for q, ids in unknown.items() for d in ids if self.qrels[q][d] > 0),
                "documents": len({d for ids in unknown.values() for d in ids}),
                "queries": len(unknown),
                "examples": {q: ids[:NOTE_EXAMPLES] for q, ids in list(unknown.items())[:NOTE_EXAMPLES]},
            }
        if self.skipped:
            out["skipped_queries"] = {
                "count": len(self.skipped),
                "reason": "empty judgement list",
                "examples": self.skipped[:NOTE_EXAMPLES],
            }
        return out


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
    skipped: list[str] = []
    if qrels_dir.is_dir():
        queries, qrels = _read_beir_queries(root, qrels_dir, split)
    else:
        queries, qrels, skipped = _read_own_queries(root)
    if skipped:
        log.warning(
            "%d queries have an empty judgement list and are skipped (e.g. %s)",
            len(skipped),
            ", ".join(skipped[:NOTE_EXAMPLES]),
        )
    if not queries:
        why = f" ({len(skipped)} skipped for an empty judgement list)" if skipped else ""
        raise InvalidInput(FIELD, f"{root}: no query has a relevance judgement{why}")
    ds = Dataset(name=root.name, doc_ids=doc_ids, doc_texts=doc_texts, queries=queries, qrels=qrels,
                 source=str(root), skipped=skipped)
    unknown = ds.notes().get("unknown_judged_docs")
    if unknown:
        examples = "; ".join(f"{q}: {', '.join(ids)}" for q, ids in unknown["examples"].items())
        log.warning(
            "%d judgements (%d of them relevant) in %d queries name %d documents that are not in the corpus "
            "(e.g. %s); the relevant ones count as documents never found, which lowers recall and nDCG",
            unknown["judgements"], unknown["relevant"], unknown["queries"], unknown["documents"], examples,
        )
    return ds


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
        skipped=list(ds.skipped),
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
    qrels = read_qrels(tsv)
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


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Relevance judgements ``{query id: {document id: grade}}`` from a BEIR TSV or a TREC qrels file.

    The form is decided once per file, by its first judgement line, and every line must then have it:

    * BEIR: ``query-id<TAB>corpus-id<TAB>score``, three tab-separated fields (ids may hold spaces), after an
      optional header line (``query-id``, ``qid`` or ``query_id`` first);
    * TREC (what trec_eval, ranx, pytrec_eval and ir_datasets read): ``query-id iteration doc-id relevance``, four
      whitespace-separated fields whose second, the iteration, is a whole number (usually 0); no header.

    A line of three tab-separated fields can only be BEIR, and one of four fields with a number second can only be
    TREC, so the two never mix up. A line of neither form is an error naming the file and line.

    >>> import tempfile
    >>> trec = Path(tempfile.mkdtemp()) / "test.tsv"
    >>> _ = trec.write_text("q1 0 d1 1\\nq1 0 d2 0\\n")
    >>> read_qrels(trec)
    {'q1': {'d1': 1, 'd2': 0}}
    """
    qrels: dict[str, dict[str, int]] = {}
    form = None  # "beir" or "trec": the first judgement line's
    with path.open(encoding="utf-8-sig") as f:
        try:
            for n, line in enumerate(f, 1):
                text = line.strip()  # surrounding blanks (a trailing tab, CRLF) are no field
                if not text:
                    continue
                tabbed, fields = text.split("\t"), text.split()
                if form is None:
                    if n == 1 and tabbed[0].strip() in ("query-id", "qid", "query_id"):
                        continue  # BEIR's header line
                    form = _qrels_form(tabbed, fields)
                    if form is None:
                        raise InvalidInput(
                            FIELD, f"{path}:{n}: expected BEIR qrels ({BEIR_QRELS}, 3 tab-separated fields) or TREC "
                            f"qrels ({TREC_QRELS}, 4 fields, the iteration a whole number); got {len(fields)} "
                            f"fields, {len(tabbed)} tab-separated"
                        )
                if form == "trec":
                    if _qrels_form(tabbed, fields) != "trec":
                        raise InvalidInput(
                            FIELD, f"{path}:{n}: expected {TREC_QRELS} (4 fields separated by whitespace, the "
                            "iteration a whole number), the TREC qrels form of this file's first line"
                        )
                    qid, doc, score = fields[0], fields[2], fields[3]
                else:
                    if len(tabbed) != 3:
                        raise InvalidInput(
                            FIELD, f"{path}:{n}: expected {BEIR_QRELS} (3 tab-separated fields), the BEIR form of "
                            f"this file's first line; got {len(tabbed)}"
                        )
                    qid, doc, score = (t.strip() for t in tabbed)
                    if not qid or not doc:
                        raise InvalidInput(FIELD, f"{path}:{n}: empty {'query-id' if not qid else 'corpus-id'}")
                try:
                    grade = int(float(score))
                except ValueError as exc:
                    raise InvalidInput(FIELD, f"{path}:{n}: score {score!r} is not a number") from exc
                qrels.setdefault(qid, {})[doc] = grade
        except UnicodeDecodeError as exc:
            raise InvalidInput(FIELD, f"{path} is not UTF-8 text") from exc
    return qrels


def _qrels_form(tabbed: list[str], fields: list[str]) -> str | None:
    """The qrels form a line has: "beir" (3 tab-separated fields), "trec" (4 fields, the second a whole number:
    the iteration) or None."""
    if len(tabbed) == 3:
        return "beir"
    if len(fields) == 4 and fields[1].isascii() and fields[1].isdigit():
        return "trec"
    return None


def _read_own_queries(root: Path) -> tuple[dict[str, str], dict[str, dict[str, int]], list[str]]:
    jsonl, csv_path = root / "queries.jsonl", root / "queries.csv"
    if jsonl.is_file():
        rows: Iterator[tuple[str, dict]] = _jsonl(jsonl)
    elif csv_path.is_file():
        rows = _csv(csv_path, required=("query", "relevant"))
    else:
        raise InvalidInput(FIELD, f"{root}: no qrels/ folder (BEIR layout) and no queries.jsonl or queries.csv")
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    skipped: list[str] = []  # an empty judgement list: nothing to evaluate the query on
    seen: set[str] = set()
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
        if qid in seen:
            raise InvalidInput(FIELD, f"{where}: duplicate query id {qid!r}")
        seen.add(qid)
        relevant = _relevant(obj["relevant"], where)
        if not relevant:
            skipped.append(qid)
            continue
        queries[qid] = text
        qrels[qid] = relevant
    return queries, qrels, skipped


def _relevant(value, where: str) -> dict[str, int]:
    """A query's judgements ``{doc id: grade}``; empty for an empty list (or object, or CSV cell): the query is
    then skipped. Judgements that name no relevant document (every grade 0) are refused."""
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
    if out and not any(g > 0 for g in out.values()):
        raise InvalidInput(FIELD, f"{where}: 'relevant' names no relevant document")
    return out


# ----------------------------------------------------------------------------------------------- files


def _jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        f = path.open(encoding="utf-8-sig")
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
        f = path.open(encoding="utf-8-sig", newline="")
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
