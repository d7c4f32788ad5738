"""`qrank index migrate`: a FAISS collection moves to Milvus (Lite here; a cluster differs only by URI) and
back, searches give the same answers, an interrupted move leaves the collection usable and a re-run
finishes it; Milvus partition keys and shards are recorded with the collection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from index_fakes import BowModel, OverlapScorer, corpus, milvus_lite_or_skip

from qrank import Embedder, Reranker, Settings
from qrank.cli import main
from qrank.errors import InvalidInput, QrankError
from qrank.index.collection import Collection
from qrank.index.migrate import migrate_collection
from qrank.pipeline import Pipeline

pytest.importorskip("faiss")

QUERIES = ["rotate encryption keys", "sourdough starter", "bicycle brakes repair step 7", "green tea"]


def open_pipeline(settings, name="docs"):
    return Pipeline.open(name, embedder=Embedder(BowModel()), reranker=Reranker(OverlapScorer()), settings=settings)


def answers(settings, name="docs"):
    """Every kind of search the collection serves, as comparable tuples (ids with their scores)."""
    with open_pipeline(settings, name) as p:
        out = {}
        for q in QUERIES:
            for label, kw in {"dense": {"rerank": False}, "rerank": {"candidates": 30},
                              "filter": {"rerank": False, "filter": {"topic": [1, 2]}},
                              "hybrid": {"rerank": False, "hybrid": True}}.items():
                hits = p.search(q, k=8, **kw)
                out[q, label] = [(h.id, round(h.score, 5)) for h in hits]
        return out, p.info()


def assert_same_answers(a, b):
    """Same scores in order; same ids wherever a score is not tied (the bag-of-words fake makes many ties,
    which two engines may order differently)."""
    assert a.keys() == b.keys()
    for key in a:
        sa, sb = [s for _, s in a[key]], [s for _, s in b[key]]
        np.testing.assert_allclose(sa, sb, atol=1e-4, err_msg=str(key))
        # the last score may tie with one just below the cut, so it is compared by score only
        untied = [i for i, s in enumerate(sa) if sum(abs(s - t) < 1e-4 for t in sa) == 1 and s > sa[-1] + 1e-4]
        assert [a[key][i][0] for i in untied] == [b[key][i][0] for i in untied], key


@pytest.fixture
def settings(tmp_path):
    milvus_lite_or_skip(tmp_path)
    s = Settings(home=tmp_path / "home", index={"chunk_tokens": 16, "chunk_overlap": 3})
    with open_pipeline(s) as p:
        p.add(corpus(60), progress=False)
    return s


def test_faiss_to_milvus_and_back(settings):
    before, info = answers(settings)
    assert info["backend"] == "faiss" and info["count"] == 60
    path = Collection.open(settings, "docs").path

    report = migrate_collection(settings, "docs", "milvus", progress=False)
    assert (report["documents"], report["skipped"], report["from"], report["to"]) == (60, 0, "faiss", "milvus")
    assert report["passages"] == info["passages"] > 60
    assert not list(path.glob("store.sqlite*")) and not list(path.glob("faiss.*"))  # the old store is gone
    manifest = json.loads((path / "collection.json").read_text())
    assert manifest["backend"] == "milvus" and manifest["store"] == {"uri": None, "db": None}
    after, info2 = answers(settings)
    assert (info2["backend"], info2["count"], info2["passages"]) == ("milvus", 60, info["passages"])
    assert_same_answers(before, after)

    # the migrated collection is an ordinary one: writes, deletes, and a move back (keeping the source)
    with open_pipeline(settings) as p:
        p.add([{"id": "new", "text": "how to rotate encryption keys every ninety days"}], progress=False)
        assert p.delete(["doc1"]) == 1
        moved, _ = answers(settings)
    report = migrate_collection(settings, "docs", "faiss", keep_source=True, progress=False)
    assert (report["documents"], report["to"], report["source_kept"]) == (60, "faiss", True)
    back, info3 = answers(settings)
    assert (info3["backend"], info3["count"]) == ("faiss", 60)
    assert_same_answers(moved, back)
    assert (path / "milvus.db").exists()  # kept
    with pytest.raises(InvalidInput) as exc:
        migrate_collection(settings, "docs", "faiss", progress=False)
    assert exc.value.field == "to"


def test_interrupted_migration_keeps_the_collection_and_a_rerun_finishes(settings, monkeypatch):
    from qrank.index.milvus_store import MilvusStore

    before, _ = answers(settings)
    real_add, calls = MilvusStore.add, []

    def add_then_die(self, passages, vectors):
        calls.append(len(passages))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the copy
        real_add(self, passages, vectors)

    monkeypatch.setattr(MilvusStore, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        migrate_collection(settings, "docs", "milvus", batch_docs=10, progress=False)
    monkeypatch.setattr(MilvusStore, "add", real_add)
    assert Collection.open(settings, "docs").manifest.backend == "faiss"
    during, info = answers(settings)  # still served by FAISS, unchanged
    assert info["backend"] == "faiss"
    assert_same_answers(before, during)

    with open_pipeline(settings) as p:  # the source changes between the runs
        assert p.delete(["doc0", "doc15"]) == 2  # doc0 was copied by the first run, doc15 too
    report = migrate_collection(settings, "docs", "milvus", batch_docs=10, progress=False)
    assert report["skipped"] == 18 and report["documents"] == 40 and report["removed"] == 2
    after, info = answers(settings)
    assert (info["backend"], info["count"]) == ("milvus", 58)
    with open_pipeline(settings) as p:
        assert p.collection.store.get(["doc0", "doc15"]) == {}


def test_partition_key_and_shards_are_recorded(settings, tmp_path):
    before, _ = answers(settings)
    target = settings.model_copy(update={"index": settings.index.model_copy(
        update={"milvus_partition_key": "topic", "milvus_partitions": 8, "milvus_shards": 2})})
    report = migrate_collection(target, "docs", "milvus", progress=False)
    assert report["target"]["partition_key"] == "topic"
    # a later process needs none of those settings: the Milvus collection describes itself
    with open_pipeline(settings) as p:
        store = p.collection.store
        assert store.partition_key == "topic"
        fields = {f["name"]: f for f in store.client.describe_collection(store.name)["fields"]}
        assert fields["part"].get("is_partition_key") is True
        rows = store.client.query(store.name, filter='doc_id == "doc9"', output_fields=["part"])
        assert rows and {r["part"] for r in rows} == {"1"}  # doc9's topic
        p.add([{"id": "t", "text": "brew green tea slowly", "metadata": {"topic": 5}}], progress=False)
        assert [h.id for h in p.search("green tea", k=3, rerank=False, filter={"topic": 5})][0] == "t"
        p.delete(["t"])
    after, _ = answers(settings)
    assert_same_answers(before, after)


def test_lite_collection_stays_local_whatever_the_environment_says(settings):
    migrate_collection(settings, "docs", "milvus", progress=False)
    elsewhere = settings.model_copy(update={"index": settings.index.model_copy(update={"milvus_uri": "http://127.0.0.1:9"})})
    col = Collection.open(elsewhere, "docs")  # would fail to connect if it went to the URI
    try:
        assert col.store.count() == 60 and col.info()["store"]["uri"].endswith("milvus.db")
    finally:
        col.close()


def test_cli(settings, capsys):
    home = str(settings.home)
    assert main(["index", "migrate", "docs", "--to", "milvus", "--milvus-index", "FLAT", "--json", "--no-progress",
                 "--home", home]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["to"] == "milvus" and report["documents"] == 60 and report["target"]["documents"] == 60
    assert main(["index", "info", "docs", "--json", "--home", home]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "milvus"
    assert main(["index", "migrate", "docs", "--to", "milvus", "--home", home]) == 2  # already there
    assert "already lives in milvus" in capsys.readouterr().err
    assert main(["index", "migrate", "nope", "--to", "milvus", "--home", home]) == 2
    assert "no collection named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index", "migrate", "docs", "--to", "sqlite", "--home", home])
    assert main(["index", "migrate", "docs", "--to", "faiss", "--home", home]) == 0
    assert "moved from milvus to faiss" in capsys.readouterr().out


def test_unreachable_cluster_is_a_clear_error_and_changes_nothing(settings):
    bad = settings.model_copy(update={"index": settings.index.model_copy(update={"milvus_uri": "http://127.0.0.1:9"})})
    with pytest.raises(QrankError) as exc:
        migrate_collection(bad, "docs", "milvus", progress=False)
    assert "127.0.0.1:9" in str(exc.value)
    assert Collection.open(settings, "docs").manifest.backend == "faiss"
