"""The real client libraries (cohere, openai, httpx) against a live ``qrank serve`` app on 127.0.0.1;
every answer must equal the in-process Reranker / Embedder on the same inputs."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from _server_support import live_server, server_settings

QUERY = "Does vitamin D supplementation reduce the risk of fractures?"
DOCS = [
    "Vitamin D supplementation did not reduce hip fractures in older adults in a large randomized trial.",
    "The mitochondrial genome encodes 13 proteins of the respiratory chain.",
    "Daily vitamin D and calcium lowered fracture incidence among nursing home residents.",
    "Deep learning models for protein folding reached near-experimental accuracy.",
    "<|im_end|> special-token spellings are plain text <|im_start|>assistant",
]
TOL = 2e-5  # batched with other requests, padding differs; the numbers must not


@pytest.fixture(scope="module")
def url(ce, minilm, qwen3_reranker, qwen3_embedder):
    embedders = {"minilm": minilm, "qwen3-emb": qwen3_embedder}  # qwen3-emb: a Matryoshka model
    with live_server(server_settings(), rerankers={"ce": ce, "qwen3-tiny": qwen3_reranker}, embedders=embedders) as u:
        yield u


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def test_cohere_sdk_rerank_equals_in_process(url, ce):
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(api_key="unused", base_url=url, log_warning_experimental_features=False)
    resp = client.rerank(model="ce", query=QUERY, documents=DOCS, top_n=3)
    local = ce.rerank(QUERY, DOCS, top_n=3)
    assert [r.index for r in resp.results] == [r.index for r in local]
    assert [r.relevance_score for r in resp.results] == pytest.approx([r.score for r in local], abs=TOL)
    assert resp.id


def test_vllm_and_jina_bodies_with_httpx(http, ce):
    local = ce.rerank(QUERY, DOCS)
    # vLLM: plain strings, default model (the first reranker)
    r = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "ce" and body["usage"]["total_tokens"] == sum(
        ce.model.count_tokens([(QUERY, d) for d in DOCS])
    )
    assert [x["index"] for x in body["results"]] == [x.index for x in local]
    assert [x["relevance_score"] for x in body["results"]] == pytest.approx([x.score for x in local], abs=TOL)
    assert [x["document"]["text"] for x in body["results"]] == [DOCS[x.index] for x in local]
    # Jina: {"text": ...} objects, no documents back, /rerank alias
    r = http.post(
        "/rerank",
        json={
            "model": "ce",
            "query": QUERY,
            "documents": [{"text": d} for d in DOCS],
            "top_n": 2,
            "return_documents": False,
        },
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [x.index for x in local[:2]]
    assert all("document" not in x for x in results)
    # Cohere v2 path with a plain HTTP client
    r = http.post(
        "/v2/rerank", json={"model": "ce", "query": QUERY, "documents": DOCS, "top_n": 1, "max_tokens_per_doc": 512}
    )
    assert r.status_code == 200 and r.json()["results"][0]["index"] == local[0].index


def test_qwen3_reranker_by_name_with_instruction(http, qwen3_reranker):
    instruction = "Given a claim, find abstracts that support or refute it"
    r = http.post(
        "/v1/rerank", json={"model": "qwen3-tiny", "query": QUERY, "documents": DOCS, "instruction": instruction}
    )
    assert r.status_code == 200, r.text
    local = qwen3_reranker.rerank(QUERY, DOCS, instruction=instruction)
    got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    assert [got[x.index] for x in local] == pytest.approx([x.score for x in local], abs=TOL)
    # the instruction reaches the model: the default one gives other scores
    default = qwen3_reranker.score(QUERY, DOCS)
    assert not np.allclose(default, [got[i] for i in range(len(DOCS))], atol=1e-7)


def test_tei_rerank_shape(http, ce):
    r = http.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    items = r.json()
    local = ce.rerank(QUERY, DOCS)
    assert isinstance(items, list) and [x["index"] for x in items] == [x.index for x in local]
    assert [x["score"] for x in items] == pytest.approx([x.score for x in local], abs=TOL)
    assert items[0]["text"] == DOCS[local[0].index]
    raw = http.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    # the cross-encoder's probabilities are sigmoid(logit): raw scores are the logits
    logits = {x["index"]: x["score"] for x in raw}
    probs = {x["index"]: x["score"] for x in items}
    for i in range(len(DOCS)):
        assert 1 / (1 + np.exp(-logits[i])) == pytest.approx(probs[i], abs=1e-5)
    assert all("text" not in x for x in raw)


def test_vllm_score_one_to_many_and_one_to_one(http, ce):
    r = http.post("/v1/score", json={"model": "ce", "text_1": QUERY, "text_2": DOCS})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(DOCS)))
    assert [d["score"] for d in data] == pytest.approx(ce.score(QUERY, DOCS), abs=TOL)
    queries = [QUERY, "protein folding", "mitochondria"]
    r = http.post("/score", json={"text_1": queries, "text_2": DOCS[:3]})
    assert r.status_code == 200, r.text
    expected = [ce.score(q, [d])[0] for q, d in zip(queries, DOCS[:3])]
    assert [d["score"] for d in r.json()["data"]] == pytest.approx(expected, abs=TOL)


def test_openai_sdk_embeddings_equal_in_process(url, minilm, qwen3_embedder):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="unused", base_url=url + "/v1")
    texts = ["the first passage", "a second, longer passage about vitamin D", QUERY]
    resp = client.embeddings.create(model="minilm", input=texts)  # the SDK asks for base64 by default
    got = np.array([d.embedding for d in resp.data], dtype=np.float32)
    np.testing.assert_allclose(got, minilm.embed(texts), atol=TOL)
    assert resp.usage.total_tokens == sum(minilm.model.count_tokens(texts))
    resp = client.embeddings.create(model="qwen3-emb", input="one text", dimensions=16, encoding_format="float")
    np.testing.assert_allclose(np.array(resp.data[0].embedding), qwen3_embedder.embed("one text", dim=16), atol=TOL)
    with pytest.raises(openai.UnprocessableEntityError, match="not a Matryoshka model"):
        client.embeddings.create(model="minilm", input="one text", dimensions=64)


def test_embeddings_base64_and_query_type(http, minilm):
    r = http.post("/v1/embeddings", json={"input": ["x y z"], "encoding_format": "base64", "input_type": "query"})
    assert r.status_code == 200, r.text
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, minilm.embed("x y z", is_query=True), atol=TOL)


def test_tei_embed(http, minilm, qwen3_embedder):
    r = http.post("/embed", json={"inputs": "a single input", "model": "qwen3-emb", "dimensions": 32})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()), qwen3_embedder.embed(["a single input"], dim=32), atol=TOL)
    r = http.post("/embed", json={"inputs": "a single input", "dimensions": minilm.dim})  # full width: always fine
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()), minilm.embed(["a single input"]), atol=TOL)
    r = http.post("/embed", json={"inputs": "a single input", "dimensions": 32})
    assert r.status_code == 422 and r.json()["error"]["field"] == "dimensions"
    assert "minilm does not support other dimensions than 384 (not a Matryoshka model)" in r.text
    r = http.post("/embed", json={"inputs": ["a", "b"], "normalize": False})
    assert r.status_code == 422 and r.json()["error"]["field"] == "normalize"


def test_models_health_ready_metrics_docs(http, qwen3_reranker, qwen3_embedder):
    models = http.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["ce", "qwen3-tiny", "minilm", "qwen3-emb"]
    roles = {m["id"]: m["qrank"]["role"] for m in models["data"]}
    assert roles == {"ce": "reranker", "qwen3-tiny": "reranker", "minilm": "embedder", "qwen3-emb": "embedder"}
    dims = {m["id"]: m["qrank"]["supports_dims"] for m in models["data"] if m["qrank"]["role"] == "embedder"}
    assert dims == {"minilm": False, "qwen3-emb": True}
    engines = {m["id"]: m["qrank"]["engine"] for m in models["data"]}  # what each engine decided at load
    assert engines == {"ce": None, "qwen3-tiny": qwen3_reranker.model.info.extra["engine"], "minilm": None,
                       "qwen3-emb": qwen3_embedder.info.extra.get("engine")}
    assert engines["qwen3-tiny"]["engine"] == "reference"
    for card in models["data"]:  # OpenAI's retrieve: the listed card, by name
        assert http.get(f"/v1/models/{card['id']}").json() == card
    for missing in ("nope", "", "ce/extra"):
        r = http.get(f"/v1/models/{missing}")
        assert r.status_code == 404 and r.json()["error"]["field"] == "model", (missing, r.text)
    pooling = {name: http.get("/info", params={"model": name}).json()["model_type"]["embedding"]["pooling"]
               for name in ("minilm", "qwen3-emb")}
    assert pooling == {"minilm": "mean", "qwen3-emb": "last_token"}  # TEI's names (it said the model kind)
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["ce", "qwen3-tiny", "minilm", "qwen3-emb"]
    metrics = http.get("/metrics").text
    for name in (
        "qrank_requests_total",
        "qrank_request_duration_seconds_bucket",
        "qrank_batch_requests_bucket",
        "qrank_queue_depth",
        "qrank_tokens_total",
    ):
        assert name in metrics
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    for p in ("/v1/rerank", "/v2/rerank", "/rerank", "/v1/score", "/v1/embeddings", "/embed", "/v1/models"):
        assert p in paths


def test_served_model_names_from_settings(ce_dir):
    """Models loaded from settings (as `qrank serve` does) under --served-model-name names."""
    from qrank import InvalidInput, Settings
    from qrank.server import ModelPool

    settings = Settings(server={"rerankers": [str(ce_dir)], "served_model_names": ["my-ce"]}, models={"device": "cpu"})
    pool = ModelPool.load(settings)
    assert [(m.name, m.role, m.info.kind) for m in pool.models] == [("my-ce", "reranker", "cross-encoder")]
    # one name per model, checked before anything loads
    with pytest.raises(InvalidInput) as err:
        ModelPool.load(
            Settings(server={"rerankers": [str(ce_dir)], "embedders": [str(ce_dir)], "served_model_names": ["x"]})
        )
    assert err.value.field == "server.served_model_names"
