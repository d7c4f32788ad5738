"""The CLI's rerank / embed / models verbs with the real shared models."""

from __future__ import annotations

import json

import pytest

from qrank.cli import main


def test_rerank_json_matches_the_api(ce_dir, ce, capsys, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("Cats are small mammals.\nBM25 is a ranking function used by search engines.\n\n")
    rc = main(
        ["rerank", "--model", str(ce_dir), "--query", "what is bm25", "--documents", str(docs), "extra doc", "--json"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    expected = ce.rerank(
        "what is bm25", ["Cats are small mammals.", "BM25 is a ranking function used by search engines.", "extra doc"]
    )
    assert [r["index"] for r in out["results"]] == [r.index for r in expected]
    assert [r["score"] for r in out["results"]] == pytest.approx([r.score for r in expected], abs=1e-6)


def test_rerank_table_is_readable(ce_dir, capsys):
    rc = main(["rerank", "-m", str(ce_dir), "-q", "what is bm25", "cats", "BM25 is a ranking function", "--top-n", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "BM25 is a ranking function" in out and "cats" not in out.split("document")[-1]


def test_embed_json(qwen3_embedder_dir, qwen3_embedder, capsys):
    # a Matryoshka model (Qwen3-Embedding, tiny random weights): --dim cuts and renormalises like the API
    rc = main(["embed", "-m", str(qwen3_embedder_dir), "--dtype", "float32", "--query", "--dim", "16", "--json",
               "hello world"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dim"] == 16
    expected = qwen3_embedder.embed("hello world", is_query=True, dim=16).tolist()
    assert out["embeddings"][0] == pytest.approx(expected, abs=1e-6)


def test_embed_refuses_dim_and_blank_text_on_minilm(minilm_dir, capsys):
    # MiniLM was not trained to be cut: a shorter --dim is one clear line, not a silently worse vector
    assert main(["embed", "-m", str(minilm_dir), "--dim", "64", "hello world"]) == 2
    assert "not a Matryoshka model" in capsys.readouterr().err
    assert main(["embed", "-m", str(minilm_dir), "hello", "  "]) == 2
    assert "texts[1]: must not be empty or blank" in capsys.readouterr().err


def test_models_lists_kinds(shared, capsys):
    assert main(["models", str(shared / "models"), "--json"]) == 0
    kinds = {m["kind"] for m in json.loads(capsys.readouterr().out)}
    assert {"st-embedder", "cross-encoder"} <= kinds


def test_models_verbose_shows_what_the_engine_decided(qwen3_reranker_dir, ce_dir, capsys, monkeypatch, tmp_path):
    """``qrank models -v`` loads each model and prints its ``ModelInfo.extra["engine"]`` (the fast engine's
    frozen config, resolved at load); a cross-encoder has no engine. The home folder and the Hugging Face cache
    are emptied so that only the two given models load."""
    from qrank import Reranker, Settings
    from qrank.cli import core

    monkeypatch.setenv("QRANK_HOME", str(tmp_path))
    monkeypatch.setattr(core, "_hub_cache_models", lambda: [])
    args = ["models", str(qwen3_reranker_dir), str(ce_dir), "-v", "--engine", "fast", "--device", "cpu",
            "--dtype", "float32", "--json"]
    assert main(args) == 0
    found = {m["kind"]: m for m in json.loads(capsys.readouterr().out)}
    settings = Settings(engine={"engine": "fast"})
    expected = Reranker.from_pretrained(str(qwen3_reranker_dir), settings=settings, device="cpu", dtype="float32")
    assert found["qwen3-reranker"]["engine"] == expected.model.engine.describe()
    assert found["qwen3-reranker"]["engine"]["attention"] == "sdpa"
    assert found["cross-encoder"]["engine"] is None
    assert main(args[:-1]) == 0
    assert "attention=sdpa" in capsys.readouterr().out.replace("\n", "")


def test_errors_are_one_line_not_a_traceback(ce_dir, capsys, tmp_path):
    assert main(["rerank", "-m", str(tmp_path / "missing"), "-q", "x", "doc"]) == 2
    assert main(["rerank", "-m", str(ce_dir), "-q", "  ", "doc"]) == 2
    assert main(["rerank", "-m", str(ce_dir), "-q", "x"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "query" in err and "documents" in err
