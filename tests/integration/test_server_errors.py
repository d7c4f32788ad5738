"""Bad input never reaches a 5xx: each case gets its 4xx and a JSON body naming the field at fault.
Also: limits (documents, characters, tokens, body, headers) and the API key on every route."""

from __future__ import annotations

import httpx
import pytest
from _server_support import live_server, load_bench_module, server_settings

LONG_DOC = "b " * 1400  # 1400 tokens > 512 for the cross-encoder, 2800 chars < max_document_chars below
OK = {"query": "q", "documents": ["a"]}

# (path, json body, status, field)
CASES = [
    ("/v1/rerank", {"documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": "", "documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": "   ", "documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": None, "documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": 123, "documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": ["q"], "documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": "q"}, 422, "documents"),
    ("/v1/rerank", {"query": "q", "documents": []}, 422, "documents"),
    ("/v1/rerank", {"query": "q", "documents": "a string"}, 422, "documents"),
    ("/v1/rerank", {"query": "q", "documents": None}, 422, "documents"),
    ("/v1/rerank", {"query": "q", "documents": [None]}, 422, "documents[0]"),
    ("/v1/rerank", {"query": "q", "documents": ["a", 5]}, 422, "documents[1]"),
    ("/v1/rerank", {"query": "q", "documents": ["a", ["b"]]}, 422, "documents[1]"),
    ("/v1/rerank", {"query": "q", "documents": [{"txt": "a"}]}, 422, "documents[0]"),
    ("/v1/rerank", {"query": "q", "documents": [{"text": None}]}, 422, "documents[0]"),
    ("/v1/rerank", {**OK, "top_n": 0}, 422, "top_n"),
    ("/v1/rerank", {**OK, "top_n": -3}, 422, "top_n"),
    ("/v1/rerank", {**OK, "top_n": "2"}, 422, "top_n"),
    ("/v1/rerank", {**OK, "top_n": 1.5}, 422, "top_n"),
    ("/v1/rerank", {**OK, "top_n": True}, 422, "top_n"),
    ("/v1/rerank", {**OK, "top_n": 10**30}, 422, "top_n"),
    ("/v1/rerank", {**OK, "top_n": 6}, 422, "top_n"),  # above max_documents=5
    ("/v1/rerank", {**OK, "return_documents": "yes"}, 422, "return_documents"),
    ("/v1/rerank", {**OK, "instruction": 7}, 422, "instruction"),
    ("/v1/rerank", {**OK, "model": 5}, 422, "model"),
    ("/v1/rerank", {**OK, "model": "no-such-model"}, 404, "model"),
    ("/v1/rerank", {**OK, "model": "minilm"}, 404, "model"),
    ("/v1/rerank", {"query": "q", "documents": ["d"] * 6}, 413, "documents"),
    ("/v1/rerank", {"query": "q", "documents": ["a", "x" * 3001], "truncate": False}, 413, "documents[1]"),
    ("/v1/rerank", {"query": "q", "documents": ["a", LONG_DOC], "truncate": False}, 413, "documents[1]"),
    ("/v1/rerank", {"query": "q" * 3001, "documents": ["a"]}, 413, "query"),
    ("/v1/rerank", [], 422, "body"),
    ("/v1/rerank", "just a string", 422, "body"),
    ("/v2/rerank", {"query": "q", "documents": [5]}, 422, "documents[0]"),
    ("/rerank", {"query": "q"}, 422, "documents"),
    ("/rerank", {"query": "q", "texts": ["a"], "documents": ["a"]}, 422, "texts"),
    ("/rerank", {"query": "q", "texts": []}, 422, "texts"),
    ("/rerank", {"query": "q", "texts": [None]}, 422, "texts[0]"),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": "no"}, 422, "raw_scores"),
    ("/v1/score", {"text_1": [], "text_2": ["a"]}, 422, "text_1"),
    ("/v1/score", {"text_1": "", "text_2": ["a"]}, 422, "text_1[0]"),  # a string is a list of one
    ("/v1/score", {"text_1": ["q", " "], "text_2": ["a", "b"]}, 422, "text_1[1]"),
    ("/v1/score", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, 422, "text_2"),
    ("/v1/score", {"text_1": "q", "text_2": [5]}, 422, "text_2[0]"),
    ("/v1/score", {"text_1": "q"}, 422, "text_2"),
    ("/v1/score", {"text_1": "q" * 3001, "text_2": ["a"]}, 413, "text_1"),
    ("/v1/embeddings", {"input": []}, 422, "input"),
    ("/v1/embeddings", {}, 422, "input"),
    ("/v1/embeddings", {"input": [None]}, 422, "input[0]"),
    ("/v1/embeddings", {"input": [1, 2, 3]}, 422, "input[0]"),
    ("/v1/embeddings", {"input": [[1, 2]]}, 422, "input[0]"),
    ("/v1/embeddings", {"input": "a", "dimensions": 0}, 422, "dimensions"),
    ("/v1/embeddings", {"input": "a", "dimensions": 10_000}, 422, "dimensions"),
    ("/v1/embeddings", {"input": "a", "dimensions": 64}, 422, "dimensions"),  # MiniLM is not a Matryoshka model
    ("/v1/embeddings", {"input": ""}, 422, "input[0]"),
    ("/v1/embeddings", {"input": ["a", " \n\t"]}, 422, "input[1]"),
    ("/v1/embeddings", {"input": "a", "encoding_format": "int8"}, 422, "encoding_format"),
    ("/v1/embeddings", {"input": "a", "input_type": "passage"}, 422, "input_type"),
    ("/v1/embeddings", {"input": "a", "model": "ce"}, 404, "model"),
    ("/v1/embeddings", {"input": ["a"] * 7}, 413, "input"),
    ("/v1/embeddings", {"input": ["a", LONG_DOC], "truncate": False}, 413, "input[1]"),
    ("/embed", {"inputs": None}, 422, "inputs"),
    ("/embed", {"inputs": ["a", 3]}, 422, "inputs[1]"),
    ("/embed", {"inputs": ""}, 422, "inputs[0]"),
    ("/embed", {"inputs": ["a", "   "]}, 422, "inputs[1]"),
    ("/embed", {"inputs": "a", "dimensions": 32}, 422, "dimensions"),
]


