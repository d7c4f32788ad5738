"""Cohere v1's ``rank_fields``: object documents are ranked by the named keys, in the given order, as documented in
docs/server.md (one key: its value; several: ``key: value`` lines), through the real Cohere v1 client and plain
JSON; a document missing a named key is a 422 naming it."""

from __future__ import annotations

import httpx
import pytest
from _server_support import live_server, server_settings

QUERY = "Does vitamin D supplementation reduce the risk of fractures?"
DOCS = [
    {"title": "Protein folding", "body": "Deep learning models for protein folding reached near-experimental accuracy.",
     "year": 2021},
    {"title": "Vitamin D and fractures", "body": "Daily vitamin D and calcium lowered fracture incidence among "
     "nursing home residents.", "year": 1992},
    {"title": "Mitochondria", "body": "The mitochondrial genome encodes 13 proteins of the respiratory chain.",
     "year": 1981},
]
TOL = 2e-5


@pytest.fixture(scope="module")
def url(ce):
    with live_server(server_settings(), rerankers={"ce": ce}) as u:
        yield u


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def _scores(body) -> list[float]:
    return [item["relevance_score"] for item in sorted(body["results"], key=lambda item: item["index"])]


def test_cohere_v1_client_ranks_objects_by_the_named_fields_in_order(url, ce):
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(api_key="unused", base_url=url)
    resp = client.rerank(model="ce", query=QUERY, documents=DOCS, rank_fields=["title", "body"])
    texts = [f"title: {d['title']}\nbody: {d['body']}" for d in DOCS]
    local = ce.rerank(QUERY, texts)
    assert [r.index for r in resp.results] == [r.index for r in local] and resp.results[0].index == 1
    assert [r.relevance_score for r in resp.results] == pytest.approx([r.score for r in local], abs=TOL)


def test_the_order_of_rank_fields_is_the_order_of_the_lines(http, ce):
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS,
                                      "rank_fields": ["body", "year", "title"]})
    assert r.status_code == 200, r.text
    texts = [f"body: {d['body']}\nyear: {d['year']}\ntitle: {d['title']}" for d in DOCS]
    assert _scores(r.json()) == pytest.approx(ce.score(QUERY, texts), abs=TOL)
    returned = {item["index"]: item["document"]["text"] for item in r.json()["results"]}
    assert returned == dict(enumerate(texts))  # the text that was ranked


def test_one_field_is_ranked_by_its_value_and_text_is_the_default(http, ce):
    by_body = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS, "rank_fields": ["body"]})
    assert by_body.status_code == 200, by_body.text
    plain = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": [d["body"] for d in DOCS]})
    assert _scores(by_body.json()) == pytest.approx(_scores(plain.json()), abs=TOL)
    with_text = [{"text": d["body"], "title": d["title"]} for d in DOCS]
    body = {"model": "ce", "query": QUERY, "documents": with_text}
    named, default = http.post("/v1/rerank", json={**body, "rank_fields": ["text"]}), http.post("/v1/rerank", json=body)
    assert _scores(named.json()) == pytest.approx(_scores(default.json()), abs=TOL)


def test_strings_and_objects_mix_and_every_rerank_route_takes_it(http, ce):
    docs = ["Vitamin D did not reduce hip fractures in a large trial.", DOCS[2]]
    for path in ("/v1/rerank", "/v2/rerank", "/rerank"):
        r = http.post(path, json={"model": "ce", "query": QUERY, "documents": docs, "rank_fields": ["title", "body"]})
        assert r.status_code == 200, (path, r.text)
        want = ce.score(QUERY, [docs[0], f"title: {DOCS[2]['title']}\nbody: {DOCS[2]['body']}"])
        assert _scores(r.json()) == pytest.approx(want, abs=TOL)


@pytest.mark.parametrize("extra,field,words", [
    ({"documents": [DOCS[0], {"title": "No body"}], "rank_fields": ["title", "body"]}, "documents[1]", "'body'"),
    ({"documents": [{"title": "t"}]}, "documents[0]", "rank_fields"),  # no text, no rank_fields: as before
    ({"documents": DOCS, "rank_fields": []}, "rank_fields", "at least 1"),
    ({"documents": DOCS, "rank_fields": "title"}, "rank_fields", "list"),
    ({"documents": DOCS, "rank_fields": ["title", ""]}, "rank_fields[1]", "at least 1"),
    # a key named again and again copied its value each time, before any limit (found 2026-12-08: a 125 KB body
    # took 14 s and 1.4 GB): each key once, at most 64
    ({"documents": [{"a": "x" * 1000}], "rank_fields": ["a"] * 5000}, "rank_fields", "at most 64"),
    ({"documents": [{"a": "x", "b": "y"}], "rank_fields": ["a", "b", "a"]}, "rank_fields", "'a' twice"),
])
def test_a_missing_field_is_a_422_naming_it(http, extra, field, words):
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, **extra})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and words in err["message"], err
