"""Deterministic mode (``engine.deterministic``): a pair's score, a text's vector, is bit-identical whatever else
is in the call, the server batch or the request order — for the real shared cross-encoder and MiniLM embedder,
and tiny random Qwen3 models through the reference and the fast engine (both run on the CPU).

The yardstick is the item scored alone; every comparison is ``np.array_equal`` (bits, not a tolerance).
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from qrank import Embedder, Reranker, Settings
from qrank.cache import embedding_key, score_key

QUERY = "what lowers the risk of heart disease?"
TARGET = "Regular aerobic exercise lowers blood pressure and the risk of heart disease."


def _documents(n: int, seed: int = 0) -> list[str]:
    """``n`` documents of varied lengths (so batches pad and pack differently), words from a fixed pool."""
    words = ("cells protein exercise blood pressure heart risk gene mouse trial dose vitamin cancer study levels "
             "patients reduced increased cohort receptor signalling").split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 60))) for _ in range(n)]


@pytest.fixture(scope="module")
def det_ce(ce_dir):
    return Reranker.from_pretrained(str(ce_dir), device="cpu", deterministic=True)


@pytest.fixture(scope="module")
def det_minilm(minilm_dir):
    return Embedder.from_pretrained(str(minilm_dir), device="cpu", deterministic=True)


@pytest.fixture(scope="module")
def det_qwen3(qwen3_reranker_dir):
    return Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", dtype="float32", deterministic=True)


@pytest.fixture(scope="module")
def det_qwen3_fast(qwen3_reranker_dir):
    return Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", dtype="float32", engine="fast",
                                    deterministic=True)


@pytest.fixture(scope="module")
def det_qwen3_embedder(qwen3_embedder_dir):
    return Embedder.from_pretrained(str(qwen3_embedder_dir), device="cpu", dtype="float32", deterministic=True)


def _score_alone_and_in_crowds(reranker) -> None:
    docs = _documents(99)
    alone = reranker.model.score_pairs([(QUERY, TARGET)])
    for position in (0, 37, 99):
        crowd = docs[:position] + [TARGET] + docs[position:]
        scores = reranker.model.score_pairs([(QUERY, d) for d in crowd])
        assert np.array_equal(scores[position : position + 1], alone), position
    # shuffled orders: every pair keeps its bits
    pairs = [(QUERY, d) for d in docs]
    base = reranker.model.score_pairs(pairs)
    order = list(range(len(pairs)))
    random.Random(1).shuffle(order)
    shuffled = reranker.model.score_pairs([pairs[i] for i in order])
    assert np.array_equal(shuffled, base[order])


def test_cross_encoder_pair_alone_equals_pair_in_100_documents(det_ce):
    _score_alone_and_in_crowds(det_ce)


def test_qwen3_reference_pair_alone_equals_pair_in_100_documents(det_qwen3):
    assert det_qwen3.info.extra["engine"]["max_batch_size"] == 1
    _score_alone_and_in_crowds(det_qwen3)


def test_qwen3_fast_engine_pair_alone_equals_pair_in_100_documents(det_qwen3_fast):
    engine = det_qwen3_fast.info.extra["engine"]
    assert engine["engine"] == "fast" and engine["max_batch_size"] == 1 and engine["prefix_sharing"] is False
    _score_alone_and_in_crowds(det_qwen3_fast)


def test_rerank_facade_scores_are_the_alone_scores(det_ce):
    docs = _documents(40, seed=3) + [TARGET]
    alone = det_ce.model.score_pairs([(QUERY, TARGET)])[0]
    hit = next(r for r in det_ce.rerank(QUERY, docs) if r.index == len(docs) - 1)
    assert np.float32(hit.score) == alone


def _embed_alone_and_in_crowds(embedder) -> None:
    texts = _documents(99, seed=5)
    alone = embedder.model.embed_batch([TARGET])
    for position in (0, 50, 99):
        crowd = texts[:position] + [TARGET] + texts[position:]
        vectors = embedder.model.embed_batch(crowd)
        assert np.array_equal(vectors[position : position + 1], alone), position


def test_st_embedder_text_alone_equals_text_in_100(det_minilm):
    _embed_alone_and_in_crowds(det_minilm)


def test_qwen3_embedder_text_alone_equals_text_in_100(det_qwen3_embedder):
    _embed_alone_and_in_crowds(det_qwen3_embedder)


def test_default_mode_is_unchanged(ce, det_ce):
    """The switch changes how rows are grouped, not the model: the two modes agree to float32 rounding."""
    pairs = [(QUERY, d) for d in _documents(30, seed=7)]
    np.testing.assert_allclose(ce.model.score_pairs(pairs), det_ce.model.score_pairs(pairs), rtol=0, atol=1e-6)
    assert "deterministic" not in ce.info.extra and det_ce.info.extra["deterministic"] is True


def test_server_batches_of_other_requests_do_not_move_a_score(det_ce, monkeypatch):
    """Concurrent requests merged into one model call (a long batcher wait) score as each pair alone."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import httpx

    from _server_support import live_server, rerank_body, server_settings

    alone = float(det_ce.model.score_pairs([(QUERY, TARGET)])[0])
    crowds = [_documents(20 + 7 * i, seed=10 + i) for i in range(6)]
    settings = server_settings(max_wait_ms=200.0)
    calls: list[int] = []  # pairs per model call: proof that requests were merged
    inner = det_ce.model.score_encoded
    monkeypatch.setattr(det_ce.model, "score_encoded", lambda encoded: calls.append(len(encoded)) or inner(encoded))
    got: dict[int, float] = {}
    with live_server(settings, rerankers={"ce": det_ce}) as url:

        def ask(i: int) -> None:
            docs = crowds[i][: i * 3] + [TARGET] + crowds[i][i * 3 :]
            body = {**rerank_body(QUERY, *docs), "model": "ce", "return_documents": False}
            results = httpx.post(f"{url}/v1/rerank", json=body, timeout=120).json()["results"]
            got[i] = next(r["relevance_score"] for r in results if r["index"] == i * 3)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(crowds))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    assert len(got) == len(crowds)
    assert max(calls) > max(len(c) + 1 for c in crowds), calls  # some call held more than one request
    assert all(np.float32(v) == np.float32(alone) for v in got.values()), (alone, got)
    assert models[0]["qrank"]["deterministic"] is True


