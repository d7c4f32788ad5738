"""The pipeline end to end with the real MiniLM embedder and cross-encoder on a SciFact subset.

Scores are checked against the models called directly (an independent path: no store, no cache,
no chunking), and the CLI is driven through ``qrank.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from index_fakes import milvus_lite_or_skip

from qrank import Settings
from qrank.cli import main as cli
from qrank.pipeline import Pipeline

pytest.importorskip("faiss")
pytest.importorskip("bm25s")

N_DOCS = 200
PLANTED = {"id": "planted-keys", "title": "Key rotation runbook",
           "text": "To rotate the API signing keys, create a new key in the vault, deploy it, then revoke the old key."}


def scifact_docs(scifact_dir: Path, n: int) -> list[dict]:
    with open(scifact_dir / "corpus.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for the module: each SciFact passage is embedded once across tests."""
    return tmp_path_factory.mktemp("cache") / "cache.sqlite"


@pytest.fixture(scope="module")
def sci(tmp_path_factory, scifact_dir, minilm, ce, shared_cache):
    settings = Settings(home=tmp_path_factory.mktemp("home"), cache={"path": shared_cache})
    docs = scifact_docs(scifact_dir, N_DOCS) + [PLANTED]
    p = Pipeline.open("scifact", embedder=minilm, reranker=ce, settings=settings)
    report = p.add(docs, progress=False)
    return p, docs, report


def test_planted_document_ranks_first_with_true_scores(sci, minilm, ce):
    p, docs, report = sci
    assert report["count"] == N_DOCS + 1 and report["passages"] >= report["count"]
    q = "how do I rotate keys?"
    hits = p.search(q, k=5, candidates=50)
    top = hits[0]
    assert top.id == "planted-keys" and top.title == PLANTED["title"] and top.text == PLANTED["text"]
    indexed = f"{PLANTED['title']} {PLANTED['text']}"
    dense_ref = float(minilm.embed(q, is_query=True) @ minilm.embed(indexed))
    assert top.dense_score == pytest.approx(dense_ref, abs=1e-4)
    assert top.rerank_score == pytest.approx(ce.score(q, [indexed])[0], abs=1e-4)
    assert top.score == top.rerank_score
    assert [h.rerank_score for h in hits] == sorted((h.rerank_score for h in hits), reverse=True)


def test_titles_find_their_abstracts(sci):
    p, docs, _ = sci
    sample = docs[:N_DOCS:10]
    found = sum(d["_id"] in [h.id for h in p.search(d["title"], k=3, rerank=False)] for d in sample)
    assert found >= 0.9 * len(sample)


def test_long_documents_are_chunked_within_the_model_length(sci, minilm):
    p, docs, _ = sci
    chunker = p.chunker()
    assert chunker.max_tokens == minilm.info.max_length - chunker.specials  # 256 - [CLS]/[SEP]
    long_ids = [d["_id"] for d in docs[:N_DOCS] if len(p.collection.store.get([d["_id"]])[d["_id"]]) > 1]
    assert long_ids, "SciFact has abstracts longer than 256 tokens"
    for doc_id in long_ids[:10]:
        passages = p.collection.store.get([doc_id])[doc_id]
        counts = minilm.model.count_tokens([x.text for x in passages])
        assert max(counts) <= minilm.info.max_length
        doc = next(d for d in docs if d["_id"] == doc_id)
        text, title = p.collection.document_text(passages)
        assert (text, title) == (doc["text"], doc["title"])  # passages rebuild the document exactly


def test_second_add_embeds_nothing_and_repeat_search_reranks_nothing(sci):
    p, docs, _ = sci
    again = p.add(docs, progress=False)
    assert again["unchanged"] == len(docs) and again["embedded"] == 0
    q = "vitamin D deficiency and bone density"
    first = p.search(q, k=10, candidates=20, hybrid=True)
    scored = p.reranker.scored
    second = p.search(q, k=10, candidates=20, hybrid=True)
    assert p.reranker.scored == scored
    assert [(h.id, h.rerank_score) for h in first] == [(h.id, h.rerank_score) for h in second]


