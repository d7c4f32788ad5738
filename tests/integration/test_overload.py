"""Overload and abuse against a live server on 127.0.0.1: clients that give up, slow bodies, early
admission, and the allocator's arena limit. Every loop here is bounded in count and in time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from _server_support import (
    GatedScorer,
    as_reranker,
    live_server,
    load_bench_module,
    queue_depth,
    rerank_body,
    server_settings,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families


def _give_up(url: str, i: int) -> str:
    try:
        httpx.post(url + "/v1/rerank", json=rerank_body("gone", f"GONE-{i}"), timeout=0.5)
    except httpx.TimeoutException:
        return "gave up"
    return "answered"


def _hold_model(model: GatedScorer, client: httpx.Client, pool: ThreadPoolExecutor):
    """One request in the model, which waits for the test to open its gate (later requests queue)."""
    model.gate.clear()
    model.entered.clear()
    model.calls.clear()  # forget the start-up probe
    busy = pool.submit(client.post, "/v1/rerank", json=rerank_body("a", "a"))
    assert model.entered.wait(10)
    return busy


def test_clients_that_gave_up_leave_the_queue_at_once_and_their_batches_never_run():
    model = GatedScorer()
    with (
        live_server(server_settings(max_wait_ms=0, max_queue=16), rerankers={"gated": as_reranker(model)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
        ThreadPoolExecutor(12) as pool,
    ):
        busy = _hold_model(model, client, pool)
        # 10 clients queue behind the busy model and give up after 0.5 s (their connections close)
        quitters = [pool.submit(_give_up, url, i) for i in range(10)]
        assert [q.result(timeout=20) for q in quitters] == ["gave up"] * 10
        started = time.monotonic()
        wait_until(lambda: queue_depth(client, "gated") == 0, timeout=5)  # the model is still blocked
        assert time.monotonic() - started < 2.0
        # their places are free: the queue takes a full load of new requests while the model is still held
        fresh = [pool.submit(client.post, "/v1/rerank", json=rerank_body("b", f"b{i}")) for i in range(8)]
        wait_until(lambda: queue_depth(client, "gated") == 8, timeout=10)
        model.gate.set()
        assert busy.result().status_code == 200
        assert all(f.result().status_code == 200 for f in fresh)
        seen = [d for call in model.calls for _, d in call]
        assert not any(d.startswith("GONE-") for d in seen)  # nobody's abandoned work reached the model
        assert len(model.calls) <= 1 + 8  # the busy call, then at most one per fresh request (none for quitters)


class CountedScorer(GatedScorer):
    """A gated model that counts its tokenizer calls (the work an early refusal must not do)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokenized = 0

    def count_tokens(self, pairs, *, instruction=None):
        self.tokenized += 1
        return super().count_tokens(pairs, instruction=instruction)


