"""The UI searches through the same persistent caches as the CLI (issue 16.13): a query ``qrank search``
already reranked costs the UI no model call, even when the UI was given the reranker under another
spelling of its folder; and the page hears what a slow first search is doing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qrank import Settings
from qrank.pipeline import Pipeline
from qrank.ui import handlers
from qrank.ui.backend import LocalBackend

pytest.importorskip("faiss")
pytest.importorskip("bm25s")

SHARED = Path(os.environ.get("QRANK_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
CE, MINILM = SHARED / "models" / "scifact-minilm-ce", SHARED / "models" / "all-MiniLM-L6-v2"
DOCS = [
    {"id": "d", "text": "Vitamin D supplements lowered the rate of acute respiratory infections in a trial."},
    {"id": "c", "text": "Cats sleep for most of the day."},
    {"id": "b", "text": "BM25 ranks documents by term statistics."},
]
QUERY = "Does vitamin D prevent respiratory infections?"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    if not (CE / "config.json").is_file() or not (MINILM / "config.json").is_file():
        pytest.skip(f"the shared models are not under {SHARED}")
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home)
    with Pipeline.open("notes", embedder=str(MINILM), reranker=str(CE), settings=settings) as p:
        p.add(DOCS, progress=False)
    # what `qrank search --collection notes QUERY` does: open by name, rerank with the collection's reranker
    with Pipeline.open("notes", settings=settings, create=False) as p:
        p.search(QUERY, k=3)
        assert p.reranker.scored > 0
    return home


def test_ui_reuses_the_scores_the_cli_cached(home):
    other_spelling = os.path.relpath(CE, Path.cwd())  # as a user types it: ../shared/models/…
    backend = LocalBackend.from_sources(Settings(home=home), rerankers=[other_spelling])
    said: list[str] = []
    view = handlers.search(backend, collection="notes", query=QUERY, k=3, reranker=backend.reranker_names()[0],
                           progress=said.append)
    assert view.error is None
    assert view.notes["reranked"] == "all scores from the cache"
    assert [r.doc_id for r in view.columns["reranked"]][0] == "d"
    assert said[0].startswith("opening collection notes") and any(s.startswith("reranking the top") for s in said)
    backend.refresh()


def test_search_without_a_progress_listener_still_works(home):
    backend = LocalBackend.from_sources(Settings(home=home), rerankers=[str(CE)])
    view = handlers.search(backend, collection="notes", query="cats", k=2, reranker=backend.reranker_names()[0])
    assert view.error is None and view.columns["reranked"][0].doc_id == "c"
    backend.refresh()