def test_dimension_mismatch_leaves_the_collection_intact(sci, qwen3_embedder):
    from qrank.errors import InvalidInput

    p, _, _ = sci
    with pytest.raises(InvalidInput) as e:
        Pipeline.open("scifact", embedder=qwen3_embedder, settings=p.settings)
    assert e.value.field == "embedder" and "dimension" in str(e.value)
    assert p.info()["count"] == N_DOCS + 1
    assert p.search("how do I rotate keys?", k=1)[0].id == "planted-keys"


def test_a_copy_of_the_embedder_folder_opens_the_collection_and_reads_its_cache(sci, minilm_dir, tmp_path, caplog):
    """A byte-identical copy of the model (another path, a rebuilt image) was refused by the collection built with
    the original, and missed every cached vector: its fingerprint hashed file times (found 2026-12-07)."""
    import shutil

    from qrank import Embedder
    from qrank.cache import embedding_key

    p, _, _ = sci
    copy = shutil.copytree(minilm_dir, tmp_path / "minilm-elsewhere")
    em = Embedder.from_pretrained(str(copy), device="cpu")
    assert em.info.revision == p.embedder.info.revision
    with caplog.at_level("WARNING", logger="qrank.pipeline"):
        q = Pipeline.open("scifact", embedder=em, settings=p.settings)
    assert "changed" not in caplog.text
    assert q.search("how do I rotate keys?", k=1, rerank=False)[0].id == "planted-keys"
    key = embedding_key(em.info, None, None, False, f"{PLANTED['title']} {PLANTED['text']}")
    assert key == embedding_key(p.embedder.info, None, None, False, f"{PLANTED['title']} {PLANTED['text']}")


def test_a_collection_stamped_with_the_old_file_time_fingerprint_is_restamped_once(sci, minilm_dir, tmp_path,
                                                                                     caplog):
    """Collections built before 2026-12-07 hold the file-time fingerprint, those of 2026-12-07 a content fingerprint
    without the settings files: opened with the same folder they logged "the files ... changed" at every open (the
    demo did, twice). Now the manifest takes the current fingerprint once, silently; a folder whose files did
    change still warns (or, under another name, is refused)."""
    import os
    import shutil
    from dataclasses import replace

    from qrank import Embedder
    from qrank.errors import InvalidInput
    from qrank.index.collection import Manifest
    from qrank.models.base import legacy_local_revisions

    p, _, _ = sci
    path = p.collection.path
    current = Manifest.load(path)
    old, content_v1 = legacy_local_revisions(Path(minilm_dir))
    assert old != current.embedder["revision"]
    assert content_v1 != current.embedder["revision"]  # 2026-12-08: the settings files (pooling, tokenizer) count
    try:
        for stale in (old, content_v1):
            replace(current, embedder={**current.embedder, "revision": stale}).save(path)
            caplog.clear()
            with caplog.at_level("INFO", logger="qrank.pipeline"):
                q = Pipeline.open("scifact", settings=p.settings)
                assert q.search("how do I rotate keys?", k=1, rerank=False)[0].id == "planted-keys"
            assert "changed" not in caplog.text and "fingerprint" in caplog.text
            assert Manifest.load(path).embedder["revision"] == current.embedder["revision"]

        # a copy whose weights were rewritten (new file times, same bytes) is not the folder that built it
        copy = Path(shutil.copytree(minilm_dir, tmp_path / "minilm-touched"))
        weights = next(copy.glob("*.safetensors"))
        os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 3600))
        replace(current, embedder={**current.embedder, "revision": old}).save(path)
        caplog.clear()
        em = Embedder.from_pretrained(str(copy), device="cpu")
        assert legacy_local_revisions(copy)[0] != old
        with pytest.raises(InvalidInput) as e:
            Pipeline.open("scifact", embedder=em, settings=p.settings).embedder  # noqa: B018
        assert e.value.field == "embedder" and Manifest.load(path).embedder["revision"] == old
    finally:
        current.save(path)


