"""Two pipelines (two processes, say) on one collection: each writes only the manifest fields it changes, so neither
undoes what the other recorded since it opened the collection."""

from __future__ import annotations

import json

import pytest
from index_fakes import BowModel, corpus

from qrank import Embedder, Settings
from qrank.index.collection import MANIFEST, Manifest
from qrank.pipeline import Pipeline

pytest.importorskip("faiss")


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path)


def _open(settings, name="docs"):
    return Pipeline.open(name, embedder=Embedder(BowModel()), settings=settings)


def _as_before_passage_sizes(settings, name="docs"):
    """The manifest as a collection made before passage sizes were recorded has it (they are recorded at its next
    add)."""
    path = settings.home / "collections" / name / MANIFEST
    data = json.loads(path.read_text())
    data["passage_tokens"] = data["passage_overlap"] = None
    path.write_text(json.dumps(data))


def test_first_add_keeps_a_default_reranker_set_since_open(settings):
    with _open(settings) as p:
        p.add(corpus(3), progress=False)
    _as_before_passage_sizes(settings)

    a = _open(settings)
    b = _open(settings)
    assert a.collection.manifest.passage_tokens is None
    b.set_default_reranker("x")
    a.add(corpus(5), progress=False)  # records its passage size: must not write reranker=None back
    on_disk = Manifest.load(a.collection.path)
    assert on_disk.reranker == "x"
    assert on_disk.passage_tokens is not None and on_disk.passage_overlap is not None
    assert (a.collection.manifest.passage_tokens, a.collection.manifest.passage_overlap) == (
        on_disk.passage_tokens, on_disk.passage_overlap)
    assert b.collection.manifest.reranker == "x"
    a.close()
    b.close()
    with _open(settings) as c:
        assert c.collection.manifest.reranker == "x"


def test_setting_a_reranker_keeps_passage_sizes_recorded_since_open(settings):
    with _open(settings) as p:
        p.add(corpus(3), progress=False)
    _as_before_passage_sizes(settings)

    a = _open(settings)
    b = _open(settings)
    a.add(corpus(5), progress=False)
    recorded = Manifest.load(a.collection.path).passage_tokens
    assert recorded is not None
    b.set_default_reranker("x")  # b still holds passage_tokens=None in memory: must not write it back
    on_disk = Manifest.load(a.collection.path)
    assert (on_disk.reranker, on_disk.passage_tokens) == ("x", recorded)
    a.close()
    b.close()


def test_update_manifest_rejects_unknown_fields(settings):
    with _open(settings) as p:
        with pytest.raises(TypeError):
            p.collection.update_manifest(nope=1)
