"""``qrank index list|info|delete|drop`` and the CLI's error paths, on a collection built with fakes
(these verbs load no model); add and search with real models are in tests/integration."""

from __future__ import annotations

import json

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
    assert rc == 0 and json.loads(out) == {"collection": "notes", "deleted": 2, "count": 4}
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
