"""``qrank eval`` from the command line: a model-free run on a tiny data set, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest

from qrank.cli import main

pytest.importorskip("ranx")
pytest.importorskip("bm25s")


def tiny_dataset(root):
    """Your-own layout: three documents, two queries, one relevant document each."""
    root.mkdir(parents=True)
    docs = [
        {"id": "bikes", "title": "Bicycle care", "text": "adjust the brakes and oil the chain"},
        {"id": "bread", "title": "Sourdough", "text": "feed the starter and bake the loaf"},
        {"id": "tea", "title": "Green tea", "text": "steep the leaves at eighty degrees"},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text(
        json.dumps({"id": "a", "query": "how to oil a bicycle chain", "relevant": ["bikes"]})
        + "\n"
        + json.dumps({"id": "b", "query": "steep green tea leaves", "relevant": ["tea"]})
        + "\n"
    )
    return root


def run(args, tmp_path):
    return main(["eval", "--home", str(tmp_path / "home"), "--no-progress", *args])


def test_bm25_only_run_writes_the_report(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    out = tmp_path / "out"
    assert (
        run(
            [
                "--dataset",
                str(data),
                "--systems",
                "bm25",
                "--depth",
                "10",
                "--sweep",
                "none",
                "--out",
                str(out),
                "--json",
            ],
            tmp_path,
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed == metrics
    # each query shares words with its one relevant document only, so BM25 ranks it first
    assert metrics["bm25"]["ndcg@10"] == 1.0 and metrics["bm25"]["mrr@10"] == 1.0
    assert set(metrics["bm25"]) >= {
        "ndcg@10",
        "recall@10",
        "mrr@10",
        "map",
        "latency_p50_ms",
        "latency_p99_ms",
        "throughput_qps",
        "index_time_s",
        "peak_rss_mb",
    }
    assert (out / "report.md").is_file() and (out / "quality_vs_latency.png").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--dataset", "{tmp}/missing", "--systems", "bm25"], "dataset: "),
        (["--dataset", "{data}", "--systems", "bm25,splade"], "systems: unknown system 'splade'"),
        (["--dataset", "{data}", "--systems", "dense"], "embedder: "),
        (["--dataset", "{data}", "--systems", "bm25+rerank"], "reranker: "),
        (["--dataset", "{data}", "--systems", "bm25", "--sweep", "ten"], "sweep: "),
        (["--dataset", "{data}", "--systems", "bm25", "--depth", "0"], "depth: "),
        (["--dataset", "{data}", "--systems", "bm25", "--max-queries", "0"], "max_queries: "),
        (["--dataset", "{data}", "--systems", "bm25", "--out", "{data}/corpus.jsonl"], "out: "),
        (["--dataset", "{data}", "--systems", "dense", "--embedder", "{tmp}/no-model"], "no such local model"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, capsys, args, needle):
    data = tiny_dataset(tmp_path / "data")
    args = [a.format(tmp=tmp_path, data=data) for a in args]
    assert run(args, tmp_path) == 2
    err = capsys.readouterr().err
    assert "error:" in err and needle in err
    assert "Traceback" not in err


def test_help_lists_the_systems(capsys):
    with pytest.raises(SystemExit) as done:
        main(["eval", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "dense+rerank" in text and "queries.jsonl" in text


def test_plan_is_printed_and_sweep_is_capped_at_depth(tmp_path, capsys):
    """Issue 16.11: the cost is said before the work, and --depth 1 sweeps depth 1 only (no depth 200)."""
    data = tiny_dataset(tmp_path / "data")
    out = tmp_path / "out"
    assert (
        run(["--dataset", str(data), "--systems", "bm25", "--depth", "1", "--k", "1", "--out", str(out)], tmp_path) == 0
    )
    err = capsys.readouterr().err
    assert "plan: embed 0 texts, rerank up to 0" in err or "nothing to embed or rerank" in err
    config = json.loads((out / "run_config.json").read_text())["config"]
    assert config["sweep"] == [1] and config["retrieve_depth"] == 1


def test_help_says_the_cost_and_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: 20" in text and "up to --depth" in text and "over half an hour on 2 cores" in text


def test_default_report_lives_under_home_and_the_ui_finds_it(tmp_path, capsys):
    """Issue 16.13: no --out writes a new <home>/reports/<dataset>-<time>, the folder the evaluation tab reads."""
    from qrank.settings import Settings
    from qrank.ui import handlers
    from qrank.ui.layout import report_dir_of

    data = tiny_dataset(tmp_path / "data")
    for _ in range(2):  # two runs: two folders, nothing overwritten
        assert run(["--dataset", str(data), "--systems", "bm25", "--depth", "2", "--k", "1"], tmp_path) == 0
    printed = capsys.readouterr().out
    reports = sorted((tmp_path / "home" / "reports").iterdir())
    assert len(reports) == 2 and all(p.name.startswith("data-") for p in reports)
    assert "report:" in printed
    root = report_dir_of(Settings(home=tmp_path / "home"))
    assert root == tmp_path / "home" / "reports"
    view = handlers.evaluation(root)
    assert view.error is None and view.selected == str(reports[-1])  # the newest first
    assert sorted(view.choices) == [str(p) for p in reports]
    # an explicit path (qrank ui --report-dir) may name one report folder itself
    one = handlers.evaluation(reports[0])
    assert one.selected == str(reports[0])


def test_report_names_the_numerics_it_ran_with(tmp_path):
    """An int8 report must not read as an fp32 one later: run_config and report.md carry the numerics."""
    data = tiny_dataset(tmp_path / "data")
    out = tmp_path / "out"
    args = ["--dataset", str(data), "--systems", "bm25", "--sweep", "none", "--out", str(out),
            "--quantization", "int8", "--dtype", "float32", "--deterministic"]
    assert run(args, tmp_path) == 0
    env = json.loads((out / "run_config.json").read_text())["environment"]
    assert (env["quantization"], env["dtype"], env["deterministic"]) == ("int8", "float32", True)
    assert "- numerics: dtype float32, quantization int8, deterministic True" in (out / "report.md").read_text()


def test_plan_of_a_short_run_says_under_a_minute(tmp_path, capsys):
    import os
    from pathlib import Path

    shared = Path(os.environ.get("QRANK_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
    embedder = shared / "models" / "all-MiniLM-L6-v2"
    if not (embedder / "config.json").is_file():
        pytest.skip("no shared MiniLM embedder")
    data = tiny_dataset(tmp_path / "data")
    args = ["--dataset", str(data), "--systems", "dense", "--embedder", str(embedder), "--depth", "2", "--k", "1",
            "--out", str(tmp_path / "out")]
    assert run(args, tmp_path) == 0
    plan = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("plan:"))
    assert "under a minute" in plan and "about 0 min" not in plan


def test_the_table_in_a_log_is_not_clipped_to_80_columns(tmp_path, capsys, monkeypatch):
    """Off a terminal rich assumed 80 columns: a CI log showed `0.83…` and `syst…` (found 2026-12-07)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    data = tiny_dataset(tmp_path / "data")
    assert run(["--dataset", str(data), "--systems", "bm25", "--depth", "10", "--sweep", "none",
                "--out", str(tmp_path / "out")], tmp_path) == 0
    out = capsys.readouterr().out
    assert "…" not in out, out
    for column in ("ndcg@10", "recall@10", "mrr@10", "p50 ms", "index s", "cached"):
        assert column in out, out