@pytest.fixture(scope="module")
def http(ce, minilm):
    settings = server_settings(max_documents=5, max_inputs=6, max_document_chars=3000, max_body_bytes=64 * 1024)
    with live_server(settings, rerankers={"ce": ce}, embedders={"minilm": minilm}) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


@pytest.mark.parametrize("path,body,status,field", CASES, ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_names_the_field(http, path, body, status, field):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    assert err["message"] and r.json()["message"] == err["message"]


def test_null_for_an_optional_field_means_its_default(http):
    """Clients that send explicit nulls for unset options got 422 on some fields and not others (2026-12-07)."""
    nulls = {"encoding_format": None, "input_type": None, "dimensions": None, "user": None, "model": None}
    r = http.post("/v1/embeddings", json={"input": ["a"], **nulls})
    assert r.status_code == 200 and isinstance(r.json()["data"][0]["embedding"], list), r.text
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        r = http.post(path, json={"query": "q", "documents": ["a", "b"], "return_documents": None, "top_n": None,
                                  "max_tokens_per_doc": None, "long_documents": None})
        assert r.status_code == 200 and r.json()["results"][0]["document"] is not None, (path, r.text)
    r = http.post("/v1/rerank", json={"query": None, "documents": ["a"]})  # a required field stays required
    assert r.status_code == 422 and r.json()["error"]["field"] == "query", r.text
    schema = http.get("/openapi.json").json()["components"]["schemas"]["EmbeddingRequest"]["properties"]
    assert {"type": "null"} in schema["encoding_format"]["anyOf"]  # and the published schema says so


def test_malformed_bodies(http):
    def post(content: bytes, ctype: str | None = "application/json"):
        headers = {"content-type": ctype} if ctype else {}
        return http.post("/v1/rerank", content=content, headers=headers)

    for content, ctype in [
        (b'{"query": "\xff\xfe", "documents": ["a"]}', "application/json"),  # invalid UTF-8
        (b'{"query": "q", "documents": ["a"]', "application/json"),  # truncated JSON
        (b"", "application/json"),  # no body at all
        (b'{"query": "q", "documents": ["a"]}', None),  # no content type
        (b"query=q&documents=a", "application/x-www-form-urlencoded"),
    ]:
        r = post(content, ctype)
        assert r.status_code in (400, 422), (content, r.text)
        assert r.json()["error"]["field"] == "body", (content, r.text)
    # a JSON escape can spell a lone surrogate, which is not text
    r = post(b'{"query": "\\ud800", "documents": ["a"]}')
    assert r.status_code == 422 and r.json()["error"]["field"] == "query"


def test_oversized_body_with_and_without_content_length(http):
    big = {"query": "q", "documents": ["x" * 2000] * 40}  # ~80 kB > 64 kB
    r = http.post("/v1/rerank", json=big)
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"

    def chunks():
        for _ in range(40):
            yield b"x" * 2000

    r = http.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})  # chunked, no length
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"


def test_truncation_is_the_default(http, ce):
    r = http.post("/v1/rerank", json={"query": "b", "documents": ["a", LONG_DOC]})
    assert r.status_code == 200, r.text
    assert {x["index"]: x["relevance_score"] for x in r.json()["results"]}[1] == pytest.approx(
        ce.score("b", [LONG_DOC])[0], abs=2e-5
    )
    over_chars = "word " * 1000  # 5000 chars > 3000: cut to the limit, not refused
    r = http.post("/v1/rerank", json={"query": "q", "documents": [over_chars]})
    assert r.status_code == 200 and r.json()["results"][0]["document"]["text"] == over_chars