def test_cli_end_to_end(tmp_path, monkeypatch, capsys, scifact_dir, minilm_dir, ce_dir, shared_cache):
    monkeypatch.setenv("QRANK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QRANK_CACHE__PATH", str(shared_cache))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keys.md").write_text("# Keys\nRotate the API signing keys every 90 days with the vault CLI.\n")
    (notes / "fruit.txt").write_text("Bananas are a good source of potassium.\n")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"]}) + "\n"
                            for d in scifact_docs(scifact_dir, 30)))

    def run(*argv) -> tuple[int, str, str]:
        rc = cli(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    rc, out, _ = run("index", "add", "--collection", "docs", "--embedder", str(minilm_dir), "--reranker", str(ce_dir),
                     "--device", "cpu", str(notes), str(data), "--json")
    assert rc == 0 and json.loads(out)["count"] == 32
    rc, out, _ = run("search", "--collection", "docs", "how do I rotate keys?", "--k", "3", "--json", "--device", "cpu")
    hits = json.loads(out)
    assert rc == 0 and hits[0]["id"] == "keys.md" and len(hits) == 3
    assert all({"id", "text", "score", "dense_score", "rerank_score"} <= h.keys() for h in hits)
    assert all(h["rerank_score"] is not None and h["dense_score"] is not None for h in hits)
    rc, out, _ = run("search", "--collection", "docs", "how do I rotate keys?", "--no-rerank", "--hybrid", "--json")
    assert rc == 0 and all(h["rerank_score"] is None and h["fusion_score"] for h in json.loads(out))
    rc, out, _ = run("index", "info", "docs", "--json")
    assert rc == 0 and json.loads(out)["count"] == 32
    rc, out, _ = run("index", "list", "--json")
    assert [c["name"] for c in json.loads(out)] == ["docs"]
    rc, out, _ = run("index", "delete", "docs", "--ids", "keys.md", "--json")
    assert rc == 0 and json.loads(out) == {"collection": "docs", "deleted": 1, "not_found": [], "count": 31}
    rc, out, _ = run("search", "--collection", "docs", "how do I rotate keys?", "--json", "--no-rerank")
    assert "keys.md" not in [h["id"] for h in json.loads(out)]
    # a second add of the same files embeds nothing
    rc, out, _ = run("index", "add", "--collection", "docs", str(data), "--json")
    assert rc == 0 and json.loads(out)["embedded"] == 0
    # bad input: clear messages, exit status 2
    rc, _, err = run("search", "--collection", "nope", "anything")
    assert rc == 2 and "no collection named 'nope'" in " ".join(err.split())
    rc, _, err = run("search", "--collection", "docs", "   ")
    assert rc == 2 and "query" in err
    rc, _, err = run("index", "add", "--collection", "docs", str(tmp_path / "missing.jsonl"))
    assert rc == 2 and "no such file" in " ".join(err.split())


def test_milvus_lite_and_faiss_agree_on_real_vectors(tmp_path, sci):
    milvus_lite_or_skip(tmp_path)
    p, docs, _ = sci
    settings = Settings(home=tmp_path / "home", cache={"path": p.settings.cache.path})
    em = p.embedder.embedder
    subset = docs[:60]
    results = {}
    for backend in ("faiss", "milvus"):
        q = Pipeline.open(f"sf-{backend}", embedder=em, settings=settings, backend=backend)
        q.add(subset, progress=False)
        results[backend] = [q.search(d["title"], k=10, rerank=False) for d in subset[:8]]
    for a, b in zip(results["faiss"], results["milvus"]):
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.dense_score for h in a], [h.dense_score for h in b], atol=1e-4)
