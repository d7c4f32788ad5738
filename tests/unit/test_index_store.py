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
from qrank.index.documents import read_documents, read_paths, to_documents
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


def test_hash_lookup_is_indexed_and_built_once_for_an_older_store(tmp_path):
    store = FaissStore(tmp_path, 4, IndexSettings())
    store.add([Passage("a", 0, 0, "t", hash="h1"), Passage("a", 1, 1, "u", hash="h1"),
               Passage("b", 0, 0, "t", hash="h1"), Passage("c", 0, 0, "v", hash="h2")], unit(4, 4))
    assert store.ids_with_hashes(["h1", "h3"]) == {"h1": ["a", "b"]}  # first passages only: one id per document
    store._db.execute("DROP INDEX doc_hashes")  # a store written before the index existed
    store.close()
    older = FaissStore(tmp_path, 4, IndexSettings(), existing=True)
    assert older.ids_with_hashes(["h2"]) == {"h2": ["c"]}
    plan = older._db.execute("EXPLAIN QUERY PLAN SELECT doc_id FROM passages WHERE chunk = 0 AND hash IN (?)",
                             ["h2"]).fetchall()
    assert "doc_hashes" in str(plan)
    older.close()


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


def test_text_file_ids_are_relative_to_the_folder_given(tmp_path):
    (tmp_path / "notes" / "sub").mkdir(parents=True)
    (tmp_path / "notes" / "sub" / "x.txt").write_text("same file")
    # the rule docs/index.md states: relative to the folder given, or the file's name when the file is given
    assert [d.id for d in read_paths([tmp_path / "notes"])] == ["sub/x.txt"]
    assert [d.id for d in read_paths([tmp_path / "notes" / "sub"])] == ["x.txt"]
    assert [d.id for d in read_paths([tmp_path / "notes" / "sub" / "x.txt"])] == ["x.txt"]


def test_empty_documents_are_skipped_in_every_format_and_counted(tmp_path, caplog):
    (tmp_path / "a.jsonl").write_text('{"id": "a1", "text": "kept"}\n{"id": "a2", "text": ""}\n'
                                      '{"id": "a3", "text": " \\n\\t"}\n')
    (tmp_path / "b.csv").write_text("id,text\nb1,kept\nb2,   \nb3\n")  # b3: a short row, its text cell missing
    (tmp_path / "c.tsv").write_text("id\ttext\nc1\t\n")
    (tmp_path / "d.txt").write_text("  \n")
    with caplog.at_level(logging.WARNING, logger="qrank.index.documents"):
        got = read_documents([tmp_path])
    assert [d.id for d in got.documents] == ["a1", "b1"]
    assert got.summary() == {"empty_skipped": 6, "duplicate_ids": 0}
    assert [w.rsplit("/", 1)[-1] for w in got.empty] == ["a.jsonl:2", "a.jsonl:3", "b.csv:3", "b.csv:4", "c.tsv:2",
                                                        "d.txt"]
    [warning] = [r.getMessage() for r in caplog.records]  # one warning for all of them, naming the first few
    assert warning.startswith("6 empty documents skipped") and "a.jsonl:2" in warning and "and 1 more" in warning
    # other invalid input stays an error, one line naming file:line and the field
    for line, says in [('{"id": "x", "text": 5}', "a.jsonl:1: 'text' must be a string, got int"),
                       ('{"id": "x", "text": null}', "a.jsonl:1: 'text' must be a string, got null"),
                       ('{"text": "t", "body": "b"}', "a.jsonl:1: missing 'id' (found keys: body, text; use 'id'"),
                       ('{"id": "", "text": "t"}', "a.jsonl:1: 'id' must not be empty"),
                       ('{"id": "x", "text": "t", "title": 3}', "a.jsonl:1: 'title' must be a string, got int")]:
        (tmp_path / "a.jsonl").write_text(line + "\n")
        with pytest.raises(InvalidInput) as e:
            read_paths([tmp_path / "a.jsonl"])
        assert says in str(e.value) and "\n" not in str(e.value)


