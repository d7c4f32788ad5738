"""``qrank index add|list|info|delete|drop|migrate`` and ``qrank search``: collections from the command line."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path

from ..errors import InvalidInput
from .common import add_settings_flags, print_json, settings_from_args, table_console

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    idx = sub.add_parser("index", help="build and manage collections", description="Collections live under "
                         "QRANK_HOME/collections (default ~/.qrank). See docs/index.md.")
    verbs = idx.add_subparsers(dest="index_command", metavar="VERB")

    a = verbs.add_parser("add", help="add files to a collection (creates it)", description="Index .txt/.md files "
                         "(one document each; its id is its path relative to the folder given, or its file name when "
                         "the file itself is given: the same file added through another path gets another id, and "
                         "the add warns that its text is stored twice), .jsonl ({'id' or '_id', 'text', 'title'?, "
                         "'metadata'?} per line) and .csv/.tsv (a header with 'text' and 'id' or '_id', 'title'?; "
                         "other columns become metadata, stored as text; TSV is unquoted, one line a row). Files are "
                         "UTF-8, with or without a byte-order mark. Folders are searched recursively; a CSV/TSV "
                         "found there without a 'text' column (BEIR's qrels) is skipped with a warning. A document "
                         "whose id exists replaces it; "
                         "unchanged documents cost nothing; empty documents are skipped and a repeated id keeps its "
                         "last record (both counted and warned about); Ctrl-C keeps finished batches and a re-run "
                         "continues.")
    a.add_argument("paths", nargs="+", metavar="PATH",
                   help="files or folders (a .txt/.md file's id is its path relative to the folder given)")
    a.add_argument("--collection", "-c", required=True, help="collection name")
    a.add_argument("--embedder", "-e", help="embedding model (folder or hub id); required to create a collection, "
                   "must match the collection's otherwise")
    a.add_argument("--reranker", "-r", help="remember this reranker as the collection's default for searches")
    a.add_argument("--limit", type=int, default=None, help="index at most N documents (e.g. a quick subset)")
    a.add_argument("--json", action="store_true", help="print the report as JSON")
    _common(a)
    add_settings_flags(
        a, "index", ["backend", "chunk_tokens", "chunk_overlap", "hnsw_threshold", "milvus_uri", "milvus_index"]
    )
    add_settings_flags(a, "engine", ["max_batch_tokens"])
    a.set_defaults(func=_store_errors(cmd_add))

    ls = verbs.add_parser("list", help="list collections")
    ls.add_argument("--json", action="store_true", help="print a JSON list (corrupt collections too, with "
                    "'status' and 'reason')")
    _common(ls, models=False)
    ls.set_defaults(func=cmd_list)

    info = verbs.add_parser("info", help="describe a collection")
    info.add_argument("collection")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    _common(info, models=False)
    info.set_defaults(func=_store_errors(cmd_info))

    rm = verbs.add_parser("delete", help="delete documents from a collection")
    rm.add_argument("collection")
    rm.add_argument("--ids", nargs="+", required=True, metavar="ID", help="document ids to delete")
    rm.add_argument("--json", action="store_true", help="print the report as JSON")
    _common(rm, models=False)
    rm.set_defaults(func=_store_errors(cmd_delete))

    drop = verbs.add_parser("drop", help="delete a whole collection (works on a corrupt one too)")
    drop.add_argument("collection")
    _common(drop, models=False)
    drop.set_defaults(func=cmd_drop)

    chk = verbs.add_parser("check", help="check a collection's files (and --repair what can be repaired)",
                           description="Check the manifest, the store (SQLite quick_check) and every document's "
                           "metadata. --repair rewrites metadata that is not JSON (NaN/Infinity from older versions "
                           "become null) and then removes the FAISS files so the index is rebuilt; on a healthy "
                           "collection it removes only leftover FAISS files (stale or temporary). A store that is "
                           "not a database cannot be repaired: `qrank index drop NAME` and add the documents again.")
    chk.add_argument("collection")
    chk.add_argument("--repair", action="store_true", help="fix what can be fixed in place")
    chk.add_argument("--json", action="store_true", help="print the report as JSON")
    _common(chk, models=False)
    chk.set_defaults(func=cmd_check)
    mv = verbs.add_parser(
        "migrate",
        help="move a collection to another vector store (e.g. a Milvus cluster)",
        description="Copy a collection's passages and vectors (nothing is re-embedded) into another "
        "store, switch the collection to it once every document is there, then delete the old store "
        "(--keep-source keeps it). Interrupting is safe: the collection keeps its old store until the "
        "copy is complete, and a re-run continues. Milvus targets take the --milvus-* settings.",
        epilog="example:\n  qrank index migrate docs --to milvus --milvus-uri http://milvus:19530 "
        "--milvus-index HNSW --milvus-shards 2 --milvus-partition-key tenant",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mv.add_argument("collection")
    mv.add_argument("--to", required=True, choices=["faiss", "milvus"], help="target vector store")
    mv.add_argument("--keep-source", action="store_true", help="keep the old store's data after the switch")
    mv.add_argument("--json", action="store_true", help="print the report as JSON")
    mv.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _common(mv, models=False)
    add_settings_flags(mv, "index", ["milvus_uri", "milvus_token", "milvus_db", "milvus_index", "milvus_shards",
                                     "milvus_partition_key", "milvus_partitions", "hnsw_threshold"])
    mv.set_defaults(func=_store_errors(cmd_migrate))
    idx.set_defaults(func=lambda args: idx.print_help() or 1)

    s = sub.add_parser("search", help="search a collection (dense or hybrid, then rerank)",
                       description="Find candidates by embedding similarity (or --hybrid: fused with BM25), then "
                       "rerank them with the collection's reranker or --reranker.")
    s.add_argument("query")
    s.add_argument("--collection", "-c", required=True)
    s.add_argument("--k", "-k", type=int, default=10, help="results to print (default 10)")
    s.add_argument("--reranker", "-r", help="reranker to use (default: the collection's, if any)")
    s.add_argument("--no-rerank", action="store_true", help="first stage only")
    s.add_argument("--hybrid", action="store_true", help="fuse dense and BM25 rankings (reciprocal rank fusion)")
    s.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep documents whose metadata KEY equals VALUE (JSON or text: year=2020 is a number, "
        "'year=\"2020\"' text, as CSV/TSV columns are stored); repeat to AND, repeat a key to OR",
    )
    s.add_argument("--reranker-instruction", help="the Qwen3 reranker's task (default: the model's)")
    s.add_argument("--query-task", help="the Qwen3-Embedding query task (default: the model's)")
    s.add_argument("--query-prompt", help="the sentence-transformers query prefix (default: the model's)")
    s.add_argument("--instruction", help="deprecated: one value for every role above that is not given")
    s.add_argument("--json", action="store_true", help="print a JSON list of hits")
    s.add_argument("--min-score", type=float, default=None,
                   help="leave out documents whose rerank score is below this (P(relevant) with --calibrated)")
    _common(s)
    add_settings_flags(s, "models", ["calibrated"])
    add_settings_flags(s, "index", ["candidates", "rrf_k", "hnsw_ef_search", "rerank_passages", "milvus_uri"])
    s.set_defaults(func=_store_errors(cmd_search))


def _store_errors(cmd):
    """A damaged store found mid-command (SQLite's own error) becomes one clear error line, not a traceback; so
    does any other SQLite error (a full disk, a lock held too long), named as what it is, not as corruption."""

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        import sqlite3

        from ..errors import QrankError
        from ..index.store import store_errors

        try:
            with store_errors(args.collection):
                return cmd(args)
        except sqlite3.Error as exc:  # not corruption (store_errors took that): say SQLite's own words
            raise QrankError(f"collection {args.collection!r}: its store could not be used ({exc})",
                             field="collection") from exc

    return run


def _common(p: argparse.ArgumentParser, models: bool = True) -> None:
    p.add_argument("--home", type=Path, default=None, help="data directory (default: QRANK_HOME or ~/.qrank)")
    if models:
        add_settings_flags(p, "models", ["device", "dtype"])
    add_settings_flags(p, "cache", ["enabled"])


def parse_filter(items: list[str]) -> dict | None:
    """``["lang=en", "year=2020", "lang=de"]`` → ``{"lang": ["en", "de"], "year": [2020]}``.

    >>> parse_filter(["lang=en", "year=2020", "lang=de"])
    {'lang': ['en', 'de'], 'year': [2020]}
    """
    out: dict[str, list] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidInput("filter", f"{item!r} is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if isinstance(value, (dict, list)) or value is None:
            value = raw
        out.setdefault(key, []).append(value)
    return out or None


def cmd_add(args: argparse.Namespace) -> int:
    from ..index.collection import Collection
    from ..index.documents import SUFFIXES, few, read_documents
    from ..pipeline import Pipeline

    settings = settings_from_args(args)
    if args.limit is not None and args.limit < 1:
        raise InvalidInput("limit", "must be a positive integer")
    if args.reranker:
        check_reranker(args.reranker, settings)
    read = read_documents(args.paths, limit=args.limit)
    docs = read.documents
    if not docs and (read.empty or read.blank_rows):
        empty = few(read.empty or read.blank_rows)
        raise InvalidInput("paths", f"no documents to add: every one found was empty ({empty})")
    if not docs:
        skipped = f"; skipped, no 'text' column: {few(read.skipped_files)}" if read.skipped_files else ""
        raise InvalidInput("paths", f"no documents found (supported files: {', '.join(SUFFIXES)}{skipped})")
    if not Collection.exists(settings, args.collection) and not args.embedder:
        raise InvalidInput(
            "embedder", f"collection {args.collection!r} does not exist yet: give --embedder MODEL to create it"
        )
    with Pipeline.open(args.collection, embedder=args.embedder, settings=settings) as p:
        if args.reranker:
            p.set_default_reranker(args.reranker)
        before = p.collection.store.count()
        try:
            report = p.add(docs)
        except KeyboardInterrupt:
            _say_interrupted(p, before)
            return 130
        report.update(read.summary())
        report["collection"] = p.name
    if report.get("same_text") and read.text_files:  # the warning names the pairs; from files, the usual why
        print("hint: the same file added through another path? (a .txt/.md file's id is its path relative to the "
              "folder given)", file=sys.stderr)
    if args.json:
        print_json(report)
    else:
        print(add_summary(report))
    return 0


def add_summary(report: dict) -> str:
    """The one line ``qrank index add`` prints: the counts, then what was skipped or looks wrong, if anything.

    >>> add_summary({"collection": "mine", "added": 2, "replaced": 0, "unchanged": 1, "passages": 3, "embedded": 2,
    ...              "count": 3, "same_text": 1, "empty_skipped": 1, "duplicate_ids": 2})  # doctest: +ELLIPSIS
    'mine: 2 added, 0 replaced, 1 unchanged (3 passages, 2 embedded); 3 documents in the collection; 1 empty ...'
    """
    line = (f"{report['collection']}: {report['added']} added, {report['replaced']} replaced, "
            f"{report['unchanged']} unchanged ({report['passages']} passages, {report['embedded']} embedded); "
            f"{report['count']} documents in the collection")
    extra = []
    if report.get("empty_skipped"):
        extra.append(f"{report['empty_skipped']} empty skipped")
    if report.get("duplicate_ids"):
        n = report["duplicate_ids"]
        extra.append(f"{n} duplicate id{'' if n == 1 else 's'}: the last one kept")
    if report.get("same_text"):
        n = report["same_text"]
        extra.append(f"{n} with the same text as {'a document' if n == 1 else 'documents'} under another id")
    return "; ".join([line, *extra])


def _say_interrupted(p, before: int) -> None:
    """What an interrupted add kept: every document committed before Ctrl-C stays, and a re-run continues."""
    try:
        count = p.collection.store.count()
        kept = f"{p.name} has {count} documents ({count - before:+d} by this run; finished ones are kept)"
    except Exception as exc:  # noqa: BLE001 - a count is a courtesy here; the message must still come
        log.debug("cannot count %s after the interrupt: %s", p.name, exc)
        kept = f"{p.name} keeps the documents finished before the interrupt"
    print(f"interrupted: {kept}; run the same command again to continue (finished documents are not embedded "
          "again)", file=sys.stderr)


def check_reranker(name: str, settings) -> None:
    """Refuse an ``index add --reranker`` that is not a loadable reranker, before it is stored as the
    collection's default (else every later search fails): its folder or hub id is resolved and its kind
    read from config.json, without loading weights.

    >>> check_reranker("/no/such/model", None)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: --reranker: /no/such/model: no such local model directory
    """
    from ..errors import QrankError
    from ..models.registry import model_kind

    try:
        model_kind(name, "reranker", settings.models if settings else None)
    except QrankError as exc:
        # the hub's reasons span lines; the user gets one
        raise InvalidInput("--reranker", " ".join(str(exc).split())) from None


def cmd_list(args: argparse.Namespace) -> int:
    from ..pipeline import list_collections

    # a corrupt collection is listed as such, never left out or shown as empty (docs/index.md)
    found = list_collections(settings_from_args(args), include_broken=True)
    if args.json:
        print_json([c.to_dict() for c in found])
        return 0
    if not found:
        print("no collections yet: create one with `qrank index add --collection NAME --embedder MODEL FILES`")
        return 0
    from rich.markup import escape
    from rich.table import Table

    table = Table("collection", "documents", "backend", "dim", "embedder", "reranker", "status")
    for c in found:
        status = "ok" if c.status == "ok" else f"[bold red]{c.status}[/]"
        table.add_row(escape(c.name), "-" if c.count is None else str(c.count), c.backend,
                      "-" if c.dim is None else str(c.dim), escape(c.embedder), escape(c.reranker or "-"), status)
    console = table_console()
    console.print(table)
    for c in found:
        if c.status != "ok":  # the whole reason, unclipped, and what to do (a store's server that is down: wait)
            hint = f"; see `qrank index check {c.name}`" if c.status == "corrupt" else ""
            console.print(f"{c.name}: {c.status}: {c.reason}{hint}", markup=False, highlight=False, soft_wrap=True)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..index.collection import Collection
    from ..long_documents import LongDocuments
    from ..pipeline import long_documents_info

    settings = settings_from_args(args)
    col = Collection.open(settings, args.collection)
    try:
        info = col.info()
        # what a search of it does with long passages: the reranker's policy of these settings (no model loads)
        info["long_documents"] = long_documents_info(col.manifest, LongDocuments.from_settings(settings.models))
    finally:
        col.close()
    if args.json:
        print_json(info)
        return 0
    emb = info["embedder"]
    if info["passage_tokens"] is None:  # a collection made before 2026-12-08: measured at its next add
        chunking = f"{info['chunk_tokens']} tokens (at most the embedder's window), overlap {info['chunk_overlap']}"
    else:
        capped = (f" (index.chunk_tokens {info['chunk_tokens']}, capped at the embedder's window)"
                  if info["chunk_tokens"] > info["passage_tokens"] else "")
        chunking = f"passages of at most {info['passage_tokens']} tokens, overlap {info['passage_overlap']}{capped}"
    lines = [
        f"collection  {info['name']}  ({info['path']})",
        f"documents   {info['count']}  (passages {info['passages']})",
        f"backend     {info['backend']}  index {info['store'].get('index')}",
        f"embedder    {emb.get('name')}  (dim {info['dim']}, revision {emb.get('revision')})",
        f"reranker    {info['reranker'] or '-'}",
        f"chunking    {chunking}",
        f"long docs   {info['long_documents']['summary']}",
        f"created     {info['created']}",
    ]
    print("\n".join(lines))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline

    from ..index.documents import few

    wanted = list(dict.fromkeys(args.ids))
    with Pipeline.open(args.collection, settings=settings_from_args(args), create=False) as p:
        known = p.collection.store.hashes([i for i in wanted if i])  # p.delete names a blank id
        deleted = p.delete(args.ids)
        count = p.collection.store.count()
    not_found = [i for i in wanted if i not in known]  # the key HTTP's delete reports them under
    if args.json:
        print_json({"collection": args.collection, "deleted": deleted, "not_found": not_found, "count": count})
    else:
        named = f"; not found: {few(not_found)}" if not_found else ""
        print(f"{args.collection}: deleted {deleted} of {len(wanted)} ids{named}; {count} documents left")
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    from ..pipeline import delete_collection

    delete_collection(args.collection, settings_from_args(args))
    print(f"dropped collection {args.collection}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ..index.check import check_collection

    report = check_collection(settings_from_args(args), args.collection, repair=args.repair)
    if args.json:
        print_json(report)
    else:
        if report["documents"] is None and report["problems"]:
            # unreadable: there is no document count to show, only why
            print(f"{args.collection}: NOT ok: {'; '.join(report['problems'])}")
            return 1
        for line in report["problems"]:
            print(f"problem: {line}")
        for line in report["repairs"]:
            print(f"repaired: {line}")
        print(f"{args.collection}: {'ok' if report['ok'] else 'NOT ok'} ({report['documents']} documents)")
    return 0 if report["ok"] else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..index.migrate import migrate_collection

    report = migrate_collection(settings_from_args(args), args.collection, args.to, keep_source=args.keep_source,
                                progress=not args.no_progress)
    if args.json:
        print_json(report)
    else:
        t = report["target"]
        where = f" ({t.get('uri')}, collection {t.get('milvus_collection')})" if args.to == "milvus" else ""
        print(
            f"{args.collection}: moved from {report['from']} to {report['to']}{where}: {report['documents']} documents "
            f"({report['passages']} passages) copied, {report['skipped']} already there; {t['documents']} documents in "
            f"the collection; old store {'kept' if report['source_kept'] else 'deleted'}"
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline

    settings = settings_from_args(args)
    with Pipeline.open(args.collection, reranker=args.reranker, settings=settings, create=False) as p:
        rerank = False if args.no_rerank else None
        hits = p.search(args.query, k=args.k, rerank=rerank, hybrid=args.hybrid, filter=parse_filter(args.filter),
                        reranker_instruction=args.reranker_instruction, query_task=args.query_task,
                        query_prompt=args.query_prompt, instruction=args.instruction, min_score=args.min_score)
        reranked = bool(hits) and hits[0].rerank_score is not None
        hint = filter_type_hint(p.collection.store, parse_filter(args.filter)) if not hits and args.filter else None
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    if args.json:
        print_json([h.to_dict() for h in hits])
        return 0
    if not hits:
        print("no results")
        return 0

    from .tables import hits_table

    stage = ("hybrid" if args.hybrid else "dense") + (" → reranked" if reranked else "")
    table_console().print(hits_table(hits, title=f"{args.collection}: {args.query}  ({stage})"))
    return 0


_HINT_SAMPLE = 200  # passages read from the start of the store for the filter hint (never the whole store)


def filter_type_hint(store, flt: dict | None, sample: int = _HINT_SAMPLE) -> str | None:
    """Why a filtered search may have found nothing: the first documents of the store hold a filtered key as
    text where the filter gives a number or a boolean (CSV/TSV columns are stored as text), or the other way.
    Only the first ``sample`` passages are read, so this is a hint, never a scan of the store.

    >>> from qrank.index.store import Passage
    >>> class Store:
    ...     def iter_passages(self):
    ...         return iter([Passage("a", 0, 0, "t", metadata={"year": "2019", "n": 3})])
    >>> print(filter_type_hint(Store(), {"year": [2020]}))
    metadata 'year' is stored as text here (e.g. "2019"; CSV/TSV columns are): write --filter 'year="2020"'
    >>> print(filter_type_hint(Store(), {"n": ["4"]}))
    metadata 'n' is stored as a number here (e.g. 3), not as the text "4": write --filter n=4
    >>> filter_type_hint(Store(), {"year": ["2020"], "n": [4, "x"]}) is None
    True
    """
    if not flt:
        return None
    stored: dict[str, object] = {}
    passages = store.iter_passages()
    try:
        for n, passage in enumerate(passages):
            if n >= sample or len(stored) == len(flt):
                break
            for key in flt:
                if key not in stored and passage.metadata.get(key) is not None:
                    stored[key] = passage.metadata[key]
    finally:
        close = getattr(passages, "close", None)  # a generator left early (Milvus pages through a query)
        if close is not None:
            close()
    for key, values in flt.items():
        if key not in stored:
            continue
        have = stored[key]
        shown = json.dumps(have, ensure_ascii=False)
        if isinstance(have, str):
            v = next((v for v in values if not isinstance(v, str)), None)
            if v is not None:
                return (f"metadata '{key}' is stored as text here (e.g. {shown}; CSV/TSV columns are): "
                        f"write --filter '{key}=\"{json.dumps(v)}\"'")
            continue
        kind = "a boolean" if isinstance(have, bool) else "a number" if isinstance(have, (int, float)) else None
        for v in values:
            if kind and isinstance(v, str) and _as_json(v, type(have)) is not None:
                return (f"metadata '{key}' is stored as {kind} here (e.g. {shown}), not as the text "
                        f"{json.dumps(v, ensure_ascii=False)}: write --filter {key}={v}")
    return None


def _as_json(text: str, kind: type):
    """``text`` read as JSON when that gives a value like ``kind`` (a number for int/float), else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if kind is bool:
        return value if isinstance(value, bool) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
