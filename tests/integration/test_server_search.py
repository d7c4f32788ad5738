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
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("search-home")


@pytest.fixture(scope="module")
def http(home, ce, minilm):
    settings = server_settings(home=home)
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


def _as_served(hit) -> dict:
    """A SearchHit as /v1/search returns it: every field the CLI's --json prints, less the nulls that do not apply;
    rerank_score stays, null when the search did not rerank."""
    return {k: v for k, v in hit.to_dict().items() if v is not None or k == "rerank_score"}


def _published(http, name: str):
    jsonschema = pytest.importorskip("jsonschema")
    spec = http.get("/openapi.json").json()
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def test_rerank_score_is_null_when_the_search_did_not_rerank(http, home, minilm):
    from qrank import Settings
    from qrank.pipeline import Pipeline

    schema = _published(http, "SearchResponse")
    spec = http.get("/openapi.json").json()["components"]["schemas"]["SearchHitItem"]
    assert "rerank_score" in spec["required"] and {"type": "null"} in spec["properties"]["rerank_score"]["anyOf"]
    bodies = [{"rerank": False}, {"mode": "hybrid", "rerank": False}, {"mode": "bm25"}]
    with Pipeline.open("notes", embedder=minilm, settings=Settings(home=home), create=False) as local:
        for extra in bodies:
            r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 3, **extra})
            assert r.status_code == 200, r.text
            schema.validate(r.json())
            hits = r.json()["results"]
            assert hits and all("rerank_score" in h and h["rerank_score"] is None for h in hits), (extra, hits)
            # what the same call of the Pipeline (the CLI's --json) gives, field for field
            if extra.get("mode") == "bm25":
                expected = local.lexical_search(QUERY, k=3)
            else:
                expected = local.search(QUERY, k=3, rerank=False, hybrid=extra.get("mode") == "hybrid")
            assert all(h.rerank_score is None for h in expected)
            for got, want in zip(hits, map(_as_served, expected), strict=True):
                assert got.keys() == want.keys() and got["id"] == want["id"], (got, want)
                assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 2})
    schema.validate(r.json())
    assert all(isinstance(h["rerank_score"], float) for h in r.json()["results"])


def test_bm25_mode_is_bm25_alone_while_dense_and_hybrid_rerank_by_default(http):
    """mode 'bm25' is Pipeline.lexical_search (no model runs): it never reranks, even with a reranker served; the
    modes that are Pipeline.search rerank by default, as qrank search does."""
    for mode in ("dense", "hybrid"):
        r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "k": 2, "mode": mode})
        assert all(h["rerank_score"] is not None and h["score"] == h["rerank_score"] for h in r.json()["results"])
    r = http.post("/v1/search", json={"collection": "notes", "query": "statins cholesterol", "k": 2, "mode": "bm25"})
    hits = r.json()["results"]
    assert hits[0]["id"] == "d1" and all(h["score"] == h["bm25_score"] and h["rerank_score"] is None for h in hits)
    r = http.post("/v1/search", json={"collection": "notes", "query": QUERY, "mode": "bm25", "rerank": True})
    assert r.status_code == 422 and r.json()["error"]["field"] == "rerank"


TRASH = [{"id": f"t{i}", "text": text} for i, text in enumerate(
    ["Statins lower cholesterol.", "Paris has the Eiffel Tower.", "Bananas hold potassium."])]


def _ids(http, collection: str, **body) -> list[str]:
    r = http.post("/v1/search", json={"collection": collection, "query": "statins Paris bananas", "k": 10, **body})
    assert r.status_code == 200, r.text
    return sorted(h["id"] for h in r.json()["results"])


def _count(http, collection: str) -> int:
    return next(c["count"] for c in http.get("/v1/collections").json()["data"] if c["name"] == collection)


