"""``qrank index list|info|delete|drop`` and the CLI's error paths, on a collection built with fakes
(these verbs load no model); add and search with real models are in tests/integration."""

from __future__ import annotations

import json
import logging

import pytest
from index_fakes import BowModel, corpus

from qrank import Embedder, Settings
from qrank.cli import main as cli
from qrank.cli.index import parse_filter
from qrank.pipeline import Pipeline

pytest.importorskip("faiss")


@pytest.fixture
def home(tmp_path):
    p = Pipeline.open("notes", embedder=Embedder(BowModel()), settings=Settings(home=tmp_path))
    p.add(corpus(6), progress=False)
    p.close()
    return tmp_path


def run(capsys, *argv):
    rc = cli(list(argv))
    out, err = capsys.readouterr()
    return rc, out, " ".join(err.split())


def test_list_info_delete_drop(home, capsys):
    rc, out, _ = run(capsys, "index", "list", "--json", "--home", str(home))
    assert rc == 0 and [(c["name"], c["count"], c["backend"]) for c in json.loads(out)] == [("notes", 6, "faiss")]
    rc, out, _ = run(capsys, "index", "info", "notes", "--json", "--home", str(home))
    info = json.loads(out)
    assert rc == 0 and info["count"] == 6 and info["embedder"]["id"] == "fake-bow" and info["dim"] == 64
    rc, out, _ = run(capsys, "index", "info", "notes", "--home", str(home))
    assert rc == 0 and "documents   6" in out
    rc, out, _ = run(capsys, "index", "delete", "notes", "--ids", "doc1", "doc2", "nope", "--json", "--home", str(home))
    assert rc == 0 and json.loads(out) == {"collection": "notes", "deleted": 2, "not_found": ["nope"], "count": 4}
    rc, out, _ = run(capsys, "index", "delete", "notes", "--ids", "doc3", "gone", "doc1", "--home", str(home))
    assert rc == 0 and out.strip() == "notes: deleted 1 of 3 ids; not found: gone, doc1; 3 documents left"
    rc, out, _ = run(capsys, "index", "drop", "notes", "--home", str(home))
    assert rc == 0
    rc, out, _ = run(capsys, "index", "list", "--json", "--home", str(home))
    assert json.loads(out) == []


def test_errors_are_one_line_and_name_the_problem(home, capsys, tmp_path):
    rc, _, err = run(capsys, "index", "info", "missing", "--home", str(home))
    assert rc == 2 and "no collection named 'missing'" in err and "notes" in err
    rc, _, err = run(capsys, "index", "add", "--collection", "new", str(tmp_path), "--home", str(home))
    assert rc == 2 and "no documents found" in err
    (tmp_path / "a.jsonl").write_text('{"id": "a", "text": "x"}\n')
    rc, _, err = run(capsys, "index", "add", "--collection", "new", str(tmp_path / "a.jsonl"), "--home", str(home))
    assert rc == 2 and "--embedder" in err
    rc, _, err = run(capsys, "search", "--collection", "notes", "  ", "--home", str(home))
    assert rc == 2 and "query" in err
    rc, _, err = run(capsys, "search", "--collection", "notes", "x", "--filter", "novalue", "--home", str(home))
    assert rc == 2 and "filter" in err
    rc, _, err = run(capsys, "index", "delete", "notes", "--ids", "", "--home", str(home))
    assert rc == 2 and "ids[0]" in err
    assert "Traceback" not in err


def test_parse_filter():
    assert parse_filter(["lang=en", "year=2020", "flag=true", "lang=de", "q=a=b"]) == {
        "lang": ["en", "de"], "year": [2020], "flag": [True], "q": ["a=b"]}
    assert parse_filter([]) is None


def test_list_shows_a_corrupt_collection_as_corrupt_with_the_reason(home, capsys):
    (home / "collections" / "notes" / "store.sqlite").write_bytes(b"\x00garbage, not a database\xff" * 64)
    rc, out, _ = run(capsys, "index", "list", "--json", "--home", str(home))
    (listed,) = json.loads(out)
    assert rc == 0 and listed["name"] == "notes" and listed["status"] == "corrupt" and listed["count"] is None
    assert "store.sqlite" in listed["reason"]
    rc, out, _ = run(capsys, "index", "list", "--home", str(home))
    assert rc == 0 and "corrupt" in out and "notes: corrupt: store.sqlite" in " ".join(out.split())
    rc, out, _ = run(capsys, "index", "check", "notes", "--home", str(home))
    assert rc == 1 and "None" not in out and "notes: NOT ok: store.sqlite is unreadable" in out