def test_wrong_method_and_unknown_route(http):
    r = http.get("/v1/rerank")
    assert r.status_code == 405 and r.json()["error"]["type"] == "MethodNotAllowed"
    r = http.post("/v1/nothing", json=OK)
    assert r.status_code == 404 and "error" in r.json()


def test_header_size_is_limited(http):
    r = http.post("/v1/rerank", json=OK, headers={"x-padding": "a" * 40_000})
    assert r.status_code == 431 and r.json()["error"]["field"] == "headers"
    assert http.post("/v1/rerank", json=OK).status_code == 200  # the server is still fine


def test_api_key_guards_every_route(ce, minilm):
    settings = server_settings(api_key="s3cret-key")
    with live_server(settings, rerankers={"ce": ce}, embedders={"minilm": minilm}) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            good = {"authorization": "Bearer s3cret-key"}
            paths = list(client.get("/openapi.json", headers=good).json()["paths"])
            assert "/v1/rerank" in paths and "/metrics" in paths
            bad_headers = [
                {},
                {"authorization": "Bearer wrong"},
                {"authorization": "Basic s3cret-key"},
                {"authorization": "s3cret-key"},
                {"host": "localhost"},
                {"host": "127.0.0.1", "x-forwarded-for": "127.0.0.1"},
            ]
            for path in [*paths, "/docs", "/openapi.json", "/no/such/route"]:
                for headers in bad_headers:
                    for method in ("GET", "POST"):
                        if method == "GET" and path in ("/health", "/ready"):
                            continue  # load-balancer probes need no key (tests/integration/test_adversarial.py)
                        r = client.request(method, path, headers=headers, json=OK)
                        assert r.status_code == 401, (method, path, headers, r.status_code)
                        assert r.json()["error"]["field"] == "authorization"
                        assert r.headers["www-authenticate"] == "Bearer"
            assert client.post("/v1/rerank", json=OK, headers=good).status_code == 200
            assert client.get("/ready", headers=good).status_code == 200
            cohere = pytest.importorskip("cohere")
            co = cohere.ClientV2(api_key="s3cret-key", base_url=url, log_warning_experimental_features=False)
            assert co.rerank(model="ce", query="q", documents=["a", "b"]).results
            with pytest.raises(cohere.errors.UnauthorizedError):
                cohere.ClientV2(api_key="nope", base_url=url, log_warning_experimental_features=False).rerank(
                    model="ce", query="q", documents=["a"]
                )


def test_refuses_to_start_with_impossible_settings(ce):
    from qrank import InvalidInput, QrankError, Settings
    from qrank.server import ModelPool

    pool = ModelPool.from_models(rerankers={"ce": ce})
    with pytest.raises(InvalidInput) as err:
        pool.check(Settings(engine={"max_batch_tokens": 256}))  # ce's max_length is 512
    assert err.value.field == "engine.max_batch_tokens"
    with pytest.raises(InvalidInput) as err:
        pool.check(Settings(server={"batch_max_tokens": 128}))
    assert err.value.field == "server.batch_max_tokens"
    with pytest.raises(InvalidInput):
        ModelPool.from_models(rerankers={"x": ce}, embedders={"x": ce})  # one name, two models
    # and the app itself does not start (uvicorn sees the lifespan fail)
    from qrank.server import create_app
    from qrank.server.run import running_server

    bad = Settings(engine={"max_batch_tokens": 256})
    with pytest.raises(QrankError, match="start-up"):
        with running_server(create_app(bad, ModelPool.from_models(rerankers={"ce": ce})), bad, startup_timeout=30):
            pass


def test_local_by_default_and_load_script_stays_local():
    from qrank import Settings

    assert Settings().server.host == "127.0.0.1"
    load = load_bench_module("server_load")
    with pytest.raises(SystemExit):
        load.check_local("http://example.com:8000")
    load.check_local("http://127.0.0.1:8000")


def test_api_key_guards_a_mounted_ui(ce):
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    from fastapi.testclient import TestClient

    from qrank.server import ModelPool, create_app
    from qrank.ui import mount_ui

    settings = server_settings(api_key="ui-key")
    app = create_app(settings, ModelPool.from_models(rerankers={"ce": ce}))
    mount_ui(app, settings, rerankers={"ce": ce})
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for path in ("/ui/", "/ui/gradio_api/info", "/ui/config"):
            r = client.get(path, headers={"host": "localhost"})
            assert r.status_code == 401, (path, r.status_code)
        assert client.get("/ui/", headers={"authorization": "Bearer ui-key"}).status_code == 200
