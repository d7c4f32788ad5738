"""What ``qrank eval`` writes: ``metrics.json``, per-query results, run files, ``report.md`` and a plot.

>>> import tempfile
>>> from qrank.eval.data import load_dataset
>>> from qrank.eval.config import EvalConfig
>>> from qrank.eval.runner import Evaluation
>>> from qrank.settings import Settings
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "corpus.jsonl").write_text('{"_id": "d1", "text": "BM25 ranks documents"}\\n'
...                                     '{"_id": "d2", "text": "cats"}\\n')
>>> _ = (d / "queries.jsonl").write_text('{"query": "what is bm25", "relevant": ["d1"]}\\n')
>>> config = EvalConfig(["bm25"], depth=2, k=2, sweep=[2])
>>> result = Evaluation(load_dataset(d), config, Settings(home=d), progress=False).run()
>>> sorted(write_report(result, d / "report"))
['config', 'metrics', 'per_query', 'plot', 'report', 'runs', 'significance', 'sweep']
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

from ..errors import require
from ..fileio import atomic_write, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

PLOT_NAME = "quality_vs_latency.png"
COST_COLUMNS = [
    ("latency_p50_ms", "p50 ms"),
    ("latency_p99_ms", "p99 ms"),
    ("throughput_qps", "QPS"),
    ("index_time_s", "index s"),
    ("peak_rss_mb", "peak RSS MB"),
]


REPORTS_DIR = "reports"  # under QRANK_HOME: where `qrank eval` writes and `qrank ui` looks, by default


def reports_root(home: Path) -> Path:
    """The folder holding the reports of ``qrank eval`` runs that gave no ``--out``: ``<home>/reports``.

    >>> reports_root(Path("/data/qrank")).as_posix()
    '/data/qrank/reports'
    """
    return Path(home).expanduser() / REPORTS_DIR


def new_report_dir(home: Path, dataset: str, when: float | None = None) -> Path:
    """A fresh report folder ``<home>/reports/<dataset>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``… if taken), so
    runs never overwrite each other and the newest sorts last.

    >>> new_report_dir(Path("/nonexistent"), "scifact", when=0).name
    'scifact-19700101-000000'
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if when is None else when))
    base = reports_root(home) / f"{safe_name(dataset)}-{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def write_report(result: dict, out: Path) -> dict[str, str]:
    """Write every output file of an evaluation into ``out`` and return their paths by kind.

    ``result`` is what :meth:`qrank.eval.runner.Evaluation.run` returns: ``config``, ``dataset``,
    ``metric_names``, ``systems`` ({name: metrics + costs}), ``per_query``, ``rankings``, ``sweep``,
    ``significance``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "per_query": out / "per_query.csv",
        "sweep": out / "sweep.json",
        "significance": out / "significance.json",
        "config": out / "run_config.json",
        "plot": out / PLOT_NAME,
        "report": out / "report.md",
    }
    # a report interrupted mid-write must not leave a half file that looks complete: every file is atomic
    atomic_write_json(paths["metrics"], result["systems"], indent=2)
    atomic_write_json(paths["sweep"], result["sweep"], indent=2)
    atomic_write_json(paths["significance"], result["significance"], indent=2)
    atomic_write_json(
        paths["config"],
        {"config": result["config"], "dataset": result["dataset"], "environment": result.get("environment", {})},
        indent=2,
    )
    _write_per_query(paths["per_query"], result["per_query"])
    runs_dir = out / "runs"
    runs_dir.mkdir(exist_ok=True)
    for name, ranking in result["rankings"].items():
        _write_trec(runs_dir / f"{safe_name(name)}.trec", ranking, name)
    plot_quality_latency(result, paths["plot"])
    if result.get("calibration"):  # qrank eval --calibrate
        from .calibration_report import PLOT_NAME as RELIABILITY, plot_reliability

        paths |= {"calibration": out / "calibration.json", "reliability_plot": out / RELIABILITY}
        atomic_write_json(paths["calibration"], result["calibration"], indent=2)
        plot_reliability(result["calibration"], paths["reliability_plot"], result["dataset"]["name"])
    atomic_write_text(paths["report"], render_markdown(result, PLOT_NAME))
    return {k: str(v) for k, v in paths.items()} | {"runs": str(runs_dir)}


def safe_name(system: str) -> str:
    """A file name for a system name.

    >>> safe_name("dense+rerank")
    'dense+rerank'
    >>> safe_name("a/b")
    'a_b'
    """
    return "".join(c if c.isalnum() or c in "+-_." else "_" for c in system)


# -------------------------------------------------------------------------------------------- markdown


def render_markdown(result: dict, plot_name: str = PLOT_NAME) -> str:
    """The human report: set-up, the quality/cost table, the depth sweep, significance, the plot."""
    cfg, ds, names = result["config"], result["dataset"], result["metric_names"]
    env = result.get("environment", {})
    lines = [
        f"# qrank eval — {ds['name']}",
        "",
        f"- data set: `{ds['source']}` — {ds['documents']} documents, {ds['queries']} queries, "
        f"{ds['judgements']} relevance judgements",
        f"- embedder: `{cfg.get('embedder')}`; reranker: `{cfg.get('reranker')}`",
        f"- candidates reranked (depth): {cfg['depth']}; cut-off k: {cfg['k']}; document text: title + \" \" + text",
        f"- machine: {env.get('device', '?')}, {env.get('cpu_count', '?')} CPU cores, torch threads "
        f"{env.get('torch_threads', '?')}, load average {env.get('load_average_1m', '?')} at the end; "
        f"qrank {env.get('qrank', '?')}",
        f"- numerics: dtype {env.get('dtype', '?')}, quantization {env.get('quantization', '?')}, "
        f"deterministic {env.get('deterministic', '?')}",
        *data_notes(ds.get("notes") or {}),
        "",
        "## Quality and cost",
        "",
    ]
    header = ["system", *names, *(c[1] for c in COST_COLUMNS)]
    rows = []
    for system, vals in result["systems"].items():
        rows.append(
            [f"`{system}`", *(_fmt(vals.get(m), 4) for m in names), *(_fmt(vals.get(c), 1) for c, _ in COST_COLUMNS)]
        )
    lines += _table(header, rows)
    lines += _long_documents_table(result)
    lines += [
        "",
        "Latency is measured one query at a time (embed the query, search, rerank the candidates), as a "
        "single user would see it; QPS = queries / total time of that loop. Index time is building the "
        "system's index over the corpus (encoding the corpus for dense systems; reranking needs none of its "
        "own). Peak RSS is the whole process's resident memory at its highest while the system ran, so it "
        "includes every model loaded before it.",
        "",
        f"![quality vs latency]({plot_name})",
        "",
    ]
    if any(result["sweep"].values()):
        lines += [
            "## Reranking depth",
            "",
            "Quality when the reranker sees only the first *d* candidates of the "
            "first stage (scores come from one reranking of the deepest list; latency is measured per depth).",
            "",
        ]
        for system, points in result["sweep"].items():
            if not points:
                continue
            lines += [f"### `{system}`", ""]
            sweep_rows = [
                [
                    str(p["depth"]),
                    *(_fmt(p.get(m), 4) for m in names),
                    _fmt(p.get("latency_p50_ms"), 1),
                    _fmt(p.get("latency_p99_ms"), 1),
                ]
                for p in points
            ]
            lines += _table(["depth", *names, "p50 ms", "p99 ms"], sweep_rows)
            best = max(points, key=lambda p: p[names[0]])
            # 0.005: below what a benchmark of a few hundred queries can tell apart, so "as good" in practice
            within = min((p for p in points if p[names[0]] >= best[names[0]] - 0.005), key=lambda p: p["depth"])
            lines += [
                "",
                f"{names[0]} peaks at depth {best['depth']} ({best[names[0]]:.4f}); depth {within['depth']} "
                f"is within 0.005 of it ({within[names[0]]:.4f}).",
                "",
            ]
    sig = result["significance"]
    if sig.get("pairs"):
        test = {"student": "two-sided paired t-test", "fisher": "Fisher's randomization test"}[sig["test"]]
        lines += [
            "## Significance",
            "",
            f"{test} over queries (ranx.compare); significant when p < {sig['max_p']}. "
            "W/T/L = queries where the first system wins / ties / loses.",
            "",
        ]
        sig_rows = [
            [
                f"`{p['a']}` vs `{p['b']}`",
                p["metric"],
                f"{p['mean_a']:.4f} vs {p['mean_b']:.4f}",
                "n/a" if p["p_value"] is None else f"{p['p_value']:.4g}",
                "yes" if p["significant"] else "no",
                f"{p['wins']}/{p['ties']}/{p['losses']}",
            ]
            for p in sig["pairs"]
        ]
        lines += _table(["pair", "metric", "means", "p", "significant", "W/T/L"], sig_rows)
        lines.append("")
    if result.get("calibration"):
        from .calibration_report import markdown as calibration_markdown

        lines += calibration_markdown(result["calibration"])
    lines += [
        "## Files",
        "",
        "- `metrics.json` — the table above, one object per system",
        "- `per_query.csv` — every metric for every query and system",
        "- `runs/<system>.trec` — the rankings in TREC run format",
        "- `sweep.json`, `significance.json`, `run_config.json`",
        "",
    ]
    return "\n".join(lines)


def data_notes(notes: dict) -> list[str]:
    """The report's lines for :meth:`qrank.eval.data.Dataset.notes`: what the figures must be read with.

    >>> unknown, skipped = data_notes({
    ...     "unknown_judged_docs": {"judgements": 3, "relevant": 2, "documents": 3, "queries": 2,
    ...                             "examples": {"q1": ["d9", "d10"], "q7": ["x"]}},
    ...     "skipped_queries": {"count": 1, "reason": "empty judgement list", "examples": ["q3"]}})
    >>> print(unknown[:108])
    - **note:** 3 judgements (2 relevant) in 2 queries name 3 documents that are not in the corpus (q1: d9, d10;
    >>> print(skipped)
    - **note:** 1 query skipped, not evaluated: empty judgement list (q3)
    """
    out = []
    unknown = notes.get("unknown_judged_docs")
    if unknown:
        examples = "; ".join(f"{q}: {', '.join(ids)}" for q, ids in unknown["examples"].items())
        more = ", …" if unknown["queries"] > len(unknown["examples"]) else ""
        out.append(
            f"- **note:** {_n(unknown['judgements'], 'judgement')} ({unknown['relevant']} relevant) in "
            f"{_n(unknown['queries'], 'query', 'queries')} name {_n(unknown['documents'], 'document')} that "
            f"{'is' if unknown['documents'] == 1 else 'are'} not in the corpus ({examples}{more}); the relevant "
            "ones count as documents never found, which lowers recall and nDCG: check the ids"
        )
    skipped = notes.get("skipped_queries")
    if skipped:
        more = ", …" if skipped["count"] > len(skipped["examples"]) else ""
        out.append(
            f"- **note:** {_n(skipped['count'], 'query', 'queries')} skipped, not evaluated: {skipped['reason']} "
            f"({', '.join(skipped['examples'])}{more})"
        )
    return out


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _long_documents_table(result: dict) -> list[str]:
    """Per long-document policy (``--long-documents``): documents, pairs scored, tokens seen, coverage."""
    rows = [[f"`{system}`", str(ld["documents"]), f"{ld['pairs']:,}", f"{ld['tokens_seen']:,} / {ld['tokens']:,}",
             f"{ld['coverage']:.1%}"]
            for system, v in result["systems"].items() if (ld := v.get("long_documents"))]
    if not rows:
        return []
    return ["", "### Long documents", "",
            *_table(["system", "documents reranked", "pairs scored", "document tokens seen", "coverage"], rows), "",
            "Pairs scored: (query, window) pairs the reranker scored for the top-depth candidates (a chunked "
            "document is one pair per chunk). Coverage: the share of those documents' tokens inside some scored "
            "window (truncate sees only the first window's worth)."]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _fmt(v, digits: int) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}"


# ------------------------------------------------------------------------------------------------ plot


def plot_quality_latency(result: dict, path: Path) -> None:
    """nDCG (first metric) against p50 latency, one point per system and a line per depth sweep."""
    require("matplotlib", "eval")
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    metric = result["metric_names"][0]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)  # 840x540 px: readable inline in report.md
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (system, vals) in enumerate(result["systems"].items()):
        color = colors[i % len(colors)]
        # a reranked system's sweep: the same system at other depths, in its colour
        pts = [p for p in result["sweep"].get(system, []) if p.get("latency_p50_ms")]
        if len(pts) > 1:
            ax.plot([p["latency_p50_ms"] for p in pts], [p[metric] for p in pts], "--", color=color, alpha=0.5, lw=1)
            for p in pts:
                ax.annotate(
                    f"d={p['depth']}",
                    (p["latency_p50_ms"], p[metric]),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=7,
                    color=color,
                )
        x, y = vals.get("latency_p50_ms"), vals.get(metric)
        if x is not None and y is not None:
            # named in the legend, not beside the point: systems of near-equal quality and latency (the policies of
            # one reranker) wrote their names over each other
            ax.scatter([x], [y], s=40, color=color, zorder=2, label=system)
    if ax.get_legend_handles_labels()[0]:
        # the lower right holds slow and poor systems, rarely any
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    ax.set_xscale("log")
    ax.set_xlabel("latency per query, p50 (ms, log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"{result['dataset']['name']}: quality vs latency")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------------------- files


def _write_per_query(path: Path, per_query: dict) -> None:
    metrics = sorted({m for vals in per_query.values() for m in vals})
    rows = []
    for system, vals in per_query.items():
        qids = list(next(iter(vals.values()), {}))
        for qid in qids:
            rows.append([system, qid, *(f"{vals[m][qid]:.6f}" if m in vals else "" for m in metrics)])
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["system", "query_id", *metrics])
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _write_trec(path: Path, ranking: dict, name: str) -> None:
    lines = [
        f"{qid} Q0 {doc} {rank} {score:.6f} {safe_name(name)}"
        for qid, hits in ranking.items()
        for rank, (doc, score) in enumerate(hits, 1)
    ]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
