"""SQLite errors that are not damage (a closed connection, a full disk, a lock) met by one search: never called
corrupt, and the server keeps serving the collection to every other request (it forgets nothing, closes nothing
under them). Real damage still answers CorruptStore naming the collection. Built with the index fakes."""

from __future__ import annotations

import sqlite3
import threading
from types import SimpleNamespace

import httpx
import pytest
from _server_support import live_server, server_settings
from index_fakes import NOT_A_DATABASE, BowModel, OverlapScorer, build_bow_collection

from qrank import Embedder, Reranker

pytest.importorskip("faiss", reason="the index extra is not installed")



@pytest.fixture
def home():
    settings = server_settings(cache={"enabled": False})
    build_bow_collection(settings, "good")
    return settings


def _serve(settings):
    return live_server(settings, rerankers={"overlap": Reranker(OverlapScorer())},
                       embedders={"bow": Embedder(BowModel())})


def _search(http, **extra):
    return http.post("/v1/search", json={"collection": "good", "query": "bread", "rerank": False, **extra})


def test_a_closed_database_error_in_one_request_spares_the_others(home, monkeypatch):
    from qrank.index.collection import Collection
    from qrank.index.faiss_store import FaissStore

    opened = []
    real_open = Collection.open.__func__

    def counting_open(cls, settings, name):
        opened.append(name)
        return real_open(cls, settings, name)

    monkeypatch.setattr(Collection, "open", classmethod(counting_open))

    real_search = FaissStore.search
    calls = []
    entered, release = threading.Event(), threading.Event()

    def search(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the slow request: still searching when the other one fails
            entered.set()
            assert release.wait(30)
        elif len(calls) == 2:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return real_search(self, *args, **kwargs)

    with _serve(home) as url, httpx.Client(base_url=url, timeout=60) as http:
        slow: dict = {}
        worker = threading.Thread(target=lambda: slow.update(r=_search(http)))
        monkeypatch.setattr(FaissStore, "search", search)
        worker.start()
        assert entered.wait(30)
        r = _search(http)
        assert r.status_code == 500, r.text
        err = r.json()["error"]
        assert err["type"] != "CorruptStore" and "corrupt" not in err["message"], r.text
        release.set()
        worker.join(30)
        # the other request, in flight through the same opened collection, finishes as if nothing happened
        assert slow["r"].status_code == 200 and len(slow["r"].json()["results"]) == 6, slow["r"].text
        r = _search(http)
        assert r.status_code == 200 and len(r.json()["results"]) == 6, r.text
        assert opened == ["good"]  # never forgotten, never reopened


def test_real_damage_is_still_corrupt_and_a_rebuilt_collection_is_served(home):
    from qrank.pipeline import delete_collection

    with _serve(home) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert _search(http).status_code == 200
        (home.home / "collections" / "good" / "store.sqlite").write_bytes(NOT_A_DATABASE)
        r = _search(http)
        err = r.json()["error"]
        assert r.status_code == 500 and err["type"] == "CorruptStore" and "'good' is corrupt" in err["message"], r.text
        delete_collection("good", home)
        build_bow_collection(home, "good")
        r = _search(http)
        assert r.status_code == 200 and len(r.json()["results"]) == 6, r.text


def test_forget_drops_only_the_copy_that_failed():
    from qrank.server.collections import ServerCollections

    sc = ServerCollections.__new__(ServerCollections)
    sc._lock = threading.Lock()
    closed = []
    old_c = SimpleNamespace(close=lambda: closed.append("old"))
    new_c = SimpleNamespace(close=lambda: closed.append("new"))
    old = SimpleNamespace(collection=old_c)
    old_reranked = SimpleNamespace(collection=old_c)
    new = SimpleNamespace(collection=new_c)
    other = SimpleNamespace(collection=SimpleNamespace(close=lambda: closed.append("other")))
    sc._pipelines = {("good", None): old, ("good", "overlap"): old_reranked, ("other", None): other}
    sc.forget("good", old_reranked)  # the failed copy and the pipelines sharing its collection go
    assert sc._pipelines == {("other", None): other}
    sc._pipelines[("good", None)] = new  # another request reopened it meanwhile
    sc.forget("good", old)  # a late failure of the old copy leaves the new one alone
    assert sc._pipelines == {("other", None): other, ("good", None): new}
    assert closed == []  # nothing closed under requests that may still be using it


@pytest.mark.parametrize("exc", [sqlite3.OperationalError("database is locked"),
                                 sqlite3.OperationalError("database or disk is full"),
                                 sqlite3.ProgrammingError("Cannot operate on a closed database.")])
def test_cli_says_other_sqlite_errors_in_one_line_without_calling_them_corrupt(exc, capsys):
    import argparse

    from qrank.cli import common
    from qrank.cli.index import _store_errors
    from qrank.errors import QrankError
    from qrank.index.store import CorruptStore

    def cmd(args):
        raise exc

    with pytest.raises(QrankError) as caught:
        _store_errors(cmd)(argparse.Namespace(collection="good"))
    assert not isinstance(caught.value, CorruptStore)
    assert str(caught.value) == f"collection 'good': its store could not be used ({exc})"
    assert common.fail(caught.value) == 2
    assert "corrupt" not in capsys.readouterr().err


def test_cli_still_calls_real_damage_corrupt():
    import argparse

    from qrank.cli.index import _store_errors
    from qrank.index.store import CorruptStore

    def cmd(args):
        raise sqlite3.DatabaseError("database disk image is malformed")

    with pytest.raises(CorruptStore, match="'good' is corrupt"):
        _store_errors(cmd)(argparse.Namespace(collection="good"))
