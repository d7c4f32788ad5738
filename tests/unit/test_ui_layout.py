"""The Gradio page: it builds, its bindings format the handlers' views, and it mounts on a FastAPI app."""

from __future__ import annotations

import pytest

from qrank import Settings
from qrank.ui.backend import LocalBackend

gr = pytest.importorskip("gradio", reason="the ui extra is not installed")

QUERY = "Vitamin D deficiency raises the risk of respiratory infections."
PLANTED = "Low serum vitamin D levels were associated with more frequent respiratory infections."
DOCS = ["The Eiffel Tower was completed in 1889.", "Photosynthesis converts light energy.", PLANTED]


@pytest.fixture(scope="module")
def backend(ce):
    return LocalBackend(Settings(), rerankers={"ce": ce})


def test_bindings_format_results_errors_and_json(backend):
    from qrank.ui.layout import Bindings

    b = Bindings(backend)
    html, status, payload = b.rerank(QUERY, "", "\n".join(DOCS), None, "ce", 0)
    assert html.index(PLANTED) < html.index(DOCS[0]) and html.index(PLANTED) < html.index(DOCS[1])
    assert 'data-index="2"' in html.split("<tbody>")[1].split("</tr>")[0]  # first row is input #3
    assert "3" in status and "ms" in status and "`ce`" in status
    assert payload["results"][0]["index"] == 2
    html, status, payload = b.rerank(QUERY, "", "", None, "ce", 0)
    assert 'class="qrank-error"' in html and "documents" in html and payload is None


def test_compare_binding_shows_agreement(backend):
    from qrank.ui.layout import Bindings

    a, b_, md = Bindings(backend).compare(QUERY, "", "\n".join(DOCS), None, "ce", "ce", 2)
    assert a == b_.replace("compare-b", "compare-a")
    assert "Kendall τ **+1.000**" in md and "top-2 overlap **100%**" in md


def test_build_ui_has_the_four_tabs(backend, tmp_path):
    from qrank.ui.layout import build_ui

    blocks = build_ui(backend, report_dir=tmp_path)
    assert isinstance(blocks, gr.Blocks)
    labels = {getattr(block, "label", None) for block in blocks.blocks.values() if isinstance(block, gr.Tab)}
    assert labels == {"Rerank playground", "Search", "Compare models", "Evaluation"}
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert {"pg-query", "pg-docs", "pg-run", "pg-results", "s-query", "c-agreement", "e-table"} <= ids


def test_mount_ui_serves_the_page_under_a_fastapi_app(ce, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from qrank.ui import mount_ui

    app = FastAPI()

    @app.get("/health")
    def health():
        return {"ok": True}

    mount_ui(app, Settings(home=tmp_path), rerankers={"ce": ce}, path="/ui")
    with TestClient(app) as client:
        assert client.get("/health").json() == {"ok": True}
        page = client.get("/ui/")
        assert page.status_code == 200 and "<html" in page.text
        config = client.get("/ui/config").json()
        assert config["title"] == "qrank"
        elem_ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert "pg-results" in elem_ids
        dropdown = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "pg-model")
        assert dropdown["props"]["value"] == "ce"


def test_cli_refuses_server_and_local_models_together(capsys):
    from qrank.cli import main

    assert main(["ui", "--server", "http://127.0.0.1:9", "--reranker", "some-model"]) == 2
    assert "either --server or --reranker" in capsys.readouterr().err


def test_cli_bad_model_fails_before_serving(tmp_path, capsys):
    from qrank.cli import main

    assert main(["ui", "--reranker", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "missing" in capsys.readouterr().err
