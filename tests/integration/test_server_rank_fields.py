"""Cohere v1's ``rank_fields``: object documents are ranked by the named keys, in the given order, as documented in
docs/server.md (one key: its value; several: ``key: value`` lines), through the real Cohere v1 client and plain
JSON; a document missing a named key is a 422 naming it. With ``return_documents`` each result's ``document`` is the
object as sent (every key, values unchanged), with ``text`` (the text that was ranked) added when it has none."""

from __future__ import annotations

import json

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


def _documents(body) -> dict[int, dict]:
    return {item["index"]: item["document"] for item in body["results"]}


def _joined(d: dict) -> str:
    return f"title: {d['title']}\nbody: {d['body']}"


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


# --- results return the documents as sent ---------------------------------------------------------------------------

# objects with their own text and keys of every JSON kind, nulls and nesting included
WITH_TEXT = [
    {"text": d["body"], "id": 7 + i, "title": d["title"], "note": None,
     "meta": {"year": d["year"], "tags": ["a", None, True], "weight": 0.5, "source": {"db": "pubmed", "rank": None}}}
    for i, d in enumerate(DOCS)
]


def test_objects_without_text_come_back_as_sent_with_the_ranked_text_added(http, ce):
    texts = [_joined(d) for d in DOCS]
    want = ce.score(QUERY, texts)
    for path in ("/v1/rerank", "/v2/rerank", "/rerank"):
        r = http.post(path, json={"model": "ce", "query": QUERY, "documents": DOCS, "rank_fields": ["title", "body"],
                                  "top_n": 2})
        assert r.status_code == 200, (path, r.text)
        results = r.json()["results"]
        assert len(results) == 2 and results[0]["index"] == 1
        for item in results:  # top_n keeps each result's own document
            assert item["document"] == {**DOCS[item["index"]], "text": texts[item["index"]]}, path
            assert item["relevance_score"] == pytest.approx(want[item["index"]], abs=TOL)  # scored as before


def test_objects_with_text_come_back_exactly_as_sent(http, ce):
    bodies = [d["text"] for d in WITH_TEXT]
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": WITH_TEXT})
    assert r.status_code == 200, r.text
    assert _documents(r.json()) == dict(enumerate(WITH_TEXT))  # nulls, nesting and all
    assert _scores(r.json()) == pytest.approx(ce.score(QUERY, bodies), abs=TOL)  # ranked by 'text', as before
    # ranked by other keys, an object keeps its own text: it is returned as sent, scored by its rank_fields text
    r = http.post("/rerank", json={"model": "ce", "query": QUERY, "documents": WITH_TEXT, "rank_fields": ["title"]})
    assert r.status_code == 200, r.text
    assert _documents(r.json()) == dict(enumerate(WITH_TEXT))
    assert _scores(r.json()) == pytest.approx(ce.score(QUERY, [d["title"] for d in WITH_TEXT]), abs=TOL)
    # return_documents: false returns none, as before
    r = http.post("/v2/rerank", json={"model": "ce", "query": QUERY, "documents": WITH_TEXT, "return_documents": False})
    assert r.status_code == 200 and all("document" not in item for item in r.json()["results"]), r.text


def test_strings_still_come_back_as_text_alone_and_a_null_text_is_filled(http):
    docs = ["Vitamin D did not reduce hip fractures in a large trial.", {**DOCS[1], "text": None}, DOCS[2]]
    body = {"model": "ce", "query": QUERY, "documents": docs, "rank_fields": ["title", "body"]}
    r = http.post("/v1/rerank", json=body)
    assert r.status_code == 200, r.text
    assert _documents(r.json()) == {0: {"text": docs[0]}, 1: {**DOCS[1], "text": _joined(DOCS[1])},
                                    2: {**DOCS[2], "text": _joined(DOCS[2])}}


def test_the_span_is_in_the_ranked_text_not_in_a_returned_text(http):
    doc = {"text": "short", **DOCS[1]}
    body = {"model": "ce", "query": QUERY, "documents": [doc], "rank_fields": ["title", "body"]}
    r = http.post("/v1/rerank", json=body)
    assert r.status_code == 200, r.text
    item = r.json()["results"][0]
    assert item["document"] == doc
    assert item["span"] == {"start": 0, "end": len(_joined(DOCS[1]))} and item["chunks"] == 1


@pytest.mark.parametrize("document,rank_fields,words", [
    ('{"text": "a", "meta": {"tags": ["\\ud800"]}}', None, "meta.tags[0] contains a lone surrogate"),
    ('{"text": "a", "\\udc00": 1}', None, "a key with a lone surrogate"),
    ('{"text": "a", "x": NaN}', None, "x is nan"),
    ('{"text": "a", "x": [1e999]}', None, "x[0] is inf"),
    ('{"text": "a", "x": ' + "[" * 100 + "]" * 100 + "}", None, "nests deeper than 64 levels"),
    ('{"text": 5, "title": "Vitamin D"}', ["title"], "'text' is number"),
])
def test_an_object_that_cannot_be_returned_as_sent_is_a_422_unless_none_is_returned(http, document, rank_fields,
                                                                                     words):
    extra = f', "rank_fields": {json.dumps(rank_fields)}' if rank_fields else ""
    for returned, code in (("true", 422), ("false", 200)):
        raw = (f'{{"model": "ce", "query": "vitamin D", "documents": ["fine", {document}], '
               f'"return_documents": {returned}{extra}}}')
        r = http.post("/v1/rerank", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == code, (returned, r.text)
        if code == 422:
            err = r.json()["error"]
            assert err["field"] == "documents[1]" and words in err["message"], err


def test_cohere_v1_client_reads_the_ranked_text_and_the_extra_keys(url):
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(api_key="unused", base_url=url)
    resp = client.rerank(model="ce", query=QUERY, documents=DOCS, rank_fields=["title", "body"], return_documents=True)
    assert len(resp.results) == len(DOCS)
    for r in resp.results:
        d = DOCS[r.index]
        assert r.document.text == _joined(d)
        assert (r.document.title, r.document.body, r.document.year) == (d["title"], d["body"], d["year"])
    with_ids = [{"text": d["body"], "id": f"doc-{i}", "year": d["year"]} for i, d in enumerate(DOCS)]
    resp = client.rerank(model="ce", query=QUERY, documents=with_ids, top_n=1, return_documents=True)
    (top,) = resp.results
    assert top.index == 1 and top.document.text == DOCS[1]["body"]
    assert (top.document.id, top.document.year) == ("doc-1", DOCS[1]["year"])