def test_setting_from_the_environment(monkeypatch):
    monkeypatch.setenv("QRANK_ENGINE__DETERMINISTIC", "true")
    assert Settings().engine.deterministic is True
    monkeypatch.delenv("QRANK_ENGINE__DETERMINISTIC")
    assert Settings().engine.deterministic is False


@pytest.mark.parametrize("command", ["rerank", "embed", "models", "eval", "serve"])
def test_cli_flag_reaches_the_setting(command):
    from qrank.cli import build_parser
    from qrank.cli.common import settings_from_args

    parser = build_parser()
    argv = {
        "rerank": ["rerank", "-m", "m", "-q", "q", "d", "--deterministic"],
        "embed": ["embed", "-m", "m", "t", "--deterministic"],
        "models": ["models", "--deterministic"],
        "eval": ["eval", "-d", "data", "--deterministic"],
        "serve": ["serve", "--deterministic"],
    }[command]
    args, _ = parser.parse_known_args(argv)
    assert settings_from_args(args).engine.deterministic is True


def test_cache_keys_keep_the_two_modes_apart(ce, det_ce, minilm, det_minilm):
    assert score_key(ce.info, None, QUERY, TARGET) != score_key(det_ce.info, None, QUERY, TARGET)
    assert embedding_key(minilm.info, None, None, False, TARGET) != embedding_key(det_minilm.info, None, None, False,
                                                                                  TARGET)
    # the default mode's keys are the ones earlier versions wrote (no field added)
    from dataclasses import replace

    assert score_key(replace(ce.info, extra={}), None, QUERY, TARGET) == score_key(ce.info, None, QUERY, TARGET)


def test_models_verbose_shows_the_mode(ce_dir, capsys):
    from qrank.cli import main

    assert main(["models", str(ce_dir), "-v", "--json", "--device", "cpu", "--deterministic"]) == 0
    out = capsys.readouterr().out
    assert '"deterministic": true' in out


def test_calibrated_scores_are_the_alone_scores(det_ce):
    """The calibration map runs row by row as well: a calibrated pair's bits do not depend on the call."""
    from qrank.calibration import Calibration, calibrated

    model = calibrated(det_ce.model, Calibration("platt", feature="logit", a=1.7, b=-0.3))
    docs = _documents(60, seed=9)
    alone = model.score_pairs([(QUERY, TARGET)])
    for position in (0, 30, 60):
        crowd = docs[:position] + [TARGET] + docs[position:]
        assert np.array_equal(model.score_pairs([(QUERY, d) for d in crowd])[position : position + 1], alone)