def test_a_missing_text_key_names_the_keys_found(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text('{"id": "a", "text": "ok"}\n{"id": "b", "content": "the text under another key"}\n')
    with pytest.raises(InvalidInput) as e:
        read_paths([f])
    assert str(e.value) == (f"documents: {f}:2: missing 'text' (found keys: content, id; use 'text', or "
                            "'title' + 'text')")
    (tmp_path / "docs.csv").write_text("id,body\na,text\n")
    with pytest.raises(InvalidInput, match=r"docs.csv:1: the CSV header has no 'text' column \(found: body, id;"):
        read_paths([tmp_path / "docs.csv"])
    (tmp_path / "docs.csv").write_text("key,text\na,text\n")
    with pytest.raises(InvalidInput, match=r"docs.csv:1: the CSV header has no 'id' or '_id' column \(found: key"):
        read_paths([tmp_path / "docs.csv"])


def test_utf8_byte_order_marks_are_read_as_no_text(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "excel.csv").write_bytes(bom + "id,text,year\r\nc1,caf\u00e9,2020\r\n".encode())  # Excel's CSV UTF-8
    (tmp_path / "note.txt").write_bytes(bom + b"hello")
    (tmp_path / "d.jsonl").write_bytes(bom + b'{"id": "j1", "text": "json"}\n')
    (tmp_path / "beir.csv").write_bytes(bom + b"_id,text\nb1,beir spelling\n")
    docs = {d.id: d for d in read_paths([tmp_path])}
    assert set(docs) == {"c1", "note.txt", "j1", "b1"}
    assert docs["c1"].text == "caf\u00e9" and docs["c1"].metadata == {"year": "2020"}
    assert docs["note.txt"].text == "hello" and docs["j1"].text == "json"


def test_tsv_files_are_read_like_csv_with_tabs(tmp_path):
    (tmp_path / "d.tsv").write_text("id\ttitle\ttext\tyear\n00123\tT\tcommas, stay; in text\t2020\n")
    [doc] = read_paths([tmp_path / "d.tsv"])
    assert (doc.id, doc.title, doc.text, doc.metadata) == ("00123", "T", "commas, stay; in text", {"year": "2020"})
    (tmp_path / "bad.tsv").write_text("id,text\na,b\n")  # commas in a .tsv: one column named "id,text"
    with pytest.raises(InvalidInput, match=r"bad.tsv:1: the TSV header has no 'text' column"):
        read_paths([tmp_path / "bad.tsv"])


def test_tsv_is_unquoted_each_line_a_row(tmp_path):
    # BEIR and MS MARCO write TSV without quoting: a cell starting with '"' must not swallow the rows after it
    (tmp_path / "d.tsv").write_text('id\ttext\n1\tfirst\n2\t"unbalanced start\n3\tthird\n4\t"quoted" word\n'
                                    '5\tends with a quote"\n')
    docs = {d.id: d.text for d in read_paths([tmp_path / "d.tsv"])}
    assert docs == {"1": "first", "2": '"unbalanced start', "3": "third", "4": '"quoted" word',
                    "5": 'ends with a quote"'}
    # CSV keeps its quoting: a quoted cell may hold commas and line breaks; a row is named by the line it starts on
    (tmp_path / "d.csv").write_text('id,text\na,"two\nlines, one cell"\nb,\n')
    got = read_documents([tmp_path / "d.csv"])
    assert [(d.id, d.text) for d in got.documents] == [("a", "two\nlines, one cell")]
    assert [w.rsplit("/", 1)[-1] for w in got.empty] == ["d.csv:4"]


def test_csv_cells_may_be_as_long_as_a_jsonl_text_and_errors_name_the_row_line(tmp_path, monkeypatch):
    import csv

    from qrank.index import documents

    long = "word " * 40_000  # 200,000 characters: over csv's default bound of 131,072
    (tmp_path / "big.csv").write_text(f"id,text\na,{long}\n")
    (tmp_path / "big.tsv").write_text(f"id\ttext\nt\t{long}\n")
    bound = csv.field_size_limit()
    rows = documents.read_file(tmp_path / "big.csv", tmp_path)
    assert next(rows)[1].text == long
    assert csv.field_size_limit() == bound  # lifted only while a row is parsed, even with the reader still open
    rows.close()
    assert [d.text for d in read_paths([tmp_path / "big.tsv"])] == [long]
    assert csv.field_size_limit() == bound
    # an error names the line its row starts on, past a row of several lines
    monkeypatch.setattr(documents, "_CELL_LIMIT", 20)
    (tmp_path / "bad.csv").write_text('id,text\na,"two\nlines"\nb,short\nc,' + "x" * 30 + "\n")
    with pytest.raises(InvalidInput, match=r"bad.csv:5: not a readable CSV row \(field larger than field limit"):
        read_paths([tmp_path / "bad.csv"])
    assert csv.field_size_limit() == bound


def test_rows_of_empty_cells_and_empty_texts_with_empty_ids_are_skipped(tmp_path, caplog):
    (tmp_path / "a.csv").write_text("id,text,lang\na,kept,en\n,,en\n,,\n\t, ,\n,,\n")  # Excel's ,, rows
    (tmp_path / "b.tsv").write_text("id\ttext\nb\tkept\n\t\n")
    (tmp_path / "c.jsonl").write_text('{"id": "c", "text": "kept"}\n{"id": "", "text": ""}\n{"text": " "}\n')
    with caplog.at_level(logging.WARNING, logger="qrank.index.documents"):
        got = read_documents([tmp_path])
    assert [d.id for d in got.documents] == ["a", "b", "c"]
    # the row ",,en" holds something, so it is an empty document (named); the others are rows of empty cells
    assert [w.rsplit("/", 1)[-1] for w in got.empty] == ["a.csv:3", "c.jsonl:2", "c.jsonl:3"]
    assert [w.rsplit("/", 1)[-1] for w in got.blank_rows] == ["a.csv:4", "a.csv:5", "a.csv:6", "b.tsv:3"]
    assert got.summary() == {"empty_skipped": 7, "duplicate_ids": 0}
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("3 empty documents skipped (no text): ")
    assert warning.endswith("; and 4 rows of empty cells")
    caplog.clear()
    (tmp_path / "c.jsonl").unlink()
    (tmp_path / "a.csv").write_text("id,text\na,kept\n,,\n")
    with caplog.at_level(logging.WARNING, logger="qrank.index.documents"):
        got = read_documents([tmp_path / "a.csv"])
    assert got.summary()["empty_skipped"] == 1 and not caplog.records  # rows of empty cells alone: counted, unsaid


def test_tables_without_a_text_column_found_in_a_folder_are_skipped(tmp_path, caplog):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "doc"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "qrels" / "old.csv").write_text("query-id,corpus-id,score\nq1,d1,1\n")
    with caplog.at_level(logging.WARNING, logger="qrank.index.documents"):
        got = read_documents([tmp_path])
    assert [d.id for d in got.documents] == ["d1"]
    assert [f.rsplit("/", 2)[-2:] for f in got.skipped_files] == [["qrels", "old.csv"], ["qrels", "test.tsv"]]
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("2 files found in a folder skipped: no 'text' column") and "test.tsv" in warning
    for named in (tmp_path / "qrels" / "test.tsv", tmp_path / "qrels" / "old.csv"):
        with pytest.raises(InvalidInput, match="header has no 'text' column"):
            read_documents([named])
    # a table with 'text' but no id column found in a folder is a document table with a mistake: still an error
    (tmp_path / "qrels" / "noid.csv").write_text("key,text\nk,t\n")
    with pytest.raises(InvalidInput, match=r"noid.csv:1: the CSV header has no 'id' or '_id' column"):
        read_documents([tmp_path])


