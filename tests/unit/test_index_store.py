"""The FAISS+SQLite store, chunking, fusion and document readers, against brute-force references."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qrank.errors import InvalidInput, Overloaded
from qrank.index.chunking import chunk_spans
from qrank.index.documents import read_paths, to_documents
from qrank.index.faiss_store import FaissStore
from qrank.index.fusion import rrf
from qrank.index.store import Passage, check_filter, join_passages
from qrank.settings import IndexSettings

pytest.importorskip("faiss")


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def passages_for(n: int, per_doc: int = 1) -> list[Passage]:
    return [Passage(f"d{i // per_doc}", i % per_doc, 0, f"text {i}", metadata={"g": i % 3, "odd": bool(i % 2)})
            for i in range(n)]


def brute_top(vectors: np.ndarray, q: np.ndarray, k: int, rows=None) -> list[int]:
    rows = np.arange(len(vectors)) if rows is None else np.asarray(rows)
    scores = vectors[rows] @ q
    return rows[np.argsort(-scores, kind="stable")[:k]].tolist()


def test_exact_search_equals_brute_force(tmp_path):
    V = unit(300, 32)
    ps = passages_for(300)
    store = FaissStore(tmp_path, 32, IndexSettings())
    store.add(ps, V)
    for qi in range(5):
        q = unit(1, 32, seed=100 + qi)[0]
        hits = store.search(q, 10)
        assert [int(h.doc_id[1:]) for h in hits] == brute_top(V, q, 10)
        np.testing.assert_allclose([h.score for h in hits], np.sort(V @ q)[::-1][:10], rtol=1e-5)
        rows = [i for i in range(300) if i % 3 == 1 and i % 2 == 1]
        filtered = store.search(q, 10, filter={"g": 1, "odd": True})
        assert [int(h.doc_id[1:]) for h in filtered] == brute_top(V, q, 10, rows)
        assert all(h.passage.metadata["g"] == 1 for h in filtered)
    assert store.count() == 300 and store.count_passages() == 300


def test_add_replaces_every_passage_of_a_document(tmp_path):
    V = unit(6, 16)
    store = FaissStore(tmp_path, 16, IndexSettings())
    store.add([Passage("a", c, 0, f"a{c}") for c in range(3)] + [Passage("b", 0, 0, "b0")], V[:4])
    store.add([Passage("a", 0, 0, "a-new")], V[4:5])
    assert store.count() == 2 and store.count_passages() == 2
    assert [p.text for p in store.get(["a"])["a"]] == ["a-new"]
    # an old passage's vector no longer finds anything of "a" but the new text
    hits = store.search(V[1], 5)
    assert {(h.doc_id, h.passage.text) for h in hits} == {("a", "a-new"), ("b", "b0")}


def test_hnsw_tombstones_survive_reopen(tmp_path):
    V = unit(400, 24)
    settings = IndexSettings(hnsw_threshold=100, hnsw_ef_search=400)
    store = FaissStore(tmp_path, 24, settings)
    store.add(passages_for(400), V)
    store.persist(force=True)
    assert store.stats()["index"] == "hnsw"
    gone = [f"d{i}" for i in range(0, 400, 7)]
    assert store.delete(gone) == len(gone)
    q = V[14]  # the vector of a deleted document
    for s in (store, FaissStore(tmp_path, 24, settings)):
        hits = s.search(q, 50)
        assert not {h.doc_id for h in hits} & set(gone)
        live = [i for i in range(400) if f"d{i}" not in gone]
        expected = brute_top(V, q, 50, live)
        assert len(set(int(h.doc_id[1:]) for h in hits) & set(expected)) >= 48  # HNSW, tiny set: nearly exact


def test_other_writer_and_stale_files_are_caught_up(tmp_path, caplog):
    V = unit(30, 8)
    ps = passages_for(30)
    a = FaissStore(tmp_path, 8, IndexSettings())
    a.add(ps[:10], V[:10])
    a.persist(force=True)
    assert a.search(V[3], 1)[0].doc_id == "d3"
    b = FaissStore(tmp_path, 8, IndexSettings())  # a second process writes behind a's back
    b.add(ps[10:20], V[10:20])
    b.delete(["d3"])
    assert a.search(V[15], 1)[0].doc_id == "d15"  # a replays the journal
    assert a.search(V[3], 1)[0].doc_id != "d3"
    # a stale file plus journal: reopen loads and replays
    c = FaissStore(tmp_path, 8, IndexSettings())
    assert c.search(V[15], 1)[0].doc_id == "d15" and c._index.ntotal == 19
    # a short journal is not worth a rewrite; force writes the current generation
    a.persist()
    assert [f.name for f in tmp_path.glob("faiss.*.index")] == ["faiss.1.index"]
    a.persist(force=True)
    assert [f.name for f in tmp_path.glob("faiss.*.index")] == [f"faiss.{a.generation()}.index"]
    assert a._db.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 0
    # a corrupt file is ignored with a warning and the index rebuilt from SQLite
    (f,) = list(tmp_path.glob("faiss.*.index"))
    f.write_bytes(b"not a faiss index")
    with caplog.at_level(logging.WARNING):
        d = FaissStore(tmp_path, 8, IndexSettings())
        assert d.search(V[15], 1)[0].doc_id == "d15"
    assert "unusable" in caplog.text


def test_a_write_that_finds_the_database_locked_fails_and_frees_the_store(tmp_path):
    """Another process holding SQLite's write lock past the busy timeout fails this write as Overloaded (a 429
    with Retry-After at the server); the store's own lock must not stay taken, or every later write from any
    thread would hang."""
    import sqlite3
    import threading

    V = unit(4, 8)
    store = FaissStore(tmp_path, 8, IndexSettings())
    store.add(passages_for(2), V[:2])
    store._db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(Overloaded, match="locked by another writer") as caught:
        store.add([Passage("d2", 0, 0, "text 2")], V[2:3])
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError) and caught.value.retry_after > 0
    other.execute("ROLLBACK")
    other.close()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (store.add([Passage("d3", 0, 0, "text 3")], V[3:4]), done.set()),
                              daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert done.is_set(), "the store stayed locked after the failed write"
    assert sorted(store.get(["d0", "d1", "d2", "d3"])) == ["d0", "d1", "d3"]  # nothing lost, nothing half-written


def test_store_rejects_wrong_dimension(tmp_path):
    store = FaissStore(tmp_path, 8, IndexSettings())
    with pytest.raises(InvalidInput) as e:
        store.add(passages_for(2), unit(2, 9))
    assert e.value.field == "vectors"
    with pytest.raises(InvalidInput) as e:
        FaissStore(tmp_path, 16, IndexSettings())
    assert e.value.field == "embedder"


@pytest.mark.parametrize("bad", [{"bad key": 1}, {"k": []}, {"k": {"nested": 1}}, {"k": 'say "hi"'}, ["k"]])
def test_bad_filters_name_the_field(bad):
    with pytest.raises(InvalidInput) as e:
        check_filter(bad)
    assert e.value.field.startswith("filter")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab c\n", min_size=0, max_size=6), min_size=1, max_size=40),
       st.integers(1, 7), st.integers(0, 6))
def test_chunks_are_exact_overlapping_slices(parts, max_tokens, overlap):
    import re

    text = " ".join(parts)
    offsets = [m.span() for m in re.finditer(r"\S+", text)]
    spans = chunk_spans(text, offsets, max_tokens, overlap)
    assert all(n <= max_tokens for _, _, n in spans)
    ps = [Passage("d", i, s, text[s:e]) for i, (s, e, _) in enumerate(spans)]
    assert join_passages(ps) == text
    assert sum(n for *_, n in spans) >= len(offsets)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=60), st.integers(12, 30), st.integers(0, 8))
@example(pieces=[3, 1, 1, 2, 3, 3], max_tokens=12, overlap=8)  # once broke: the second window began inside word 0
def test_chunks_do_not_split_words(pieces, max_tokens, overlap):
    """Words made of 1-3 subword tokens (like WordPiece '##' pieces): windows start and end at words."""
    text, offsets, word_starts = "", [], set()
    for w, k in enumerate(pieces):
        if text:
            text += " "
        word_starts.add(len(text))
        for piece in range(k):
            offsets.append((len(text), len(text) + 2))
            text += f"{'ab'[piece % 2]}{w % 10}"
    spans = chunk_spans(text, offsets, max_tokens, overlap)
    assert all(n <= max_tokens for _, _, n in spans)
    assert join_passages([Passage("d", i, s, text[s:e]) for i, (s, e, _) in enumerate(spans)]) == text
    for s, e, _ in spans:
        assert s in word_starts
        assert e == len(text) or e in word_starts


def test_rrf_matches_hand_computation():
    fused = dict(rrf([["a", "b", "c"], ["c", "d"]], k=60))
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62})
    assert [d for d, _ in rrf([["a", "b", "c"], ["c", "d"]], k=60)] == ["c", "a", "b", "d"]


def test_readers_accept_beir_ids_csv_and_text_files(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keys.md").write_text("# Keys\nRotate keys yearly.\n")
    (tmp_path / "notes" / "skip.bin").write_bytes(b"\0")
    (tmp_path / "c.jsonl").write_text(json.dumps({"_id": "x1", "title": "T", "text": "beir", "metadata": {}}) + "\n\n"
                                      + json.dumps({"id": 7, "text": "plain"}) + "\n")
    (tmp_path / "d.csv").write_text("id,text,lang\nc1,hello,en\nx1,replaced,de\n")
    docs = {d.id: d for d in read_paths([tmp_path / "notes", tmp_path / "c.jsonl", tmp_path / "d.csv"])}
    assert set(docs) == {"keys.md", "x1", "7", "c1"}
    assert docs["x1"].text == "replaced" and docs["x1"].metadata == {"lang": "de"}  # later id replaces earlier
    assert docs["keys.md"].metadata["source"].endswith("keys.md")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "text": "ok"}\n{"text": "no id"}\n')
    with pytest.raises(InvalidInput, match=r"bad.jsonl:2"):
        read_paths([tmp_path / "bad.jsonl"])


def test_to_documents_validates_and_dedupes():
    docs = to_documents(["same", "same", {"id": "x", "text": "t"}])
    assert len(docs) == 2  # identical strings get the same content id
    with pytest.raises(InvalidInput) as e:
        to_documents([{"id": "a", "text": "  "}])
    assert e.value.field == "documents[0].text"
    with pytest.raises(InvalidInput) as e:
        to_documents(["a", "b"], ids=["only-one"])
    assert e.value.field == "ids"
    with pytest.raises(InvalidInput) as e:
        to_documents([{"id": "a", "text": "t", "metadata": {"x": object()}}])
    assert e.value.field == "documents[0].metadata"
