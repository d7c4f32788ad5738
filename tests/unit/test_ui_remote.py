"""The UI against a real qrank server (``qrank ui --server URL``): the same answers as the local models."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from qrank import Settings
from qrank.ui import handlers
from qrank.ui.backend import LocalBackend

pytest.importorskip("fastapi", reason="the server extra is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the server extra is not installed")

QUERY = "Vitamin D deficiency raises the risk of respiratory infections."
DOCS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Low serum vitamin D levels were associated with more frequent upper respiratory tract infections.",
    "Photosynthesis converts light energy into chemical energy in plants.",
]


SEARCH_DOCS = [
    {"id": "eiffel", "title": "Paris", "text": DOCS[0]},
    {"id": "vitd", "title": "Vitamin D and infections", "text": DOCS[1]},
    {"id": "photo", "title": "Plants", "text": DOCS[2]},
    {"id": "vitc", "title": "Vitamin C", "text": "Vitamin C supplements did not prevent common colds in adults."},
    {"id": "sun", "title": "Sunlight", "text": "Skin exposed to sunlight makes vitamin D."},
]


@pytest.fixture(scope="module")
def home(tmp_path_factory, minilm):
    """A qrank home with one small collection, built with the same MiniLM the server serves."""
    pytest.importorskip("faiss", reason="the index extra is not installed")
    from qrank.pipeline import Pipeline

    home = tmp_path_factory.mktemp("ui-remote-home")
    with Pipeline.open("sf", embedder=minilm, settings=Settings(home=home, cache={"enabled": False})) as p:
        p.add(SEARCH_DOCS, progress=False)
    return home


@pytest.fixture(scope="module")
def server_url(ce, random_ce_dir, minilm, home):
    from qrank import Reranker
    from qrank.server import ModelPool, create_app

    random_ce = Reranker.from_pretrained(str(random_ce_dir), device="cpu")
    pool = ModelPool.from_models(rerankers={"ce": ce, "random": random_ce}, embedders={"minilm": minilm})
    app = create_app(Settings(home=home, server={"access_log": False}, cache={"enabled": False}), pool=pool)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the qrank server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def remote(server_url):
    from qrank.ui.remote import RemoteBackend

    backend = RemoteBackend(server_url)
    yield backend
    backend.close()


def test_remote_lists_the_served_rerankers(remote, server_url):
    assert remote.reranker_names() == ["ce", "random"]
    assert remote.embedder_names() == ["minilm"]
    assert server_url in remote.describe()


def test_remote_playground_matches_the_local_model(remote, ce):
    view = handlers.playground(remote, query=QUERY, documents="\n".join(DOCS), model="ce", top_n=2)
    assert view.error is None
    local = ce.rerank(QUERY, DOCS, top_n=2)
    assert [r.index for r in view.rows] == [r.index for r in local]
    assert [r.score for r in view.rows] == pytest.approx([r.score for r in local], abs=1e-5)
    assert view.rows[0].document == DOCS[1]


def test_remote_compare_and_unknown_model(remote):
    view = handlers.compare(remote, query=QUERY, documents="\n".join(DOCS), model_a="ce", model_b="random")
    assert view.error is None and view.agreement["n"] == 3
    bad = handlers.playground(remote, query=QUERY, documents="\n".join(DOCS), model="nope")
    assert bad.rows == [] and "nope" in bad.error and "Traceback" not in bad.error


def test_mount_ui_inside_the_qrank_server(ce):
    """``qrank serve --ui``: the page mounted at /ui of the server's own app, answering from the pool's models."""
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    from fastapi.testclient import TestClient

    from qrank.server import ModelPool, create_app
    from qrank.ui import mount_ui

    pool = ModelPool.from_models(rerankers={"ce": ce})
    settings = Settings(server={"access_log": False})
    app = create_app(settings, pool=pool)
    mount_ui(app, settings, rerankers={m.name: m.facade for m in pool.models if m.role == "reranker"})
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["ce"]
        assert client.get("/ui/").status_code == 200
        # one click of the playground's button, through Gradio's own HTTP API
        event = client.post("/ui/gradio_api/call/rerank", json={"data": [QUERY, "", "\n".join(DOCS), None, "ce", 0,
                                                                           "default"]})
        with client.stream("GET", f"/ui/gradio_api/call/rerank/{event.json()['event_id']}") as answer:
            body = "".join(answer.iter_text())
    assert "event: complete" in body
    data = json.loads(body.split("event: complete")[1].split("data:", 1)[1].strip().splitlines()[0])
    table = data[0].split("<tbody>")[1]
    expected = ce.rerank(QUERY, DOCS)
    assert [int(part.split('"')[0]) for part in table.split('data-index="')[1:]] == [r.index for r in expected]


def test_remote_search_matches_local_search(remote, ce, minilm, home):
    """The server's three columns equal the same pipeline run in this process."""
    assert remote.collection_names() == ["sf"]
    query = "vitamin D and respiratory infections"
    view = handlers.search(remote, collection="sf", query=query, k=3, reranker="ce")
    assert view.error is None
    local = LocalBackend(
        Settings(home=home, cache={"enabled": False}), rerankers={"ce": ce}, embedders={"minilm": minilm}
    )
    ref = handlers.search(local, collection="sf", query=query, k=3, reranker="ce", embedder="minilm")
    for column in ("bm25", "first_stage", "reranked"):
        assert [r.doc_id for r in view.columns[column]] == [r.doc_id for r in ref.columns[column]], column
        assert [r.score for r in view.columns[column]] == pytest.approx(
            [r.score for r in ref.columns[column]], abs=1e-4
        )
    assert [r.moved for r in view.columns["reranked"]] == [r.moved for r in ref.columns["reranked"]]
    assert view.columns["reranked"][0].doc_id == "vitd"
    local.refresh()


def test_remote_search_errors_are_sentences(remote):
    view = handlers.search(remote, collection="nope", query=QUERY)
    assert view.error and "nope" in view.error and "Traceback" not in view.error
    view = handlers.search(remote, collection="sf", query=QUERY, embedder="minilm")
    assert view.error.startswith("embedder:")