def test_check_repair_on_a_healthy_collection_keeps_its_index(home, capsys):
    folder = home / "collections" / "notes"
    index_files = sorted(f.name for f in folder.glob("faiss.*.index"))
    assert index_files
    rc, out, _ = run(capsys, "index", "check", "notes", "--repair", "--home", str(home))
    assert rc == 0 and "repaired" not in out and "notes: ok (6 documents)" in out
    assert sorted(f.name for f in folder.glob("faiss.*.index")) == index_files
    (folder / "faiss.0.index.tmp-999999999").write_bytes(b"half written")  # left by a writer that died
    rc, out, _ = run(capsys, "index", "check", "notes", "--repair", "--home", str(home))
    assert rc == 0 and "faiss.0.index.tmp-999999999" in out and "leftover" in out
    assert sorted(f.name for f in folder.glob("faiss.*.index*")) == index_files


def _fake_embedder_by_name(monkeypatch, **kw):
    from qrank.embedder import Embedder as EmbedderClass

    monkeypatch.setattr(EmbedderClass, "from_pretrained", classmethod(lambda cls, name, **_: Embedder(BowModel(**kw))))


def test_interrupted_add_says_what_was_kept_and_how_to_continue(home, capsys, tmp_path, monkeypatch):
    _fake_embedder_by_name(monkeypatch, interrupt_after=3)  # Ctrl-C during the fourth model call
    docs = tmp_path / "long.jsonl"
    docs.write_text("".join(json.dumps({"id": f"l{i}", "text": " ".join(["word"] * 50) + f" doc{i}"}) + "\n"
                            for i in range(8)))
    # one 51-word document per 64-token batch, so each document is committed on its own
    rc, _, err = run(capsys, "index", "add", "-c", "long", "-e", "fake", str(docs), "--max-batch-tokens", "64",
                     "--home", str(home))
    assert rc == 130 and "interrupted" in err
    assert "long has 3 documents (+3 by this run" in err and "run the same command again to continue" in err
    _fake_embedder_by_name(monkeypatch)
    rc, out, _ = run(capsys, "index", "add", "-c", "long", "-e", "fake", str(docs), "--max-batch-tokens", "64",
                     "--home", str(home))
    assert rc == 0 and "5 added" in out and "3 unchanged" in out