def test_delete_documents_refuses_bad_input_and_keeps_the_data(http):
    r = http.post("/v1/collections/trash/documents", json={"documents": TRASH})
    assert r.status_code == 200 and r.json()["count"] == 3, r.text
    cases = [
        ({"ids": []}, 422, "ids"),
        ({}, 422, "ids"),
        ({"ids": None}, 422, "ids"),
        ({"ids": "t0"}, 422, "ids"),
        ({"ids": [1]}, 422, "ids[0]"),
        ({"ids": ["t0", None]}, 422, "ids[1]"),
        ({"ids": ["t0", {"id": "t1"}]}, 422, "ids[1]"),
        ({"ids": ["t0", " "]}, 422, "ids[1]"),
        ({"ids": ["t0", "x" * 513]}, 422, "ids[1]"),
        ({"ids": [f"t{i}" for i in range(2049)]}, 413, "ids"),  # more than max_inputs, as adding documents
    ]
    for body, status, field in cases:
        r = http.post("/v1/collections/trash/documents/delete", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["field"] == field, (body, r.text)
    r = http.post("/v1/collections/trash/documents/delete", content=b"{nope",
                  headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    r = http.post("/v1/collections/no-such/documents/delete", json={"ids": ["t0"]})
    assert r.status_code == 404 and r.json()["error"]["field"] == "collection" and "no-such" in r.text, r.text
    r = http.post("/v1/collections/bad name!/documents/delete", json={"ids": ["t0"]})
    assert r.status_code == 422, r.text
    # nothing was lost: every document is still stored and found by each first stage
    assert _count(http, "trash") == 3
    for body in ({"rerank": False}, {"mode": "bm25"}, {"mode": "hybrid", "rerank": False}):
        assert _ids(http, "trash", **body) == ["t0", "t1", "t2"]


def test_delete_documents_reports_deleted_and_not_found(http):
    if _count(http, "trash") != 3:
        http.post("/v1/collections/trash/documents", json={"documents": TRASH})
    schema = _published(http, "DeleteDocumentsResponse")
    r = http.post("/v1/collections/trash/documents/delete", json={"ids": ["t1", "nope", "t1", "also-nope"]})
    assert r.status_code == 200, r.text
    schema.validate(r.json())
    assert r.json() == {"collection": "trash", "deleted": 1, "not_found": ["nope", "also-nope"], "count": 2}
    assert _count(http, "trash") == 2
    for body in ({"rerank": False}, {"mode": "bm25"}, {"mode": "hybrid", "rerank": False}, {}):
        assert _ids(http, "trash", **body) == ["t0", "t2"], body
    # again: nothing left to delete is no error
    r = http.post("/v1/collections/trash/documents/delete", json={"ids": ["t1"]})
    assert r.json() == {"collection": "trash", "deleted": 0, "not_found": ["t1"], "count": 2}
    # added back, it is found again (the cache forgot its old scores with it)
    http.post("/v1/collections/trash/documents", json={"documents": [TRASH[1]]})
    assert _ids(http, "trash") == ["t0", "t1", "t2"]
    assert "/v1/collections/{name}/documents/delete" in http.get("/openapi.json").json()["paths"]


def test_id_errors_say_characters_and_an_add_counts_same_text(http):
    r = http.post("/v1/collections/trash/documents/delete", json={"ids": ["x" * 600]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "ids[0]", r.text
    assert r.json()["error"]["message"] == "ids[0]: must be at most 512 characters, got 600", r.text
    spec = http.get("/openapi.json").json()["components"]["schemas"]["DeleteDocumentsRequest"]
    assert spec["properties"]["ids"]["items"]["maxLength"] == 512  # the published bound is unchanged
    # the add route names the id and says characters too, for ids= and for an object's id
    for body, field in [({"documents": ["t"], "ids": ["x" * 600]}, "ids[0]"),
                        ({"documents": [{"id": "x" * 600, "text": "t"}]}, "documents[0].id")]:
        r = http.post("/v1/collections/twins/documents", json=body)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
        assert r.json()["error"]["message"] == f"{field}: must be at most 512 characters, got 600", r.text
    r = http.post("/v1/collections/twins/documents", json={"documents": ["Same words.", "Same words."],
                                                           "ids": ["s1", "s2"]})
    assert r.status_code == 200 and r.json()["same_text"] == 1 and r.json()["count"] == 2, r.text
    r = http.post("/v1/collections/twins/documents", json={"documents": ["Same words."], "ids": ["s3"]})
    assert r.json()["same_text"] == 1 and r.json()["added"] == 1, r.text
