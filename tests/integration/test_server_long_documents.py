"""Long documents through the server's doors: qrank's fields on /v1/rerank, /v2/rerank, /rerank (TEI) and
/v1/score, Cohere's max_tokens_per_doc, TEI's truncate=false, max_tokens_per_query, the bad-input table and
the limits, all against the real shared cross-encoder (512-token window) and the tiny real Qwen3 reranker."""

from __future__ import annotations

import httpx
import pytest
from _server_support import live_server, server_settings

from qrank.long_documents import LongDocuments

QUERY = "where do cats sleep?"
LONG = "".join(f"Sentence {i} is about dogs and parks. " if i != 170 else "Cats sleep in warm sunny windows. "
               for i in range(300))  # about 2,700 tokens: six windows of the cross-encoder
SHORT = "Cats like warm places."


@pytest.fixture(scope="module")
def http(ce, qwen3_reranker):
    settings = server_settings(max_documents=5, max_document_chars=20_000)
    with live_server(settings, rerankers={"ce": ce, "qwen3": qwen3_reranker}) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            yield client


def _post(http, path, body, status=200):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json()


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_chunk_through_every_rerank_body_matches_the_python_facade(http, ce, path):
    got = _post(http, path, {"model": "ce", "query": QUERY, "documents": [SHORT, LONG], "long_documents": "chunk",
                             "chunk_aggregate": "max", "return_documents": False})
    expected = {r.index: r for r in ce.rerank(QUERY, [SHORT, LONG], long_documents="chunk")}
    for item in got["results"]:
        want = expected[item["index"]]
        assert item["relevance_score"] == pytest.approx(want.score, abs=2e-5)
        assert item["span"] == want.span._asdict() and item["chunks"] == want.chunks
        assert item["tokens"] == want.tokens and item["truncated"] is False
    long_item = next(i for i in got["results"] if i["index"] == 1)
    assert long_item["chunks"] > 4 and "Cats sleep" in LONG[long_item["span"]["start"] : long_item["span"]["end"]]
    # every chunk was scored, and counted
    plain = _post(http, path, {"model": "ce", "query": QUERY, "documents": [SHORT, LONG]})
    assert got["usage"]["total_tokens"] > 4 * plain["usage"]["total_tokens"] / 2


def test_the_default_truncates_and_says_so(http):
    got = _post(http, "/v1/rerank", {"model": "ce", "query": QUERY, "documents": [LONG, SHORT]})
    by_index = {r["index"]: r for r in got["results"]}
    assert by_index[0]["truncated"] is True and by_index[0]["chunks"] == 1 and by_index[0]["span"]["start"] == 0
    assert by_index[1]["truncated"] is False and by_index[1]["span"] == {"start": 0, "end": len(SHORT)}


def test_tei_body_and_score_body_carry_the_fields(http, ce):
    tei = _post(http, "/rerank", {"model": "ce", "query": QUERY, "texts": [SHORT, LONG], "long_documents": "chunk"})
    assert {r["index"]: r["chunks"] for r in tei}[1] > 4
    score = _post(http, "/v1/score", {"model": "ce", "text_1": QUERY, "text_2": [SHORT, LONG],
                                      "long_documents": "chunk", "chunk_aggregate": "first"})
    first = ce.score(QUERY, [SHORT, LONG], long_documents=LongDocuments(policy="chunk", aggregate="first"))
    assert [d["score"] for d in score["data"]] == pytest.approx(first, abs=2e-5)
    assert score["data"][1]["span"]["start"] == 0 and score["data"][1]["chunks"] > 4


@pytest.mark.parametrize("model", ["ce", "qwen3"])
def test_cohere_max_tokens_per_doc_cuts_the_document_part_only(http, model, ce, qwen3_reranker):
    facade = {"ce": ce, "qwen3": qwen3_reranker}[model]
    got = _post(http, "/v2/rerank", {"model": model, "query": QUERY, "documents": [LONG], "max_tokens_per_doc": 20})
    item = got["results"][0]
    assert item["truncated"] is True and item["tokens"] == 20
    cut = LONG[: item["span"]["end"]]
    assert len(cut) < 200 and item["relevance_score"] == pytest.approx(facade.score(QUERY, [cut])[0], abs=2e-5)
    # the template and the query are whole: the pair the model saw is the cut document's ordinary encoding
    laid = facade.model.document_layouts([(QUERY, cut)])[0]
    assert len(laid.offsets) == 20 and laid.encoded == facade.model.encode_pairs([(QUERY, cut)])[0]