@pytest.mark.parametrize("reranker, says", [
    ("embedder", "is a st-embedder model (embedder), not a reranker"),
    ("/nonexistent/model", "/nonexistent/model: no such local model directory"),
    ("qrank-tests/no-such-reranker", "qrank-tests/no-such-reranker: not a local directory"),  # a hub id
])
def test_add_refuses_a_reranker_that_is_not_one(home, capsys, tmp_path, monkeypatch, minilm_dir, reranker, says):
    if reranker == "embedder":
        reranker = str(minilm_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # the hub id is in no cache
    (tmp_path / "a.jsonl").write_text('{"id": "a", "text": "x"}\n')
    rc, _, err = run(capsys, "index", "add", "-c", "new", "-e", "fake", "-r", reranker, str(tmp_path / "a.jsonl"),
                     "--home", str(home))
    assert rc == 2 and err.startswith("error: --reranker: ") and says in err and "Traceback" not in err
    assert not (home / "collections" / "new").exists()  # nothing stored that every later search would trip on


def test_add_warns_when_a_file_comes_again_through_another_path(home, capsys, tmp_path, monkeypatch, caplog):
    _fake_embedder_by_name(monkeypatch)
    notes = tmp_path / "data" / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "sub" / "x.txt").write_text("Rotate the keys every ninety days.")
    (notes / "y.txt").write_text("Bananas are yellow.")
    rc, out, _ = run(capsys, "index", "add", "-c", "mine", "-e", "fake", str(notes), "--home", str(home))
    assert rc == 0 and "2 added" in out and "same text" not in out
    with caplog.at_level(logging.WARNING, logger="qrank.ingest"):
        rc, out, err = run(capsys, "index", "add", "-c", "mine", str(notes / "sub" / "x.txt"), "--json",
                           "--home", str(home))
    report = json.loads(out)
    assert rc == 0 and report["added"] == 1 and report["same_text"] == 1 and report["count"] == 3  # ids kept as given
    [warning] = [r.getMessage() for r in caplog.records if r.name == "qrank.ingest"]
    assert warning == "1 document has the same text as another document under another id, e.g. x.txt = sub/x.txt"
    # the path hint is the CLI's, for documents read from .txt/.md files (the server's clients give their ids)
    assert "hint: the same file added through another path? (a .txt/.md file's id is its path relative" in err
    rc, out, _ = run(capsys, "index", "add", "-c", "mine", str(notes / "y.txt"), "--home", str(home))
    assert rc == 0 and "1 unchanged" in out and "same text" not in out  # y.txt is y.txt through either path
    rc, out, _ = run(capsys, "index", "add", "-c", "mine", str(notes / "sub" / "x.txt"), "--home", str(home))
    assert rc == 0 and "1 unchanged" in out and "1 with the same text as a document under another id" in out
    rc, out, _ = run(capsys, "index", "add", "-c", "mine", str(notes), "--json", "--home", str(home))
    assert json.loads(out)["same_text"] == 1 and json.loads(out)["unchanged"] == 2  # sub/x.txt = x.txt still
    rc, out, _ = run(capsys, "index", "add", "-c", "once", "-e", "fake", str(notes), str(notes / "sub" / "x.txt"),
                     "--json", "--home", str(home))  # both paths in one add
    assert rc == 0 and json.loads(out)["added"] == 3 and json.loads(out)["same_text"] == 1
    (tmp_path / "twins.jsonl").write_text('{"id": "j1", "text": "Bananas are yellow."}\n'
                                          '{"id": "j2", "text": "Bananas are yellow."}\n')
    rc, out, err = run(capsys, "index", "add", "-c", "mine", str(tmp_path / "twins.jsonl"), "--json",
                       "--home", str(home))  # JSONL ids are the file's own: no path hint
    assert rc == 0 and json.loads(out)["same_text"] == 1 and "hint" not in err


def test_add_skips_empty_documents_and_counts_duplicate_ids(home, capsys, tmp_path, monkeypatch, caplog):
    _fake_embedder_by_name(monkeypatch)
    (tmp_path / "a.jsonl").write_text('{"id": "a", "text": "first"}\n{"id": "e", "text": "  "}\n'
                                      '{"id": "a", "text": "second"}\n')
    (tmp_path / "b.csv").write_text("id,text\nb,third\na,fourth\nf,\n")
    with caplog.at_level(logging.WARNING, logger="qrank.index.documents"):
        rc, out, _ = run(capsys, "index", "add", "-c", "mixed", "-e", "fake", str(tmp_path / "a.jsonl"),
                         str(tmp_path / "b.csv"), "--json", "--home", str(home))
    report = json.loads(out)
    assert rc == 0 and (report["added"], report["empty_skipped"], report["duplicate_ids"]) == (2, 2, 2)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "a.jsonl:2" in warnings[0] and "b.csv:4" in warnings[0]
    assert "'a' at " in warnings[1]
    rc, out, _ = run(capsys, "index", "add", "-c", "mixed", str(tmp_path / "a.jsonl"), str(tmp_path / "b.csv"),
                     "--home", str(home))
    assert rc == 0 and out.strip().endswith("; 2 empty skipped; 2 duplicate ids: the last one kept")
    (tmp_path / "blank.jsonl").write_text('{"id": "x", "text": ""}\n')
    rc, _, err = run(capsys, "index", "add", "-c", "mixed", str(tmp_path / "blank.jsonl"), "--home", str(home))
    assert rc == 2 and "no documents to add: every one found was empty" in err and "blank.jsonl:1" in err


