"""Behaviour under load: batching across clients, 429 on a full queue, concurrency limit, dropped work of
disconnected clients, failure isolation within a batch, graceful shutdown, and the load script."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from _server_support import (
    GatedScorer,
    PoisonScorer,
    as_reranker,
    live_handle,
    live_server,
    load_bench_module,
    queue_depth,
    rerank_body,
    server_settings,
    wait_until,
)


def test_queued_requests_share_one_model_call():
    model = GatedScorer()
    with (
        live_server(server_settings(max_wait_ms=0), rerankers={"gated": as_reranker(model)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        model.gate.clear()
        model.entered.clear()
        model.calls.clear()  # forget the start-up probe
        first = pool.submit(client.post, "/v1/rerank", json=rerank_body("alpha", "alpha one", "zzz"))
        assert model.entered.wait(10)  # the worker is now busy with `first`
        rest = [
            pool.submit(client.post, "/v1/rerank", json=rerank_body(f"q{i}", f"q{i} doc", "other")) for i in range(5)
        ]
        wait_until(lambda: queue_depth(client, "gated") == 5)
        model.gate.set()
        answers = [f.result() for f in [first, *rest]]
        assert all(a.status_code == 200 for a in answers)
        # each answer is its own: the document containing the query word ranks first with score 1
        for i, a in enumerate(answers[1:]):
            assert a.json()["results"][0] == {"index": 0, "relevance_score": 1.0, "document": {"text": f"q{i} doc"}}
        # the five queued requests reached the model as ONE call of 10 pairs
        assert [len(c) for c in model.calls] == [2, 10]


def test_full_queue_answers_429_quickly_with_retry_after():
    model = GatedScorer()
    with (
        live_server(server_settings(max_queue=2, max_wait_ms=0), rerankers={"gated": as_reranker(model)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        model.gate.clear()
        model.entered.clear()
        model.calls.clear()  # forget the start-up probe
        busy = pool.submit(client.post, "/v1/rerank", json=rerank_body("a", "a"))
        assert model.entered.wait(10)
        queued = [pool.submit(client.post, "/v1/rerank", json=rerank_body("b", "b")) for _ in range(2)]
        wait_until(lambda: queue_depth(client, "gated") == 2)
        started = time.perf_counter()
        r = client.post("/v1/rerank", json=rerank_body("c", "c"))
        assert time.perf_counter() - started < 2.0
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "Overloaded"
        model.gate.set()
        assert [f.result().status_code for f in [busy, *queued]] == [200, 200, 200]
        assert client.post("/v1/rerank", json=rerank_body("c", "c")).status_code == 200  # room again


def test_concurrency_limit():
    model = GatedScorer()
    with (
        live_server(server_settings(max_concurrent=1), rerankers={"gated": as_reranker(model)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
        ThreadPoolExecutor(2) as pool,
    ):
        model.gate.clear()
        model.entered.clear()
        model.calls.clear()  # forget the start-up probe
        busy = pool.submit(client.post, "/v1/rerank", json=rerank_body("a", "a"))
        assert model.entered.wait(10)
        r = client.post("/v1/rerank", json=rerank_body("b", "b"))
        assert r.status_code == 429 and "retry-after" in r.headers
        assert client.get("/health").status_code == 200  # health and metrics are never refused
        model.gate.set()
        assert busy.result().status_code == 200


def test_disconnected_client_work_is_dropped():
    model = GatedScorer()
    with (
        live_server(server_settings(max_wait_ms=0), rerankers={"gated": as_reranker(model)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
        ThreadPoolExecutor(2) as pool,
    ):
        model.gate.clear()
        model.entered.clear()
        model.calls.clear()  # forget the start-up probe
        busy = pool.submit(client.post, "/v1/rerank", json=rerank_body("a", "a"))
        assert model.entered.wait(10)
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(url + "/v1/rerank", json=rerank_body("gone", "GONE-DOC"), timeout=0.5)
        wait_until(lambda: 'route="/v1/rerank",status="499"' in client.get("/metrics").text)
        model.gate.set()
        assert busy.result().status_code == 200
        assert client.post("/v1/rerank", json=rerank_body("x", "x")).status_code == 200
        seen = [d for call in model.calls for _, d in call]
        assert "GONE-DOC" not in seen  # its queued work never reached the model


def test_one_bad_request_never_fails_its_batch():
    model = PoisonScorer()
    with (
        live_server(server_settings(max_wait_ms=0), rerankers={"poison": as_reranker(model)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        model.gate.clear()
        model.entered.clear()
        model.calls.clear()  # forget the start-up probe
        busy = pool.submit(client.post, "/v1/rerank", json=rerank_body("a", "a"))
        assert model.entered.wait(10)
        good = pool.submit(client.post, "/v1/rerank", json=rerank_body("good", "good doc", "bad doc"))
        nan = pool.submit(client.post, "/v1/rerank", json=rerank_body("n", "NAN here", "n"))
        crash = pool.submit(client.post, "/v1/rerank", json=rerank_body("c", "CRASH here"))
        wait_until(lambda: queue_depth(client, "poison") == 3)
        model.gate.set()
        assert busy.result().status_code == 200
        g = good.result()
        assert g.status_code == 200 and g.json()["results"][0]["index"] == 0
        n = nan.result()
        assert n.status_code == 500 and n.json()["error"]["type"] == "NonFiniteOutput"
        c = crash.result()
        assert c.status_code == 500 and "internal" in c.json()["error"]["message"]
        # the three went in together, failed, and were retried one by one
        sizes = [len(call) for call in model.calls]
        assert sizes[1] == 5 and sorted(sizes[2:]) == [1, 2, 2]
        assert client.get("/ready").status_code == 200  # the server is fine afterwards


def test_an_unexpected_error_closes_its_connection_so_the_clients_next_request_is_served():
    """After an unexpected 500 uvicorn drops the keep-alive connection; without `Connection: close` a pooled
    client sent its next, unrelated request down the dead connection and got a reset (found 2026-12-07)."""
    with (
        live_server(server_settings(max_wait_ms=0), rerankers={"poison": as_reranker(PoisonScorer())}) as url,
        httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)) as client,
    ):
        for _ in range(3):
            c = client.post("/v1/rerank", json=rerank_body("c", "CRASH here"))
            assert c.status_code == 500 and c.headers["connection"] == "close"
            assert client.get("/v1/models").status_code == 200


def test_graceful_shutdown_finishes_in_flight_and_refuses_new():
    model = GatedScorer()
    settings = server_settings(shutdown_timeout_s=20)
    with live_handle(settings, rerankers={"gated": as_reranker(model)}) as running, ThreadPoolExecutor(2) as pool:
        model.gate.clear()
        model.entered.clear()
        model.calls.clear()  # forget the start-up probe
        in_flight = pool.submit(httpx.post, running.url + "/v1/rerank", json=rerank_body("a", "a b"), timeout=30)
        assert model.entered.wait(10)
        running.begin_shutdown()
        wait_until(lambda: _refused(running.url))
        model.gate.set()
        r = in_flight.result()
        assert r.status_code == 200 and r.json()["results"][0]["relevance_score"] == 1.0
        running.thread.join(timeout=20)
        assert not running.thread.is_alive()


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=0.5)
        return False
    except httpx.TransportError:
        return True


def test_load_script_sees_batching_and_no_5xx(qwen3_reranker):
    load = load_bench_module("server_load")
    with live_server(server_settings(max_wait_ms=20), rerankers={"tiny": qwen3_reranker}) as url:
        bodies = load.make_bodies("rerank", 16, docs=4, words=10)
        report = asyncio.run(load.run_load(url, clients=8, seconds=3.0, bodies=bodies))
    assert report.requests > 8
    assert report.server_errors == 0 and report.errors == 0, report.statuses
    assert report.throughput_rps > 0 and report.p50_ms <= report.p99_ms
    assert report.batches["batched_together"], report.batches  # concurrent requests shared model calls
    assert report.batches["mean_requests_per_batch"] > 1.0
