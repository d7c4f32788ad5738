"""``qrank eval``: quality and cost of BM25, dense, hybrid and reranked retrieval on a data set."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import InvalidInput
from ..eval.config import DEFAULT_DEPTH
from .common import add_settings_flags, print_json, settings_from_args, table_console

log = logging.getLogger(__name__)

EPILOG = """\
data sets: a folder in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv) or your own:
corpus.jsonl ({"_id", "title", "text"}) or corpus.csv (id,title,text) plus queries.jsonl
({"query": "...", "relevant": ["doc-id", ...]}) or queries.csv (query,relevant with ids split by ';').

cost: before the work starts, qrank eval prints what it will compute (texts to embed, pairs to score) and
an estimated time. The defaults (--depth 20, sweep 10,20) finish in minutes on a laptop CPU: on SciFact
(300 queries, 5,183 abstracts) about 10 minutes on 2 CPU cores, most of it embedding the corpus once.
--depth 100 --sweep 10,20,50,100 (the published comparison) takes over half an hour on 2 cores, and
adding depth 200 to the sweep about an hour; --max-queries N makes any run smaller. Finished stages are
cached: a re-run costs seconds.

example:
  qrank eval --dataset ../shared/datasets/scifact --systems bm25,dense,hybrid,dense+rerank \\
      --embedder ../shared/models/all-MiniLM-L6-v2 --reranker ../shared/models/scifact-minilm-ce
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
        "--depth",
        type=int,
        default=DEFAULT_DEPTH,
        help="first-stage candidates reranked, and the recall cut-off (default: %(default)s; 100 is ~5x the work)",
    )
    p.add_argument("--k", type=int, default=10, help="cut-off of nDCG and MRR (default: 10)")
    p.add_argument(
        "--sweep",
        default=None,
        help="reranking depths to compare, comma-separated, or 'none' (default: 10,20,50,100,200 up to --depth, "
        "and --depth itself; depths beyond --depth only when given here)",
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
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the --max-docs sample and of the --calibrate split (default: 0)"
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="fit the reranker's score → P(relevant) map (Platt or isotonic, by cross-validation) on half the "
        "queries, report its reliability on the other half, and save it under <home>/calibration/",
    )
    p.add_argument(
        "--long-documents",
        metavar="POLICIES",
        default=None,
        help="compare long-document policies on every +rerank system, comma-separated POLICY[:AGGREGATE][@N]: "
        "truncate, error, chunk:max, chunk:mean_top_k, chunk:first (e.g. truncate,chunk:max); @N first cuts each "
        "document to N tokens (Cohere's max_tokens_per_doc: truncate,truncate@128 measures what it costs); each is a "
        "system dense+rerank[chunk:max] with its pairs scored and coverage (share of document tokens the model "
        "saw). Chunk sizes: --chunk-tokens, --chunk-overlap, --chunk-top-k",
    )
    p.add_argument(
        "--test",
        choices=["student", "fisher"],
        default="student",
        help="paired significance test: student (t-test) or fisher (randomization) (default: student)",
    )
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        default=None,
        help="report folder (default: a new <home>/reports/<dataset>-<time>, where `qrank ui` finds it)",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="stage cache (default: <home>/cache/eval)")
    p.add_argument("--no-cache", action="store_true", help="recompute every stage (and do not save them)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print metrics.json to stdout instead of a table")
    p.add_argument("--home", type=Path, default=None, help="qrank data folder (default: $QRANK_HOME or ~/.qrank)")
    add_settings_flags(p, "models", ["device", "dtype", "max_length", "quantization", "chunk_tokens",
                                     "chunk_overlap", "chunk_top_k"])
    add_settings_flags(p, "engine", ["engine", "max_batch_tokens", "num_threads", "deterministic"])
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
    from ..eval.report import new_report_dir, write_report
    from ..eval.config import EvalConfig
    from ..eval.runner import Evaluation

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
        sweep=None if args.sweep is None else parse_sweep(args.sweep),
        sweep_queries=args.sweep_queries,
        latency_queries=args.latency_queries,
        test=args.test,
        bm25_stopwords=getattr(settings.index, "bm25_stopwords", "en"),
        calibrate=args.calibrate,
        calibration_seed=args.seed,
        long_documents=args.long_documents,
    )
    dataset = load_dataset(args.dataset, split=args.split)
    if args.max_queries is not None or args.max_docs is not None:
        dataset = subset(dataset, max_queries=args.max_queries, max_docs=args.max_docs, seed=args.seed)
    out = args.out or new_report_dir(settings.home, dataset.name)
    if out.exists() and not out.is_dir():
        raise InvalidInput("out", f"{out} exists and is not a folder")
    evaluation = Evaluation(
        dataset, config, settings, cache_dir=args.cache_dir, use_cache=not args.no_cache, progress=not args.no_progress
    )
    _print_plan(evaluation.plan())
    result = evaluation.run()
    paths = write_report(result, out)
    if args.calibrate:
        from ..calibration import Calibration

        saved = Calibration.from_dict(result["calibration"]["map"]).save(Path(result["calibration"]["path"]))
        log.info("calibration map saved to %s", saved)
    if args.json:
        print_json(result["systems"])
        return 0
    _print_table(result, paths)
    return 0