def test_a_filter_of_the_other_type_gets_a_hint(home, capsys, tmp_path, monkeypatch):
    _fake_embedder_by_name(monkeypatch)
    (tmp_path / "papers.csv").write_text("id,text,year\np1,rotate keys,2020\np2,bananas,2021\n")
    rc, _, _ = run(capsys, "index", "add", "-c", "papers", "-e", "fake", str(tmp_path / "papers.csv"),
                   "--home", str(home))
    assert rc == 0
    rc, out, err = run(capsys, "search", "-c", "papers", "keys", "--filter", "year=2020", "--no-rerank",
                       "--home", str(home))
    assert rc == 0 and "no results" in out
    assert "hint: metadata 'year' is stored as text here" in err and "--filter 'year=\"2020\"'" in err
    rc, out, err = run(capsys, "search", "-c", "papers", "keys", "--filter", 'year="2020"', "--no-rerank", "--json",
                       "--home", str(home))
    assert rc == 0 and [h["id"] for h in json.loads(out)] == ["p1"] and "hint" not in err
    rc, out, err = run(capsys, "search", "-c", "notes", "x", "--filter", 'topic="1"', "--no-rerank", "--json",
                       "--home", str(home))  # JSON numbers (the fixture's corpus), filtered as text
    assert rc == 0 and json.loads(out) == [] and "stored as a number here" in err and "--filter topic=1" in err


def test_add_of_a_beir_folder_skips_its_qrels_and_a_named_one_is_an_error(home, capsys, tmp_path, monkeypatch, caplog):
    _fake_embedder_by_name(monkeypatch)
    beir = tmp_path / "scifact"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "Statins lower LDL."}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n")
    (beir / "qrels" / "dev.csv").write_text("query-id,corpus-id,score\n1,d1,1\n")  # a CSV is treated alike
    # its queries are no documents either: added, query "d1" replaced the abstract of the same id
    (beir / "queries.jsonl").write_text('{"_id": "d1", "text": "do statins lower LDL?"}\n')
    with caplog.at_level(logging.WARNING, logger="qrank.index.documents"):
        rc, out, err = run(capsys, "index", "add", "-c", "beir", "-e", "fake", str(beir), "--json", "--home", str(home))
    assert rc == 0 and json.loads(out)["added"] == 1, err
    queries_warning, warning = [r.getMessage() for r in caplog.records]
    assert "queries.jsonl: the queries of a BEIR data set" in queries_warning and "skipped" in queries_warning
    assert warning.startswith("2 files found in a folder skipped: no 'text' column in their header")
    assert "qrels/dev.csv" in warning and "qrels/test.tsv" in warning
    rc, out, _ = run(capsys, "search", "-c", "beir", "statins", "--no-rerank", "--json", "--home", str(home))
    assert rc == 0 and "Statins lower LDL." in out and "do statins lower" not in out
    for named in ("test.tsv", "dev.csv"):  # named on the command line, a table without 'text' stays an error
        rc, _, err = run(capsys, "index", "add", "-c", "beir", str(beir / "qrels" / named), "--home", str(home))
        assert rc == 2 and f"{named}:1: the " in err and "header has no 'text' column" in err
    rc, _, err = run(capsys, "index", "add", "-c", "beir", str(beir / "qrels"), "--home", str(home))
    assert rc == 2 and "no documents found" in err and "skipped, no 'text' column: " in err and "test.tsv" in err


def test_add_skips_rows_of_empty_cells_and_counts_them(home, capsys, tmp_path, monkeypatch, caplog):
    _fake_embedder_by_name(monkeypatch)
    (tmp_path / "trailing.csv").write_text("id,text,lang\na,kept,en\n,,\n , ,\n,,\n")  # Excel's trailing rows
    with caplog.at_level(logging.WARNING, logger="qrank.index.documents"):
        rc, out, err = run(capsys, "index", "add", "-c", "xl", "-e", "fake", str(tmp_path / "trailing.csv"),
                           "--json", "--home", str(home))
    report = json.loads(out)
    assert rc == 0 and (report["added"], report["empty_skipped"]) == (1, 3), err
    assert not caplog.records  # counted, not warned about
    (tmp_path / "only.csv").write_text("id,text\n,\n")
    rc, _, err = run(capsys, "index", "add", "-c", "xl", str(tmp_path / "only.csv"), "--home", str(home))
    assert rc == 2 and "no documents to add: every one found was empty (" in err and "only.csv:2" in err
