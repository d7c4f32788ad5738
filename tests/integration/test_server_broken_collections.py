"""Collections that cannot be opened, through the server and the UI: listed with their status and reason (as
``qrank index list`` does), never left out silently; searching one is a JSON error naming it, never an internal
error; the UI's picker offers the healthy ones and says which could not be opened. Built with the index fakes."""

from __future__ import annotations

import httpx
import pytest
from _server_support import live_server, server_settings
from index_fakes import NOT_A_DATABASE, BowModel, OverlapScorer, build_bow_collection

from qrank import Embedder, Reranker

pytest.importorskip("faiss", reason="the index extra is not installed")



@pytest.fixture
def home():
    """A home with a healthy collection, one whose store is not a database and one whose manifest is not JSON."""
    settings = server_settings(cache={"enabled": False})
    for name in ("good", "garbled", "nomanifest"):
        build_bow_collection(settings, name)
    (settings.home / "collections" / "garbled" / "store.sqlite").write_bytes(NOT_A_DATABASE)
    (settings.home / "collections" / "nomanifest" / "collection.json").write_text("{ nope")
    # JSON of the wrong shape (a Milvus store given as a list): once an AttributeError that hid every collection
    odd = settings.home / "collections" / "oddshape"
    odd.mkdir()
    (odd / "collection.json").write_text('{"name": "oddshape", "backend": "milvus", "dim": 4, "embedder": {}, '
                                         '"chunk_tokens": 512, "chunk_overlap": 64, "store": ["http://x:1"]}')
    return settings


def _serve(settings):
    return live_server(settings, rerankers={"overlap": Reranker(OverlapScorer())},
                       embedders={"bow": Embedder(BowModel())})


def test_listing_marks_broken_collections_and_search_names_them(home):
    from qrank.pipeline import delete_collection

    with _serve(home) as url, httpx.Client(base_url=url, timeout=60) as http:
        listed = http.get("/v1/collections").json()["data"]
        by_name = {c["name"]: c for c in listed}
        assert sorted(by_name) == ["garbled", "good", "nomanifest", "oddshape"]
        assert by_name["oddshape"]["status"] == "corrupt"
        assert "'store' must be an object, got list" in by_name["oddshape"]["reason"]
        good = by_name["good"]
        # the fields clients read before stay as they were; status and reason are added
        assert (good["count"], good["backend"], good["dim"], good["embedder"]) == (6, "faiss", 64, "fake-bow")
        assert (good["status"], good["reason"]) == ("ok", None)
        assert by_name["garbled"]["status"] == "corrupt" and by_name["garbled"]["count"] is None
        assert "store.sqlite is unreadable" in by_name["garbled"]["reason"]
        assert by_name["nomanifest"]["status"] == "corrupt" and "manifest" in by_name["nomanifest"]["reason"]
        assert all(str(home.home) not in (c["reason"] or "") for c in listed)

        r = http.post("/v1/search", json={"collection": "garbled", "query": "bread"})
        err = r.json()["error"]
        assert r.status_code == 500 and err["type"] == "CorruptStore" and err["field"] == "collection"
        assert "'garbled' is corrupt" in err["message"] and "qrank index drop garbled" in err["message"]
        r = http.post("/v1/search", json={"collection": "nomanifest", "query": "bread"})
        assert r.status_code == 404 and "'nomanifest' has an unreadable manifest" in r.json()["error"]["message"]

        # damaged after the server opened it: SQLite's own error mid-search becomes the same named error
        assert http.post("/v1/search", json={"collection": "good", "query": "bread"}).status_code == 200
        (home.home / "collections" / "good" / "store.sqlite").write_bytes(NOT_A_DATABASE)
        r = http.post("/v1/search", json={"collection": "good", "query": "bread", "rerank": False})
        err = r.json()["error"]
        assert r.status_code == 500 and err["type"] == "CorruptStore" and "'good' is corrupt" in err["message"], r.text
        r = http.post("/v1/collections/good/documents", json={"documents": ["more bread"]})
        assert r.status_code == 500 and r.json()["error"]["type"] == "CorruptStore", r.text
        # dropped and rebuilt beside the running server: the next search opens the new one
        delete_collection("good", home)
        build_bow_collection(home, "good")
        r = http.post("/v1/search", json={"collection": "good", "query": "bread", "rerank": False})
        assert r.status_code == 200 and len(r.json()["results"]) == 6, r.text


def test_ui_offers_healthy_collections_and_names_the_others(home):
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    from qrank.ui.backend import LocalBackend
    from qrank.ui.layout import Bindings
    from qrank.ui.remote import RemoteBackend

    with _serve(home) as url:
        remote = RemoteBackend(url)
        try:
            backends = [LocalBackend(home), remote]
            for backend in backends:
                assert backend.collection_names() == ["good"]
                assert {(c.name, c.status) for c in backend.collections()} == {
                    ("good", "ok"), ("garbled", "corrupt"), ("nomanifest", "corrupt"), ("oddshape", "corrupt")}
                picker, note = Bindings(backend).collections()
                assert (picker["choices"], picker["value"]) == (["good"], "good")
                assert "3 collections could not be opened" in note
                assert "<b>garbled</b> (corrupt: store.sqlite is unreadable" in note and "<b>nomanifest</b>" in note
        finally:
            remote.close()
