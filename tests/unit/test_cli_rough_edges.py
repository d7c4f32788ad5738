"""Rough edges of the CLI (issue 16.14): named on/off switches, ``-v`` after the verb, distinct score
columns (hybrid scores shown), configured model folders listed, an empty documents file said as such."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.console import Console

from qrank.cli import build_parser, main
from qrank.cli.tables import hit_columns, hits_table

SHARED = Path(os.environ.get("QRANK_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))


def test_cache_switch_is_named_after_the_cache():
    parser = build_parser()
    args = parser.parse_args(["search", "q", "--collection", "c", "--no-cache"])
    assert args.cache__enabled is False
    assert parser.parse_args(["search", "q", "--collection", "c", "--cache"]).cache__enabled is True
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "q", "--collection", "c", "--no-enabled"])


@pytest.mark.parametrize(
    "argv, before, after",
    [
        (["-v", "index", "list"], 1, 0),
        (["index", "list", "-v"], 0, 1),
        (["search", "q", "-c", "c", "-vv"], 0, 2),
        (["-v", "eval", "--dataset", "d", "--verbose"], 1, 1),
    ],
)
def test_verbose_is_accepted_after_the_verb(argv, before, after):
    args = build_parser().parse_args(argv)
    assert args.verbose == before and getattr(args, "verbose_after", 0) == after


def _hybrid_hits(tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("bm25s")
    from index_fakes import BowModel, OverlapScorer, corpus

    from qrank import Embedder, Reranker, Settings
    from qrank.pipeline import Pipeline

    with Pipeline.open("docs", embedder=Embedder(BowModel()), reranker=Reranker(OverlapScorer()),
                       settings=Settings(home=tmp_path)) as p:
        p.add(corpus(20), progress=False)
        return p.search("how to brew green tea", k=5, hybrid=True), p.search("how to brew green tea", k=5, rerank=False)


def test_search_table_shows_each_score_once_and_hybrid_scores(tmp_path):
    hybrid, dense = _hybrid_hits(tmp_path)
    assert hit_columns(hybrid) == ["dense", "bm25", "fusion", "rerank"]
    assert hit_columns(dense) == ["dense"]
    console = Console(record=True, width=250)
    console.print(hits_table(hybrid, title="t"))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "rank" in line and "document" in line)
    assert "score" not in header and all(c in header for c in ("dense", "bm25", "fusion", "rerank"))
    for h in hybrid:  # every score the pipeline gave is in the table, once
        assert f"{h.fusion_score:.4f}" in text and f"{h.rerank_score:.4f}" in text


def test_models_lists_the_configured_model_folders(tmp_path, capsys, monkeypatch):
    model = SHARED / "models" / "scifact-minilm-ce"
    if not (model / "config.json").is_file():
        pytest.skip(f"no shared cross-encoder at {model}")
    monkeypatch.setenv("QRANK_SERVER__RERANKERS", str(model))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty hub cache: only qrank's own roots count
    assert main(["models", "--home", str(tmp_path / "home"), "--json"]) == 0
    out = capsys.readouterr().out
    assert str(model) in out and "cross-encoder" in out


def test_empty_documents_file_is_said_to_be_empty(tmp_path, capsys):
    empty = tmp_path / "docs.txt"
    empty.write_text("\n  \n")
    assert main(["rerank", "--model", str(tmp_path / "no-model"), "--query", "q", "--documents", str(empty)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"documents: {empty} is empty" in err and "give documents with" not in err


@pytest.mark.parametrize("var, value, says", [
    ("QRANK_MODELS__DTYPE", "fp16", "QRANK_MODELS__DTYPE: input should be 'auto', 'float32', 'bfloat16' or 'float16', "
                                    "got 'fp16'"),
    ("QRANK_ENGINE__MAX_BATCH_TOKENS", "abc", "QRANK_ENGINE__MAX_BATCH_TOKENS: input should be a valid integer, "
                                              "got 'abc'"),
    ("QRANK_SERVER__PORT", "99999", "QRANK_SERVER__PORT: input should be less than or equal to 65535"),
])
def test_a_bad_env_var_is_one_line_naming_it_for_every_command(tmp_path, capsys, monkeypatch, var, value, says):
    monkeypatch.setenv(var, value)
    for argv in (["index", "list", "--home", str(tmp_path)],  # a command that never reads the setting fails too
                 ["rerank", "-m", str(tmp_path / "no-model"), "-q", "q", "a doc"]):
        assert main(argv) == 2, argv
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), lines


def test_jsonl_document_with_a_title_that_is_not_a_string_is_one_line(tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "vitamin d", "title": "Vitamins"}\n{"text": "vitamin d", "title": 5}\n')
    assert main(["rerank", "--model", str(tmp_path / "no-model"), "--query", "q", "--documents", str(docs)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"documents: {docs}:2 has a 'title' that is not a string" in err and "Traceback" not in err


def test_output_to_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys

    # the reader goes away before the first byte is written, as `qrank index list --json | head -0` would
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-c", "import sys; from qrank.cli import main; sys.exit(main())",
                               "index", "list", "--json", "--home", str(tmp_path)],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == "", done.stderr


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_each_default_once_and_each_group_once(capsys):
    serve = _help(capsys, "serve")
    assert "PydanticUndefined" not in serve
    assert "(default: None)" not in serve.split("--batch-workers")[1].split("--max-queue")[0]
    assert "--allowed-hosts ALLOWED_HOSTS Host header names" in serve
    assert "any otherwise; '*' = any --malloc-arena-max" in serve  # no default appended to a list of names
    for verb in (["rerank"], ["search"]):
        assert _help(capsys, *verb).count("models settings (env QRANK_MODELS__<NAME>)") == 1, verb
    for verb in (["index", "list"], ["index", "info"], ["index", "delete"], ["models"]):
        text = _help(capsys, *verb)
        assert "--json print" in text, verb