def test_duplicate_ids_keep_the_last_and_are_counted_once(tmp_path, caplog):
    (tmp_path / "a.jsonl").write_text('{"id": "x", "text": "one"}\n{"id": "y", "text": "two"}\n'
                                      '{"id": "x", "text": "three"}\n')
    (tmp_path / "b.csv").write_text("id,text\ny,four\nz,five\n")
    with caplog.at_level(logging.WARNING, logger="qrank.index.documents"):
        got = read_documents([tmp_path / "a.jsonl", tmp_path / "b.csv"])
    assert {d.id: d.text for d in got.documents} == {"x": "three", "y": "four", "z": "five"}
    assert got.summary() == {"empty_skipped": 0, "duplicate_ids": 2}
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("2 duplicate ids: the last one kept")
    assert "'x' at " in warning and "a.jsonl:1" in warning and "a.jsonl:3" in warning and "b.csv:2" in warning


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


def _pipeline(tmp_path, window: int = 256):
    from index_fakes import BowModel

    from qrank import Embedder, Settings
    from qrank.pipeline import Pipeline

    return Pipeline.open("c", embedder=Embedder(BowModel()),
                         settings=Settings(home=tmp_path, index={"ingest_window": window}))


@pytest.mark.parametrize("copies", [3, 300])
def test_the_same_text_lookup_costs_the_same_however_many_copies_are_stored(tmp_path, copies):
    store = FaissStore(tmp_path, 4, IndexSettings())
    store.add([Passage(f"a{i:04}", 0, 0, "t", hash="H") for i in range(copies)], unit(copies, 4))
    store.ids_with_hashes(["H"], limit=2)  # builds nothing here, but do the first lookup's work outside the count
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    assert store.ids_with_hashes(["H", "none"], limit=2) == {"H": ["a0000", "a0001"]}
    assert store.ids_with_hashes(["H"], limit={"H": 3}) == {"H": ["a0000", "a0001", "a0002"]}
    assert len(statements) == 2  # one statement per lookup, answered from the index with LIMIT per hash
    steps = store._db.execute("EXPLAIN QUERY PLAN SELECT 1 FROM passages WHERE chunk = 0 AND hash = 'H' LIMIT 2")
    assert "doc_hashes" in str(steps.fetchall())
    store._db.set_trace_callback(None)
    store.close()
    # an add of more copies: one lookup of its one distinct hash, every window of the add included
    p = _pipeline(tmp_path / "home", window=16)
    p.add([{"id": f"a{i}", "text": "Not available."} for i in range(copies)], progress=False)
    store = p.collection.store
    calls: list[tuple[list, object, int]] = []
    lookup = store.ids_with_hashes

    def counted(hashes, limit=None):
        found = lookup(hashes, limit=limit)
        calls.append((list(hashes), limit, sum(map(len, found.values()))))
        return found

    store.ids_with_hashes = counted
    report = p.add([{"id": f"b{i}", "text": "Not available."} for i in range(copies)], progress=False)
    assert report["same_text"] == copies and report["added"] == copies
    [(hashes, limit, rows)] = calls
    assert len(hashes) == 1 and rows == 1  # b's are not stored: one id of the a's is enough for the example
    calls.clear()
    report = p.add([{"id": f"a{i}", "text": "Not available."} for i in range(copies)], progress=False)
    [(hashes, limit, rows)] = calls  # the add's own ids are stored with the hash: one more than they is asked for
    assert report["unchanged"] == copies and report["same_text"] == copies and rows == copies + 1
    p.close()


def test_a_stored_text_the_add_replaces_is_no_twin(tmp_path, caplog):
    p = _pipeline(tmp_path, window=1)  # every document in a window of its own: the check spans the windows
    p.add([{"id": "a", "text": "The old text."}, {"id": "z", "text": "Unrelated."}], progress=False)
    for order in (["a", "b"], ["b", "a"]):  # a changes its text, b brings a's old one: no twin after the add
        texts = {"a": f"A new text {order[0]}.", "b": "The old text."}
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="qrank.ingest"):
            report = p.add([{"id": i, "text": texts[i]} for i in order], progress=False)
        assert report["same_text"] == 0 and not caplog.records, order
        p.add([{"id": "a", "text": "The old text."}], progress=False)  # back as it was
        p.delete(["b"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qrank.ingest"):
        report = p.add([{"id": "b", "text": "The old text."}], progress=False)  # a keeps it: a twin
    assert report["same_text"] == 1
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning == "1 document has the same text as another document under another id, e.g. b = a"
    assert "path" not in warning  # the file-path hint is the CLI's (a Pipeline or HTTP add has no files)
    p.close()
