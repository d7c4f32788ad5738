"""What a collection says about long documents, with the real MiniLM embedder (a 256-token window): an
``index.chunk_tokens`` beyond the window is reported when the collection is created, before any document, and
``info()`` / ``qrank index info`` say the passage size the embedder really gets and what the reranker does with
a passage longer than its own window (``models.long_documents``), including settings that policy ignores."""

from __future__ import annotations

import json
import logging

import pytest

from qrank import Settings
from qrank.cli import main
from qrank.index.store import join_passages
from qrank.pipeline import Pipeline

pytest.importorskip("faiss", reason="the index extra is not installed")

LONG = " ".join(f"Sentence {i} says that keys are rotated every {i} days." for i in range(120))


def _window(minilm) -> int:
    # independent of the Chunker: the model's max length less the special tokens its tokenizer adds to a text
    return minilm.info.max_length - len(minilm.model.tokenizer("")["input_ids"])


def _info_json(capsys, home) -> dict:
    assert main(["index", "info", "docs", "--json", "--home", str(home)]) == 0
    return json.loads(capsys.readouterr().out)


def test_chunk_tokens_beyond_the_window_is_reported_at_creation_and_passages_fit(tmp_path, minilm, caplog):
    window = _window(minilm)
    settings = Settings(home=tmp_path, index={"chunk_tokens": 4000, "chunk_overlap": 64}, cache={"enabled": False})
    with caplog.at_level(logging.INFO, logger="qrank.pipeline"):
        p = Pipeline.open("docs", embedder=minilm, settings=settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "index.chunk_tokens=4000" in warnings[0] and f"{window} tokens" in warnings[0]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"passages of at most {window} tokens" in said and "truncated=true" in said
    info = p.info()
    assert info["count"] == 0  # all of it before any document
    assert (info["chunk_tokens"], info["passage_tokens"], info["passage_overlap"]) == (4000, window, 64)
    assert info["long_documents"]["policy"] == "truncate"

    p.add([{"id": "long", "text": LONG}], progress=False)
    passages = p.collection.store.get(["long"])["long"]
    # every passage fits the embedder whole (its special tokens included), and together they are the document
    assert len(passages) > 2
    assert max(minilm.model.count_tokens([x.text])[0] for x in passages) <= minilm.info.max_length
    assert join_passages(passages) == LONG
    p.close()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qrank.pipeline"):
        Pipeline.open("default", embedder=minilm, settings=Settings(home=tmp_path, cache={"enabled": False})).close()
    # the default (512) is documented to fit every embedder: said, but no warning
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("index.chunk_tokens=512" in r.getMessage() for r in caplog.records)


def test_index_info_says_what_happens_to_long_documents(tmp_path, minilm, capsys, monkeypatch):
    window = _window(minilm)
    settings = Settings(home=tmp_path, index={"chunk_tokens": 4000}, cache={"enabled": False})
    Pipeline.open("docs", embedder=minilm, settings=settings).close()
    info = _info_json(capsys, tmp_path)
    assert (info["passage_tokens"], info["long_documents"]["policy"]) == (window, "truncate")
    assert "cut at the window and its hit says truncated=true" in info["long_documents"]["summary"]
    assert main(["index", "info", "docs", "--home", str(tmp_path)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"passages of at most {window} tokens" in text and "capped at the embedder's window" in text
    assert "long docs documents longer than" in text

    # reranker chunk settings without the chunk policy are named as unused, never ignored silently
    monkeypatch.setenv("QRANK_MODELS__CHUNK_TOKENS", "128")
    summary = _info_json(capsys, tmp_path)["long_documents"]["summary"]
    assert "models.chunk_tokens=128 applies only with models.long_documents='chunk'" in summary
    monkeypatch.setenv("QRANK_MODELS__LONG_DOCUMENTS", "chunk")
    chunked = _info_json(capsys, tmp_path)["long_documents"]
    assert (chunked["policy"], chunked["chunk_tokens"], chunked["chunk_aggregate"]) == ("chunk", 128, "max")
    assert "chunks of 128 tokens" in chunked["summary"]


def test_a_collection_from_before_the_passage_size_records_it_at_its_next_add(tmp_path, minilm, capsys):
    settings = Settings(home=tmp_path, cache={"enabled": False})
    Pipeline.open("docs", embedder=minilm, settings=settings).close()
    manifest = tmp_path / "collections" / "docs" / "collection.json"
    old = json.loads(manifest.read_text())
    for key in ("passage_tokens", "passage_overlap"):
        del old[key]
    manifest.write_text(json.dumps(old))
    info = _info_json(capsys, tmp_path)
    assert info["passage_tokens"] is None and "fewer when the embedder's window is smaller" in (
        info["long_documents"]["summary"])
    with Pipeline.open("docs", embedder=minilm, settings=settings) as p:
        p.add([{"id": "long", "text": LONG}], progress=False)
    assert json.loads(manifest.read_text())["passage_tokens"] == _window(minilm)
    assert _info_json(capsys, tmp_path)["passage_tokens"] == _window(minilm)
