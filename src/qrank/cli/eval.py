"""``qrank eval``: quality and cost of BM25, dense, hybrid and reranked retrieval on a data set."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import InvalidInput
from .common import add_settings_flags, print_json, settings_from_args

log = logging.getLogger(__name__)

EPILOG = """\
data sets: a folder in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv) or your own:
corpus.jsonl ({"_id", "title", "text"}) or corpus.csv (id,title,text) plus queries.jsonl
({"query": "...", "relevant": ["doc-id", ...]}) or queries.csv (query,relevant with ids split by ';').

example:
  qrank eval --dataset ../shared/datasets/scifact --systems bm25,dense,hybrid,dense+rerank \\
      --embedder ../shared/models/all-MiniLM-L6-v2 --reranker ../shared/models/scifact-minilm-ce --out report/
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="measure retrieval quality (nDCG, recall, MRR, MAP) and cost of embedding-only vs reranked systems",
        description="Run retrieval systems on a data set with relevance judgements and write metrics.json, "
        "per-query results, run files, report.md and a quality-vs-latency plot. Finished stages are cached "
        "(under <home>/cache/eval) so a re-run computes only what changed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset", "-d", required=True, type=Path, help="data set folder (BEIR layout or your own, see below)"
    )
    p.add_argument("--split", default="test", help="qrels split of a BEIR data set (default: test)")
    p.add_argument(
        "--systems",
        "-s",
        default="bm25,dense,hybrid,dense+rerank",
        help="comma-separated: bm25, dense, hybrid, and any of them +rerank (default: %(default)s)",
    )
    p.add_argument("--embedder", "-e", help="embedding model for dense/hybrid (folder or hub id)")
    p.add_argument("--reranker", "-r", help="reranker for the +rerank systems (folder or hub id)")
    p.add_argument(
        "--depth", type=int, default=100, help="first-stage candidates reranked, and the recall cut-off (default: 100)"
    )
    p.add_argument("--k", type=int, default=10, help="cut-off of nDCG and MRR (default: 10)")
    p.add_argument(
        "--sweep",
        default="10,20,50,100,200",
        help="reranking depths to compare, comma-separated, or 'none' (default: %(default)s)",
    )
    p.add_argument(
        "--sweep-queries",
        type=int,
        default=20,
        help="queries timed at each sweep depth (quality always uses all; default: 20)",
    )
    p.add_argument(
        "--latency-queries",
        type=int,
        default=None,
        help="queries whose reranking is timed (the others are scored through the cache, untimed; default: all)",
    )
    p.add_argument("--max-queries", type=int, default=None, help="evaluate only the first N judged queries")
    p.add_argument(
        "--max-docs",
        type=int,
        default=None,
        help="shrink the corpus to N documents: every judged one of the kept queries plus a seeded random sample",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-docs sample (default: 0)")
    p.add_argument(
        "--test",
        choices=["student", "fisher"],
        default="student",
        help="paired significance test: student (t-test) or fisher (randomization) (default: student)",
    )
    p.add_argument("--out", "-o", type=Path, default=None, help="report folder (default: <home>/eval/<dataset>)")
    p.add_argument("--cache-dir", type=Path, default=None, help="stage cache (default: <home>/cache/eval)")
    p.add_argument("--no-cache", action="store_true", help="recompute every stage (and do not save them)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print metrics.json to stdout instead of a table")
    p.add_argument("--home", type=Path, default=None, help="qrank data folder (default: $QRANK_HOME or ~/.qrank)")
    add_settings_flags(p, "models", ["device", "dtype", "max_length", "quantization"])
    add_settings_flags(p, "engine", ["engine", "max_batch_tokens", "num_threads"])
    add_settings_flags(p, "index", ["rrf_k"])
    p.set_defaults(func=cmd_eval)


def parse_sweep(text: str) -> list[int]:
    """``"10,20,50"`` → ``[10, 20, 50]``; ``"none"`` or ``""`` → ``[]``.

    >>> parse_sweep("50, 10")
    [10, 50]
    """
    if text.strip().lower() in ("", "none"):
        return []
    try:
        depths = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as exc:
        raise InvalidInput("sweep", f"must be comma-separated integers or 'none', got {text!r}") from exc
    if any(d < 1 for d in depths):
        raise InvalidInput("sweep", "depths must be positive")
    return depths


def cmd_eval(args: argparse.Namespace) -> int:
    from ..eval.data import load_dataset, subset
    from ..eval.report import write_report
    from ..eval.runner import EvalConfig, Evaluation

    settings = settings_from_args(args)
    if settings.engine.num_threads:
        from ..models.base import set_torch_threads

        set_torch_threads(settings.engine.num_threads)
    config = EvalConfig(
        systems=args.systems,
        embedder=args.embedder,
        reranker=args.reranker,
        depth=args.depth,
        k=args.k,
        sweep=parse_sweep(args.sweep),
        sweep_queries=args.sweep_queries,
        latency_queries=args.latency_queries,
        test=args.test,
        bm25_stopwords=getattr(settings.index, "bm25_stopwords", "en"),
    )
    dataset = load_dataset(args.dataset, split=args.split)
    if args.max_queries is not None or args.max_docs is not None:
        dataset = subset(dataset, max_queries=args.max_queries, max_docs=args.max_docs, seed=args.seed)
    out = args.out or settings.home / "eval" / dataset.name
    if out.exists() and not out.is_dir():
        raise InvalidInput("out", f"{out} exists and is not a folder")
    evaluation = Evaluation(
        dataset, config, settings, cache_dir=args.cache_dir, use_cache=not args.no_cache, progress=not args.no_progress
    )
    result = evaluation.run()
    paths = write_report(result, out)
    if args.json:
        print_json(result["systems"])
        return 0
    _print_table(result, paths)
    return 0


def _print_table(result: dict, paths: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    names = result["metric_names"]
    ds = result["dataset"]
    table = Table(title=f"{ds['name']}: {ds['queries']} queries, {ds['documents']} documents", title_justify="left")
    table.add_column("system")
    for m in names:
        table.add_column(m, justify="right")
    for col in ("p50 ms", "p99 ms", "QPS", "index s"):
        table.add_column(col, justify="right")
    table.add_column("cached")
    for system, v in result["systems"].items():
        table.add_row(
            system,
            *(f"{v[m]:.4f}" for m in names),
            *(
                f"{v[c]:.1f}" if v.get(c) is not None else "–"
                for c in ("latency_p50_ms", "latency_p99_ms", "throughput_qps", "index_time_s")
            ),
            "yes" if v["cached"] else "no",
        )
    console = Console()
    console.print(table)
    console.print(f"report: {paths['report']}  metrics: {paths['metrics']}  plot: {paths['plot']}")