def _print_plan(plan: dict) -> None:
    """Say on stderr what the run will compute and about how long it takes, before it starts."""
    from rich.console import Console

    pairs = plan["pairs_timed"] + plan["pairs_untimed"]
    if not plan["texts_to_embed"] and not pairs:
        text = "plan: nothing to embed or rerank (no model stage, or all of it cached)"
    else:
        minutes = plan["cpu_seconds"] / 60
        duration = "under a minute" if minutes < 1 else f"about {minutes:.0f} min"
        text = (
            f"plan: embed {plan['texts_to_embed']:,} texts, rerank up to {pairs:,} (query, document) pairs "
            f"({plan['pairs_timed']:,} timed); {duration} on 2 CPU cores at "
            f"{plan['embed_per_s']:.0f} texts/s and {plan['rerank_per_s']:.0f} pairs/s (the shared MiniLM models; "
            "larger models are slower, a GPU much faster). Smaller: --depth, --max-queries; cached stages cost nothing."
        )
    Console(stderr=True, soft_wrap=True).print(text, highlight=False, markup=False)


def _print_table(result: dict, paths: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    names = result["metric_names"]
    ds = result["dataset"]
    # names as plain text, never markup: rich read the policy in "dense+rerank[truncate@64]" as a style tag and
    # printed every policy's row as "dense+rerank"
    table = Table(title=Text(f"{ds['name']}: {ds['queries']} queries, {ds['documents']} documents"),
                  title_justify="left")
    table.add_column("system")
    for m in names:
        table.add_column(m, justify="right")
    for col in ("p50 ms", "p99 ms", "QPS", "index s"):
        table.add_column(col, justify="right")
    table.add_column("cached")
    long = any("long_documents" in v for v in result["systems"].values())
    if long:  # what each long-document policy cost and showed the model
        table.add_column("pairs", justify="right")
        table.add_column("coverage", justify="right")
    for system, v in result["systems"].items():
        ld = v.get("long_documents")
        cells = ([f"{ld['pairs']:,}", f"{ld['coverage']:.0%}"] if ld else ["–", "–"]) if long else []
        table.add_row(
            Text(system),
            *(f"{v[m]:.4f}" for m in names),
            *(
                f"{v[c]:.1f}" if v.get(c) is not None else "–"
                for c in ("latency_p50_ms", "latency_p99_ms", "throughput_qps", "index_time_s")
            ),
            "yes" if v["cached"] else "no",
            *cells,
        )
    console = table_console()
    console.print(table)
    console.print(f"report: {paths['report']}  metrics: {paths['metrics']}  plot: {paths['plot']}", markup=False)
    if result.get("calibration"):
        cal, held = result["calibration"], result["calibration"]["held_out"]
        raw = f"{held['raw']['ece']:.4f}" if held["raw"] else "–"
        console.print(
            f"calibration ({cal['method']}): held-out ECE {raw} raw → {held['calibrated']['ece']:.4f} calibrated; "
            f"map saved to {cal['path']}  reliability plot: {paths['reliability_plot']}", markup=False
        )