def test_tei_truncate_false_and_error_policy_name_the_document(http):
    r = http.post("/rerank", json={"model": "ce", "query": QUERY, "texts": [SHORT, LONG], "truncate": False})
    assert r.status_code == 413 and r.json()["error"]["field"] == "texts[1]"
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": [SHORT, LONG],
                                      "long_documents": "error"})
    err = r.json()["error"]
    assert r.status_code == 422 and err["field"] == "documents[1]" and "tokens, more than the" in err["message"]
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": [SHORT], "max_tokens_per_query": 2})
    assert r.status_code == 422 and r.json()["error"]["field"] == "query"


BAD = [
    ({"long_documents": "split"}, 422, "long_documents"),
    ({"long_documents": "chunk", "chunk_tokens": 0}, 422, "chunk_tokens"),
    ({"long_documents": "chunk", "chunk_tokens": -5}, 422, "chunk_tokens"),
    ({"long_documents": "chunk", "chunk_tokens": "64"}, 422, "chunk_tokens"),
    ({"long_documents": "chunk", "chunk_tokens": 600}, 422, "chunk_tokens"),  # larger than the 512 window
    ({"long_documents": "chunk", "chunk_overlap": -1}, 422, "chunk_overlap"),
    ({"long_documents": "chunk", "chunk_tokens": 64, "chunk_overlap": 64}, 422, "chunk_overlap"),
    ({"long_documents": "chunk", "chunk_aggregate": "median"}, 422, "chunk_aggregate"),
    ({"long_documents": "chunk", "chunk_top_k": 0}, 422, "chunk_top_k"),
    ({"max_tokens_per_doc": 0}, 422, "max_tokens_per_doc"),
    ({"max_tokens_per_query": -1}, 422, "max_tokens_per_query"),
    ({"long_documents": "chunk", "chunk_tokens": 16, "chunk_overlap": 0}, 413, "documents[1]"),  # > 64 chunks
]


@pytest.mark.parametrize("extra,status,field", BAD)
def test_bad_long_document_input_names_the_field(http, extra, status, field):
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": [SHORT, LONG], **extra})
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field


def test_a_huge_document_is_refused_not_cut_when_chunking(http):
    huge = "word " * 1_000_000  # 5 MB: refused by max_document_chars before anything is tokenized
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": [huge], "long_documents": "chunk"})
    assert r.status_code == 413
    over = "word " * 5_000  # 25,000 characters: over max_document_chars, refused by name rather than cut
    r = http.post("/v1/rerank", json={"model": "ce", "query": QUERY, "documents": [SHORT, over],
                                      "long_documents": "chunk"})
    assert r.status_code == 413 and r.json()["error"]["field"] == "documents[1]"
    cut = _post(http, "/v1/rerank", {"model": "ce", "query": QUERY, "documents": [over]})
    assert cut["results"][0]["truncated"] is True  # 'truncate' may cut by characters, and says so


def test_the_served_models_policy_is_the_default_and_chunks_per_request_a_setting(ce):
    settings = server_settings()
    chunking = type(ce)(ce.model, long_documents=LongDocuments(policy="chunk", max_chunks_per_request=8))
    refusing = type(ce)(ce.model, long_documents="error")
    with live_server(settings, rerankers={"ce": chunking, "strict": refusing}) as url:
        def post(body, path="/v1/rerank"):
            return httpx.post(url + path, json={"query": QUERY, **body}, timeout=60)

        r = post({"documents": [LONG, LONG]})
        assert r.status_code == 413 and r.json()["error"]["field"] == "documents"
        assert post({"documents": [LONG]}).json()["results"][0]["chunks"] > 4
        assert post({"texts": [LONG], "truncate": False}, "/rerank").status_code == 413  # TEI's false: refuse
        r = post({"model": "strict", "documents": [LONG]})
        assert r.status_code == 422 and r.json()["error"]["field"] == "documents[0]"
        assert post({"model": "strict", "texts": [LONG], "truncate": True}, "/rerank").json()[0]["truncated"] is True


def test_openapi_documents_the_fields(http):
    schemas = http.get("/openapi.json").json()["components"]["schemas"]
    request = schemas["RerankRequest"]["properties"]
    for name in ("long_documents", "chunk_tokens", "chunk_overlap", "chunk_aggregate", "max_tokens_per_doc",
                 "max_tokens_per_query"):
        assert request[name]["description"], name
    item = schemas["RerankResultItem"]["properties"]
    for name in ("span", "chunks", "tokens", "truncated"):
        assert name in item
    assert "long_documents" in schemas["ScoreRequest"]["properties"]
