"""The long-document policy through the CLI, the UI playground handler and Pipeline.search, with the real
shared cross-encoder (512-token window); each door's fields equal the Python facade's."""

from __future__ import annotations

import json

import pytest

from qrank import Embedder, Reranker, Settings
from qrank.cli import main

QUERY = "where do cats sleep?"
LONG = "".join(f"Sentence {i} is about dogs and parks. " if i != 170 else "Cats sleep in warm sunny windows. "
               for i in range(300))
SHORT = "Cats like warm places."


def test_cli_long_documents_flag(ce_dir, ce, capsys):
    rc = main(["rerank", "-m", str(ce_dir), "-q", QUERY, SHORT, LONG, "--long-documents", "chunk",
               "--chunk-aggregate", "mean_top_k", "--chunk-top-k", "2", "--json"])
    assert rc == 0
    got = {r["index"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    policy = Reranker(ce.model, long_documents="chunk").long_documents.with_options(aggregate="mean_top_k", top_k=2)
    for want in ce.rerank(QUERY, [SHORT, LONG], long_documents=policy):
        assert got[want.index]["score"] == pytest.approx(want.score, abs=2e-5)
        assert got[want.index]["span"] == want.span._asdict() and got[want.index]["chunks"] == want.chunks
    assert main(["rerank", "-m", str(ce_dir), "-q", QUERY, LONG]) == 0
    assert "(cut)" in capsys.readouterr().out  # the table says the default cut the document
    assert main(["rerank", "-m", str(ce_dir), "-q", QUERY, LONG, "--long-documents", "error"]) == 2
    assert "documents[0]" in capsys.readouterr().err


def test_ui_playground_long_documents(ce):
    from qrank.ui import handlers
    from qrank.ui.backend import LocalBackend

    backend = LocalBackend(Settings(), rerankers={"ce": ce})
    view = handlers.playground(backend, query=QUERY, documents=f"{SHORT}\n{LONG}", model="ce", long_documents="chunk")
    assert view.error is None
    want = {r.index: r for r in ce.rerank(QUERY, [SHORT, LONG], long_documents="chunk")}
    row = next(r for r in view.rows if r.index == 1)
    assert "best of" in row.scored and row.score == pytest.approx(want[1].score, abs=1e-6)
    results = {r["index"]: r for r in json.loads(json.dumps(view.payload))["results"]}
    assert results[1]["span"] == want[1].span._asdict() and results[1]["chunks"] == want[1].chunks
    assert view.payload["long_documents"] == "chunk"
    refused = handlers.playground(backend, query=QUERY, documents=LONG, model="ce", long_documents="error")
    assert refused.rows == [] and "documents[0]" in refused.error


def test_pipeline_search_long_passages(tmp_path, ce):
    pytest.importorskip("faiss")
    pytest.importorskip("bm25s")
    from index_fakes import BowModel

    from qrank.pipeline import Pipeline

    # passages of up to 5,000 tokens: the one long document stays one passage, far over the reranker's window
    settings = Settings(home=tmp_path, index={"chunk_tokens": 5000, "chunk_overlap": 0})
    p = Pipeline.open("long", embedder=Embedder(BowModel(max_length=8000)), reranker=ce, settings=settings)
    p.add([{"id": "long", "text": LONG}, {"id": "short", "text": SHORT}])
    plain = {h.id: h for h in p.search(QUERY, k=2)}
    chunked = {h.id: h for h in p.search(QUERY, k=2, long_documents="chunk")}
    assert plain["long"].truncated is True and plain["long"].chunks == 1
    # info() said so beforehand: passages are not cut by indexing, the reranker's default policy cuts them
    said = p.info()["long_documents"]
    assert said["policy"] == "truncate" and "its hit says truncated=true" in said["summary"]
    assert p.info()["passage_tokens"] == 5000
    want = ce.score_documents(QUERY, [LONG], long_documents="chunk")[0]
    hit = chunked["long"]
    assert hit.truncated is False and hit.chunks == want.chunks > 4 and hit.span == want.span
    assert hit.rerank_score == pytest.approx(want.score, abs=1e-6) and hit.to_dict()["span"] == want.span._asdict()
    assert chunked["short"].chunks == 1 and chunked["short"].truncated is False


def test_score_cache_keys_hold_the_window(tmp_path, ce_dir, ce):
    """A long pair cut at 128 tokens scores differently from one cut at 512: a cache shared by both windows
    must give each its own score (each checked against the same model uncached)."""
    from qrank.cache import Cache, CachedReranker

    small = Reranker.from_pretrained(str(ce_dir), device="cpu", max_length=128)
    cache = Cache(tmp_path / "cache.sqlite", max_bytes=10_000_000)
    for policy in ("truncate", "chunk"):
        wide = CachedReranker(ce, cache).score(QUERY, [LONG], long_documents=policy)[0]
        narrow = CachedReranker(small, cache).score(QUERY, [LONG], long_documents=policy)[0]
        assert wide == pytest.approx(ce.score(QUERY, [LONG], long_documents=policy)[0], abs=1e-6)
        assert narrow == pytest.approx(small.score(QUERY, [LONG], long_documents=policy)[0], abs=1e-6)
    assert CachedReranker(ce, cache).score(QUERY, [LONG])[0] != pytest.approx(
        CachedReranker(small, cache).score(QUERY, [LONG])[0], abs=1e-4)