def test_a_full_queue_refuses_before_the_tokenizer_in_milliseconds_and_recovers_at_once():
    model = CountedScorer()
    with (
        live_server(server_settings(max_queue=2, max_wait_ms=0), rerankers={"gated": as_reranker(model)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        busy = _hold_model(model, client, pool)
        queued = [pool.submit(client.post, "/v1/rerank", json=rerank_body("b", "b")) for _ in range(2)]
        wait_until(lambda: queue_depth(client, "gated") == 2)
        tokenized = model.tokenized
        seconds = []
        for _ in range(5):
            started = time.perf_counter()
            r = client.post("/v1/rerank", json=rerank_body("c", *["some words"] * 50))
            seconds.append(time.perf_counter() - started)
            assert r.status_code == 429, r.text
            assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "Overloaded"
        assert model.tokenized == tokenized  # refused before its body reached the tokenizer
        assert sorted(seconds)[2] < 0.1, seconds
        model.gate.set()
        assert [f.result().status_code for f in [busy, *queued]] == [200, 200, 200]
        assert client.post("/v1/rerank", json=rerank_body("c", "c")).status_code == 200  # room again at once


def _slow_body(url: str) -> socket.socket:
    """Headers announcing 100 body bytes, then one byte, then nothing (a slowloris on the body)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        b"POST /v1/rerank HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    return sock


def _read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _metric(client: httpx.Client, name: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no metric {name}")


def test_slow_bodies_time_out_with_408_and_free_their_slots_and_ready_tells_the_truth():
    model = GatedScorer()
    settings = server_settings(max_concurrent=2, body_timeout_s=1.0)
    with live_server(settings, rerankers={"gated": as_reranker(model)}) as url, httpx.Client(base_url=url) as client:
        started = time.monotonic()
        attackers = [_slow_body(url) for _ in range(2)]
        wait_until(lambda: _metric(client, "qrank_request_slots_used") == 2, timeout=5)
        r = client.post("/v1/rerank", json=rerank_body("a", "a"))
        assert r.status_code == 429  # every slot is held by a stalled body...
        ready = client.get("/ready")
        assert ready.status_code == 503 and "slots" in ready.json()["error"]["message"]  # ...and /ready says so
        assert client.get("/health").status_code == 200  # the process itself is alive
        answers = [_read_to_close(sock) for sock in attackers]  # the server answers, then closes
        seconds = time.monotonic() - started
        for sock in attackers:
            sock.close()
        for raw in answers:
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), raw[:200]
            assert b'"type":"BodyTimeout"' in body and b'"field":"body"' in body
        assert seconds < 5.0, seconds
        assert _metric(client, "qrank_request_slots_used") == 0
        assert client.post("/v1/rerank", json=rerank_body("a", "a")).status_code == 200
        assert client.get("/ready").status_code == 200


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _json_answer(raw: bytes, status: int) -> dict:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status), raw[:300]
    assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower(), head
    return json.loads(body)["error"]


def test_slow_headers_time_out_with_408_and_idle_connections_are_closed():
    """The slowloris on headers: a few header bytes now and then held a connection forever (uvicorn has no
    header deadline), and 20,000 such connections used every file descriptor (found 2026-12-07)."""
    settings = server_settings(header_timeout_s=1.0)
    with live_server(settings, rerankers={"gated": as_reranker(GatedScorer())}) as url, \
            httpx.Client(base_url=url) as client:
        started = time.monotonic()
        trickle, idle = _connect(url), _connect(url)
        trickle.sendall(b"GET /health HTTP/1.1\r\nHo")
        error = _json_answer(_read_to_close(trickle), 408)
        assert error["type"] == "Timeout" and "header_timeout_s" in error["message"]
        assert _read_to_close(idle) == b""  # nothing was asked: closed without an answer
        assert time.monotonic() - started < 5
        # headers that arrive in pieces within the deadline are served; so is a keep-alive request after a pause
        ok = _connect(url)
        for piece in (b"GET /health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            ok.sendall(piece)
            time.sleep(0.3)
        assert ok.recv(65536).startswith(b"HTTP/1.1 200"), "split headers were not served"
        ok.sendall(b"GET /health HTTP/1.1\r\nHo")  # the next request on the same connection trickles
        raw = _read_to_close(ok)
        assert b"HTTP/1.1 408" in raw, raw[:300]
        for sock in (trickle, idle, ok):
            sock.close()
        assert client.get("/health").status_code == 200


def test_connections_past_max_connections_get_503_and_the_server_recovers():
    settings = server_settings(max_connections=3, header_timeout_s=30)
    with live_server(settings, rerankers={"gated": as_reranker(GatedScorer())}) as url:
        held = [_connect(url) for _ in range(3)]
        time.sleep(0.2)  # the server has accepted them
        extra = _connect(url)
        error = _json_answer(_read_to_close(extra), 503)
        assert error["type"] == "Overloaded" and "max_connections" in error["message"]
        for sock in [*held, extra]:
            sock.close()
        wait_until(lambda: httpx.get(url + "/health").status_code == 200, timeout=5)


def test_a_request_h11_cannot_parse_gets_the_json_error_body():
    with live_server(server_settings(), rerankers={"gated": as_reranker(GatedScorer())}) as url:
        sock = _connect(url)
        sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n")
        error = _json_answer(_read_to_close(sock), 400)
        sock.close()
        assert error["type"] == "MalformedRequest" and error["code"] == 400


# runs `qrank serve` up to its model load (which fails: no such model), then lets 8 threads allocate at once
# and prints how many malloc arenas glibc made for them
_ARENA_PROBE = """
import ctypes, ctypes.util, sys, threading
from qrank.cli import main
from qrank.server.memory import malloc_arenas
main(["serve", "--reranker", "/nonexistent/qrank-model"] + sys.argv[1:])
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
together = threading.Barrier(9)
def work():
    kept = [libc.malloc(1000) for _ in range(10)]
    together.wait(); together.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
together.wait()
print("arenas", malloc_arenas())
together.wait()
"""


def _arenas_after_serve(*flags: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | {"HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _ARENA_PROBE, *flags], capture_output=True, text=True, timeout=120, env=env
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("arenas ")]
    assert lines, out.stdout + out.stderr
    return int(lines[-1].split()[1])


@pytest.mark.skipif(
    sys.platform != "linux" or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="platform: glibc only"
)
def test_qrank_serve_caps_glibc_malloc_arenas_before_its_threads_start():
    assert _arenas_after_serve() <= 2  # the default, server.malloc_arena_max = 2
    assert _arenas_after_serve("--malloc-arena-max", "0") > 2  # glibc's own default: one per thread here


@pytest.mark.slow
def test_server_memory_stays_flat_over_mixed_requests(ce_dir, minilm_dir):
    """A live `qrank serve` (its default arena cap) answers mixed rerank/embeddings requests of many sizes;
    its RSS after them stays near its RSS after a warm-up (glibc's default arenas grew it ~3x)."""
    soak = load_bench_module("overload").soak
    out = soak(600, clients=8, seconds=420, warmup=100)  # bounded in count and time
    assert out["requests"] >= 200 and out["ok"] == out["requests"], out
    assert out["rss_end_mb"] <= 1.25 * out["rss_warm_mb"] + 50, out
