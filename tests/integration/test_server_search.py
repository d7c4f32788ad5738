"""Search routes over a collection built through the server, checked against the models called directly."""

from __future__ import annotations

import httpx
import pytest
from _server_support import live_server, server_settings

pytest.importorskip("faiss", reason="the index extra is not installed")

DOCS = [
    {
        "id": "d1",
        "text": "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase.",
        "metadata": {"topic": "med"},
    },
    {"id": "d2", "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris.", "metadata": {"topic": "travel"}},
    {"id": "d3", "text": "High cholesterol raises the risk of heart disease.", "metadata": {"topic": "med"}},
    {"id": "d4", "text": "Bananas are rich in potassium.", "metadata": {"topic": "food"}},
]
QUERY = "how do statins reduce cholesterol?"


@pytest.fixture(scope="module")
def http(tmp_path_factory, ce, minilm):
    settings = server_settings(home=tmp_path_factory.mktemp("search-home"))
    with live_server(settings, rerankers={"ce": ce}, embedders={"minilm": minilm}) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            r = client.post("/v1/collections/notes/documents", json={"documents": DOCS})
            assert r.status_code == 200, r.text
            assert r.json()["added"] == 4 and r.json()["count"] == 4
            yield client


def test_collections_listed(http):
    names = [c["name"] for c in http.get("/v1/collections").json()["data"]]
    assert names == ["notes"]


def test_dense_search_equals_cosine(http, minilm):
    r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 4, "rerank": False})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    q = minilm.embed(QUERY, is_query=True)
    cos = {d["id"]: float(minilm.embed(d["text"]) @ q) for d in DOCS}
    assert [h["id"] for h in hits] == sorted(cos, key=lambda i: -cos[i])
    assert [h["score"] for h in hits] == pytest.approx([cos[h["id"]] for h in hits], abs=1e-4)
    assert hits[0]["text"] == next(d["text"] for d in DOCS if d["id"] == hits[0]["id"])


def test_reranked_search_equals_cross_encoder(http, ce):
    r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 2, "reranker": "ce"})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    scores = dict(zip([d["id"] for d in DOCS], ce.score(QUERY, [d["text"] for d in DOCS])))
    best = sorted(scores, key=lambda i: -scores[i])[:2]
    assert [h["id"] for h in hits] == best
    assert [h["rerank_score"] for h in hits] == pytest.approx([scores[i] for i in best], abs=2e-5)


def test_filter_hybrid_and_bm25(http):
    r = http.post(
        "/v1/search", json={"collection": "notes", "query": QUERY, "k": 4, "filter": {"topic": "med"}, "rerank": False}
    )
    assert {h["id"] for h in r.json()["results"]} == {"d1", "d3"}
    r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 4, "hybrid": True, "rerank": False})
    assert r.status_code == 200 and r.json()["results"][0]["fusion_score"] is not None
    r = http.post("/v1/search", json={"collection": "notes", "query": "statins cholesterol", "k": 2, "mode": "bm25"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == "d1"


def test_search_errors_name_the_field(http):
    cases = [
        ({"collection": "nope", "query": "q"}, 404, "collection"),
        ({"collection": "notes", "query": ""}, 422, "query"),
        ({"collection": "notes", "query": "q", "k": 0}, 422, "k"),
        ({"collection": "notes", "query": "q", "k": 5000}, 422, "k"),
        ({"collection": "notes", "query": "q", "reranker": "minilm"}, 404, "model"),
        ({"collection": "notes", "query": "q", "filter": {"bad key!": 1}}, 422, "filter"),
        ({"collection": "../etc", "query": "q"}, 422, "collection"),
    ]
    for body, status, field in cases:
        r = http.post("/v1/search", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["field"] == field, (body, r.text)
    r = http.post("/v1/collections/notes/documents", json={"documents": [{"text": "no id"}]})
    assert r.status_code == 422 and r.json()["error"]["field"].startswith("documents[0]")
    r = http.post("/v1/collections/other/documents", json={"documents": ["x"], "embedder": "ce"})
    assert r.status_code == 404 and r.json()["error"]["field"] == "model"


def test_search_query_prompt_reaches_the_embedder_only(http, minilm):
    # /v1/search addresses two models, so each has its own field; a sentence-transformers collection takes a prompt
    r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 4, "rerank": False,
                                      "query_prompt": "query: "})
    assert r.status_code == 200, r.text
    q = minilm.model.embed_batch([QUERY], is_query=True, instruction="query: ")[0]
    cos = {d["id"]: float(minilm.embed(d["text"]) @ q) for d in DOCS}
    hits = r.json()["results"]
    assert [h["score"] for h in hits] == pytest.approx([cos[h["id"]] for h in hits], abs=1e-4)
    # the wrong role for the collection's embedder is the caller's mistake, named
    r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "query_task": "Find the law"})
    assert r.status_code in (400, 422) and "query_task" in r.text


def test_search_old_instruction_field_still_accepted(http, minilm):
    old = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 4, "rerank": False,
                                        "instruction": "query: "})
    new = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 4, "rerank": False,
                                        "query_prompt": "query: "})
    assert old.status_code == 200, old.text
    assert [h["score"] for h in old.json()["results"]] == pytest.approx([h["score"] for h in new.json()["results"]])


def test_search_min_score_filters_on_the_rerank_score(http, ce):
    scores = dict(zip([d["id"] for d in DOCS], ce.score(QUERY, [d["text"] for d in DOCS])))
    cut = sorted(scores.values())[2]  # the best two stay
    r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 4, "min_score": cut})
    assert r.status_code == 200, r.text
    assert [h["id"] for h in r.json()["results"]] == sorted((i for i in scores if scores[i] >= cut),
                                                           key=lambda i: -scores[i])
    for body in ({"min_score": "0.5"}, {"min_score": 0.5, "rerank": False}, {"min_score": 0.5, "mode": "bm25"}):
        r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, **body})
        assert r.status_code == 422 and r.json()["error"]["field"] == "min_score", r.text
