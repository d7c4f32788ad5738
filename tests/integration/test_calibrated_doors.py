"""Calibrated scores, min_score and raw scores through every door, with the real shared cross-encoder.

The expected values are computed independently: the plain model's scores (no calibration) with the map
applied by hand (``sigmoid(a * logit(p) + b)``), and the logit by ``math.log``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from qrank import Reranker, Settings
from qrank.cache import Cache, CachedReranker
from qrank.calibration import Calibration, calibration_path
from qrank.cli import main
from qrank.errors import InvalidInput

QUERY = "what is bm25?"
DOCS = ["Cats purr when they are content.", "BM25 ranks documents by term statistics.",
        "Okapi BM25 is a bag-of-words ranking function used by search engines.", "The weather was mild today."]
A, B = 0.6, -0.3


def by_hand(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)  # calibration.PROB_EPS: where the map clips before the logit
    z = A * (math.log(p) - math.log1p(-p)) + B
    return 1.0 / (1.0 + math.exp(-z))


def logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


@pytest.fixture(scope="module")
def home(tmp_path_factory, ce_dir):
    home = tmp_path_factory.mktemp("qrank-home")
    info = Reranker.from_pretrained(str(ce_dir), device="cpu").info
    cal = Calibration("platt", feature="logit", a=A, b=B, model_id=info.id, revision=info.revision)
    cal.save(calibration_path(Settings(home=home), info))
    return home


@pytest.fixture(scope="module")
def plain(ce_dir, home):
    return Reranker.from_pretrained(str(ce_dir), settings=Settings(home=home), device="cpu")


@pytest.fixture(scope="module")
def calibrated(ce_dir, home):
    return Reranker.from_pretrained(str(ce_dir), settings=Settings(home=home), device="cpu", calibrated=True)


def test_python_scores_are_the_map_over_the_plain_scores(plain, calibrated):
    raw = plain.score(QUERY, DOCS)
    assert calibrated.info.score_activation == "calibrated" and plain.info.score_activation == "sigmoid"
    assert calibrated.score(QUERY, DOCS) == pytest.approx([by_hand(p) for p in raw], abs=1e-6)
    ranked = calibrated.rerank(QUERY, DOCS, return_raw_scores=True)
    assert [r.raw_score for r in ranked] == pytest.approx([raw[r.index] for r in ranked], abs=1e-6)
    assert [r.score for r in ranked] == pytest.approx([by_hand(raw[r.index]) for r in ranked], abs=1e-6)
    # uncalibrated: the raw score is the logit behind the probability (TEI's raw_scores)
    ranked = plain.rerank(QUERY, DOCS, return_raw_scores=True)
    assert [r.raw_score for r in ranked] == pytest.approx([logit(r.score) for r in ranked], abs=1e-4)
    assert all(r.raw_score is None for r in plain.rerank(QUERY, DOCS))


def test_min_score_filters_before_top_n(calibrated):
    scores = calibrated.score(QUERY, DOCS)
    cut = sorted(scores)[1] + 1e-4  # keeps the best two
    kept = calibrated.rerank(QUERY, DOCS, min_score=cut)
    assert [r.index for r in kept] == sorted((i for i, s in enumerate(scores) if s >= cut), key=lambda i: -scores[i])
    assert len(kept) == 2 and all(r.score >= cut for r in kept)
    assert len(calibrated.rerank(QUERY, DOCS, min_score=cut, top_n=1)) == 1
    assert calibrated.rerank(QUERY, DOCS, min_score=1.5) == []
    both = calibrated.batch_rerank([QUERY, QUERY], [DOCS, DOCS[:1]], min_score=cut)
    assert [r.index for r in both[0]] == [r.index for r in kept] and both[1] == []
    for bad in (float("nan"), float("inf"), "0.5", True):
        with pytest.raises(InvalidInput) as err:
            calibrated.rerank(QUERY, DOCS, min_score=bad)
        assert err.value.field == "min_score"


def test_no_map_names_calibrated_and_the_path(ce_dir, tmp_path):
    settings = Settings(home=tmp_path)
    with pytest.raises(InvalidInput) as err:
        Reranker.from_pretrained(str(ce_dir), settings=settings, device="cpu", calibrated=True)
    assert err.value.field == "calibrated"
    assert str(tmp_path / "calibration") in str(err.value) and "qrank eval --calibrate" in str(err.value)
    # the setting says the same (env var QRANK_MODELS__CALIBRATED, qrank serve --calibrated)
    with pytest.raises(InvalidInput, match="calibrated"):
        Reranker.from_pretrained(str(ce_dir), settings=Settings(home=tmp_path, models={"calibrated": True}))


def test_a_shared_cache_never_mixes_raw_and_calibrated_scores(plain, calibrated, tmp_path):
    cache = Cache(tmp_path / "cache.sqlite", max_bytes=10_000_000)
    raw = CachedReranker(plain, cache).score(QUERY, DOCS)
    cached = CachedReranker(calibrated, cache)
    assert cached.score(QUERY, DOCS) == pytest.approx([by_hand(p) for p in raw], abs=1e-6)
    assert cached.scored == len(DOCS)  # computed, not read from the raw model's entries


def test_cli_rerank_calibrated_min_score_and_raw(ce_dir, home, plain, capsys, monkeypatch):
    monkeypatch.setenv("QRANK_HOME", str(home))
    raw = plain.score(QUERY, DOCS)
    cut = sorted(by_hand(p) for p in raw)[1] + 1e-4
    rc = main(["rerank", "-m", str(ce_dir), "-q", QUERY, *DOCS, "--device", "cpu", "--calibrated",
               "--min-score", str(cut), "--raw-scores", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)["results"]
    assert len(out) == 2 and all(r["score"] >= cut for r in out)
    assert [r["score"] for r in out] == pytest.approx([by_hand(raw[r["index"]]) for r in out], abs=1e-6)
    assert [r["raw_score"] for r in out] == pytest.approx([raw[r["index"]] for r in out], abs=1e-6)
    assert main(["rerank", "-m", str(ce_dir), "-q", QUERY, *DOCS, "--min-score", "nan"]) != 0
    assert "min_score" in capsys.readouterr().err


def test_cli_calibrated_without_a_map_fails_naming_it(ce_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QRANK_HOME", str(tmp_path))
    assert main(["rerank", "-m", str(ce_dir), "-q", QUERY, *DOCS, "--device", "cpu", "--calibrated"]) != 0
    assert "calibrated" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ server
@pytest.fixture(scope="module")
def server(calibrated, plain, home):
    httpx = pytest.importorskip("httpx")
    from _server_support import live_server, server_settings

    with live_server(server_settings(home=home), rerankers={"cal": calibrated, "plain": plain}) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_server_answers_calibrated_scores_and_raw_on_request(server, plain, path):
    raw = plain.score(QUERY, DOCS)
    body = {"model": "cal", "query": QUERY, "documents": DOCS, "return_raw_scores": True}
    results = server.post(path, json=body).json()["results"]
    assert [r["relevance_score"] for r in results] == pytest.approx([by_hand(raw[r["index"]]) for r in results],
                                                                    abs=1e-5)
    assert [r["raw_score"] for r in results] == pytest.approx([raw[r["index"]] for r in results], abs=1e-5)
    plain_results = server.post(path, json={**body, "model": "plain"}).json()["results"]
    assert [r["raw_score"] for r in plain_results] == pytest.approx(
        [logit(r["relevance_score"]) for r in plain_results], abs=1e-4)
    # without the flag the protocols' answers carry no extra field
    bare = server.post(path, json={**body, "return_raw_scores": False}).json()["results"]
    assert all("raw_score" not in r for r in bare)


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_server_min_score_filters_and_refuses_bad_values(server, calibrated, path):
    scores = calibrated.score(QUERY, DOCS)
    cut = sorted(scores)[1] + 1e-4
    body = {"model": "cal", "query": QUERY, "documents": DOCS, "min_score": cut}
    results = server.post(path, json=body).json()["results"]
    assert sorted(r["index"] for r in results) == sorted(i for i, s in enumerate(scores) if s >= cut)
    assert len(server.post(path, json={**body, "top_n": 1}).json()["results"]) == 1
    assert server.post(path, json={**body, "min_score": 1}).json()["results"] == []  # an integer is a number
    for bad in ("0.5", True, [0.5]):
        r = server.post(path, json={**body, "min_score": bad})
        assert r.status_code == 422 and r.json()["error"]["field"] == "min_score"
    r = server.post(path, content=json.dumps(body).replace(str(cut), "NaN"),
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "min_score" in r.text


def test_server_tei_body_keeps_raw_scores_and_takes_the_new_fields(server, plain):
    raw = plain.score(QUERY, DOCS)
    tei = server.post("/rerank", json={"model": "cal", "query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    # TEI's raw_scores is the model's logit, also under a calibration
    assert [r["score"] for r in tei] == pytest.approx([logit(raw[r["index"]]) for r in tei], abs=1e-4)
    tei = server.post("/rerank", json={"model": "plain", "query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert [r["score"] for r in tei] == pytest.approx([logit(raw[r["index"]]) for r in tei], abs=1e-4)
    tei = server.post("/rerank", json={"model": "cal", "query": QUERY, "texts": DOCS, "min_score": 0.0,
                                       "return_raw_scores": True}).json()
    assert [r["raw_score"] for r in tei] == pytest.approx([raw[r["index"]] for r in tei], abs=1e-5)


def test_openapi_documents_the_fields(server):
    schemas = server.get("/openapi.json").json()["components"]["schemas"]
    for name in ("RerankRequest", "AnyRerankRequest"):
        props = schemas[name]["properties"]
        assert "qrank" in props["min_score"]["description"] and "qrank" in props["return_raw_scores"]["description"]
    assert "raw_score" in schemas["RerankResultItem"]["properties"]


def test_server_load_without_a_map_names_calibrated(ce_dir, tmp_path):
    pytest.importorskip("fastapi")
    from qrank.server import ModelPool
    from qrank.server.errors import status_for

    settings = Settings(home=tmp_path, models={"calibrated": True, "device": "cpu"},
                        server={"rerankers": [str(ce_dir)]})
    with pytest.raises(InvalidInput) as err:
        ModelPool.load(settings)
    assert err.value.field == "calibrated" and status_for(err.value) == 422


def test_server_stack_is_tokenized_once_and_calibrated(calibrated):
    from qrank.models.base import PairEncoder
    from qrank.server.workers import ScoreJob, score_job, score_runner

    job, counts = score_job(calibrated.model, [(QUERY, d) for d in DOCS], None, raw=True)
    assert isinstance(calibrated.model, PairEncoder) and job.encoded is not None
    assert counts == [len(e) for e in job.encoded]
    plain_job = ScoreJob(job.pairs, None, job.encoded)
    both, only = score_runner(calibrated.model)([job, plain_job])
    np.testing.assert_array_equal(both[0], only)  # one pass: the job that asked for raw got the same scores
    np.testing.assert_allclose(both[0], calibrated.model.calibration(both[1]), atol=1e-7)


def test_server_search_reranks_with_calibrated_scores(calibrated, plain, minilm, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("faiss", reason="the index extra is not installed")
    from _server_support import live_server, server_settings

    raw = dict(enumerate(plain.score(QUERY, DOCS)))
    models = {"rerankers": {"cal": calibrated}, "embedders": {"minilm": minilm}}
    with live_server(server_settings(home=tmp_path), **models) as url:
        with httpx.Client(base_url=url, timeout=120) as http:
            docs = [{"id": str(i), "text": d} for i, d in enumerate(DOCS)]
            assert http.post("/v1/collections/c/documents", json={"documents": docs}).status_code == 200
            hits = http.post("/v1/search", json={"collection": "c", "query": QUERY, "k": 4, "min_score": 0.0}).json()
    expected = {str(i): by_hand(p) for i, p in raw.items()}
    assert [h["id"] for h in hits["results"]] == sorted(expected, key=lambda i: -expected[i])
    assert [h["rerank_score"] for h in hits["results"]] == pytest.approx([expected[h["id"]] for h in hits["results"]],
                                                                         abs=1e-5)
