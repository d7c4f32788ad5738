"""``qrank rerank``, ``qrank embed`` and ``qrank models``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InvalidInput
from ..long_documents import scored_part
from .common import add_settings_flags, print_json, settings_from_args, table_console

# the long-document settings (qrank.long_documents) as flags: --long-documents chunk --chunk-tokens 256 …
LONG_DOCUMENT_FLAGS = ["long_documents", "chunk_tokens", "chunk_overlap", "chunk_aggregate", "chunk_top_k",
                       "max_chars_per_document", "max_chunks_per_document", "max_chunks_per_request"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rerank",
        help="rerank documents for a query",
        description="Score documents against a query and print them best first. Documents come from "
        "--documents FILE (one per line, or JSONL with a 'text' field; '-' = stdin) and/or positional args.",
    )
    p.add_argument(
        "--model", "-m", required=True, help="reranker: local folder or hub id (e.g. Qwen/Qwen3-Reranker-0.6B)"
    )
    p.add_argument("--query", "-q", required=True, help="the query")
    p.add_argument("--documents", "-d", metavar="FILE", help="file of documents: one per line, or .jsonl with 'text'")
    p.add_argument("docs", nargs="*", metavar="DOC", help="documents given inline")
    p.add_argument("--top-n", "-n", type=int, default=None, help="keep the best N (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--min-score", type=float, default=None,
                   help="leave out documents scoring below this (P(relevant) with --calibrated)")
    p.add_argument("--raw-scores", action="store_true",
                   help="also show each document's raw score (the uncalibrated score, or the logit of a probability)")
    add_settings_flags(p, "models", ["device", "dtype", "max_length", "reranker_instruction", "quantization",
                                     "quantization_check", "quantization_fast_accumulation",
                                     "quantization_fp8_attention", "calibrated"])
    add_settings_flags(p, "models", LONG_DOCUMENT_FLAGS)
    # on this command the old flag can only mean the reranker's instruction, so it stays as a plain alias
    p.add_argument("--instruction", dest="models__reranker_instruction", metavar="RERANKER_INSTRUCTION",
                   help="same as --reranker-instruction")
    add_settings_flags(p, "engine", ["engine", "max_batch_tokens", "deterministic"])
    p.set_defaults(func=cmd_rerank)

    e = sub.add_parser("embed", help="embed texts", description="Print L2-normalised embeddings of the given texts.")
    e.add_argument(
        "--model", "-m", required=True, help="embedder: local folder or hub id (e.g. Qwen/Qwen3-Embedding-0.6B)"
    )
    e.add_argument("--query", action="store_true",
                   help="the texts are queries (applies the query task or prompt: --query-task, --query-prompt)")
    e.add_argument("--dim", type=int, default=None, help="output dimension (Matryoshka truncation + renormalisation)")
    e.add_argument("--json", action="store_true", help="print the full vectors as JSON")
    e.add_argument("texts", nargs="+", metavar="TEXT")
    add_settings_flags(e, "models", ["device", "dtype", "max_length", "query_task", "query_prompt", "instruction",
                                     "quantization", "quantization_check", "quantization_fast_accumulation",
                                     "quantization_fp8_attention"])
    add_settings_flags(e, "engine", ["engine", "max_batch_tokens", "deterministic"])
    e.set_defaults(func=cmd_embed)

    m = sub.add_parser(
        "models",
        help="list models loadable locally",
        description="List model folders qrank can load "
        "(under QRANK_HOME/models, the folders configured as the server's models "
        "(QRANK_SERVER__RERANKERS / __EMBEDDERS), the Hugging Face cache, and any PATH given) with their kind.",
    )
    m.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="extra folders to search")
    m.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    m.add_argument("--verbose", "-v", action="store_true", help="load each model (offline, with the settings below) "
                   "and show what its engine decided: attention, compile, CUDA graphs, first chunk, fallbacks")
    add_settings_flags(m, "models", ["device", "dtype"])
    add_settings_flags(m, "engine", ["engine", "attention", "long_row_attention", "compile", "cuda_graphs",
                                     "max_batch_tokens", "deterministic"])
    m.add_argument("--home", type=Path, default=None, help="qrank data folder (default: $QRANK_HOME or ~/.qrank)")
    m.set_defaults(func=cmd_models)


def read_documents(path: str | None, inline: list[str]) -> list[str]:
    """Documents from a file (lines, or JSONL: 'text' and an optional string 'title') plus inline ones; blank
    lines are skipped.

    >>> read_documents(None, ["vitamin d", "cats"])
    ['vitamin d', 'cats']
    """
    docs: list[str] = []
    from_file = 0
    if path:
        if path == "-":
            raw = sys.stdin.read()
        else:
            try:
                raw = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidInput("documents", f"cannot read {path}: {exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise InvalidInput("documents", f"{path} is not UTF-8 text") from exc
        jsonl = path.endswith(".jsonl")
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            if jsonl:
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise InvalidInput("documents", f"{path}:{n} is not valid JSON") from exc
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise InvalidInput("documents", f"{path}:{n} has no string 'text' field")
                title = obj.get("title")
                if title is not None and not isinstance(title, str):
                    raise InvalidInput("documents", f"{path}:{n} has a 'title' that is not a string "
                                       f"(got {type(title).__name__} {_clip(json.dumps(title), 40)})")
                docs.append(((obj.get("title") or "") + " " + obj["text"]).strip())
            else:
                docs.append(line)
        from_file = len(docs)
        if not from_file and not inline:
            where = "standard input" if path == "-" else path
            raise InvalidInput("documents", f"{where} is empty (no non-blank lines): put one document per line")
    docs.extend(inline)
    if not docs:
        raise InvalidInput("documents", "give documents with --documents FILE or as arguments")
    return docs


def cmd_rerank(args: argparse.Namespace) -> int:
    from ..reranker import Reranker

    settings = settings_from_args(args)
    docs = read_documents(args.documents, args.docs)
    rr = Reranker.from_pretrained(args.model, settings=settings)
    results = rr.rerank(args.query, docs, top_n=args.top_n, min_score=args.min_score, return_raw_scores=args.raw_scores)
    if args.json:
        print_json({"model": rr.info.id, "query": args.query, "results": [r.to_dict() for r in results]})
        return 0
    from rich.table import Table

    table = Table(title=f"{rr.info.id} ({rr.info.kind}) — {args.query}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    if args.raw_scores:
        table.add_column("raw", justify="right")
    table.add_column("was", justify="right")
    table.add_column("moved", justify="right")
    table.add_column("scored", justify="right")  # never silent: a cut or a chunked document says so
    table.add_column("document", overflow="fold")
    for rank, r in enumerate(results):
        moved = r.index - rank
        raw = [f"{r.raw_score:.4f}"] if args.raw_scores else []
        table.add_row(str(rank + 1), f"{r.score:.4f}", *raw, str(r.index + 1), f"{moved:+d}" if moved else "=",
                      scored_part(r), _clip(r.document or ""))
    table_console().print(table)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from ..embedder import Embedder

    settings = settings_from_args(args)
    em = Embedder.from_pretrained(args.model, settings=settings)
    vectors = em.embed(args.texts, is_query=args.query, dim=args.dim)
    if args.json:
        print_json({"model": em.info.id, "dim": int(vectors.shape[1]), "embeddings": vectors.tolist()})
        return 0
    for text, vec in zip(args.texts, vectors):
        head = ", ".join(f"{x:+.4f}" for x in vec[:6])
        print(f"{_clip(text, 40)!r}: dim={vec.shape[0]} [{head}, …]")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..models.registry import list_local_models

    roots = model_roots(settings_from_args(args), args.paths)
    found = list_local_models(roots)
    found += _hub_cache_models()
    if args.verbose:
        found = [{**m, "engine": _engine_of(m, settings_from_args(args))} for m in found]
    if args.json:
        print_json(found)
        return 0
    if not found:
        print("no local models found (searched: " + ", ".join(map(str, roots)) + " and the Hugging Face cache)")
        return 0
    from rich.table import Table

    table = Table("kind", "role", "model", *(["engine"] if args.verbose else []))
    for m in found:
        table.add_row(m["kind"], m["role"], m["path"], *([_engine_text(m["engine"])] if args.verbose else []))
    table_console().print(table)
    return 0


def _engine_of(found: dict, settings) -> dict | None:
    """``ModelInfo.extra["engine"]`` of a listed model, loaded offline (None: its backend has no engine)."""
    from ..models.registry import load_model

    models = settings.models.model_copy(update={"local_files_only": True})
    extra = load_model(found["path"], found["role"], models, settings.engine).info.extra
    if extra.get("deterministic"):  # a backend without an engine (encoders) still says so
        return {**(extra.get("engine") or {}), "deterministic": True}
    return extra.get("engine")


def _engine_text(engine: dict | None) -> str:
    """
    >>> _engine_text({"engine": "fast", "attention": "sdpa", "fallbacks": ["x"]})
    'engine=fast attention=sdpa fallbacks=x'
    >>> _engine_text(None)
    '-'
    """
    if not engine:
        return "-"
    return " ".join(f"{k}={'; '.join(v) if isinstance(v, list) else v}" for k, v in engine.items() if v != [])


def model_roots(settings, extra: list[Path] = ()) -> list[Path]:
    """Where ``qrank models`` looks: ``<home>/models``, each local folder the settings name as a model
    (``server.rerankers`` / ``server.embedders``), then ``extra``.

    >>> from qrank.settings import Settings
    >>> [p.as_posix() for p in model_roots(Settings(home="/h", server={"rerankers": ["/no/such/ce", "org/hub-id"]}))]
    ['/h/models']
    """
    configured = [Path(s).expanduser() for s in (*settings.server.rerankers, *settings.server.embedders)]
    return [settings.home / "models", *(p for p in configured if p.is_dir()), *extra]


def _hub_cache_models() -> list[dict]:
    """Models already in the Hugging Face cache (loadable offline by their hub id)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from ..models.registry import list_local_models

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    found = []
    for repo in cache.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            for m in list_local_models([Path(rev.snapshot_path)]):
                found.append({**m, "path": repo.repo_id})
            break
    return found


def _clip(text: str, n: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
