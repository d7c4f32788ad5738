"""Remote clients over several servers: load balancing, a server that is down, one that answers 429."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time

import pytest
from _server_support import live_server, server_settings

from qrank import InvalidInput, Overloaded, RemoteReranker
from qrank.models.remote import ServerUnavailable
from qrank.models.remote_pool import BalancedTransport
from qrank.server.run import free_port

QUERY = "how do statins lower cholesterol?"
DOCS = ["Statins inhibit HMG-CoA reductase in the liver.", "The Eiffel tower is in Paris.",
        "LDL falls with statin therapy."]


@contextlib.contextmanager
def busy_server(retry_after: str = "0.05"):
    """A server on 127.0.0.1 that answers every request 429 with Retry-After, counting the requests."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _busy(self):
            hits.append(self.path)
            body = json.dumps({"error": {"message": "queue full", "type": "overloaded"}}).encode()
            self.send_response(429)
            self.send_header("Retry-After", retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _busy

        def log_message(self, *args):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def two_servers(ce):
    settings = server_settings()
    with live_server(settings, rerankers={"ce": ce}) as a, live_server(settings, rerankers={"ce": ce}) as b:
        yield a, b


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_round_robin_skips_a_dead_server_and_answers_like_local(two_servers, ce):
    a, b = two_servers
    dead = _dead_url()
    waits: list[float] = []
    transport = BalancedTransport([dead, a, b], timeout=5, retries=3, cooldown_s=60, sleep=waits.append)
    rr = RemoteReranker(a, transport=transport)
    local = ce.rerank(QUERY, DOCS)
    for _ in range(6):
        got = rr.rerank(QUERY, DOCS)
        assert [r.index for r in got] == [r.index for r in local]
        assert [r.score for r in got] == pytest.approx([r.score for r in local], abs=2e-5)
    outcomes = transport.attempts
    assert sum(1 for url, o in outcomes if url == dead) == 1, "the dead server should be tried once, then cool down"
    served = {url for url, o in outcomes if o == "ok"}
    assert served == {a, b}, "both live servers take requests"
    rr.close()


def test_all_servers_down_is_a_clear_error_after_the_retries():
    waits: list[float] = []
    transport = BalancedTransport([_dead_url(), _dead_url()], timeout=2, retries=2, backoff_s=0.1, sleep=waits.append)
    rr = RemoteReranker("http://unused", transport=transport)
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="cannot reach the server"):
        rr.score(QUERY, DOCS)
    assert time.monotonic() - start < 10
    assert waits == pytest.approx([0.1, 0.2]), "exponential backoff between the tries"


def test_429_backs_off_for_retry_after_then_another_server_answers(two_servers, ce):
    a, _ = two_servers
    with busy_server(retry_after="0.3") as (busy, hits):
        waits: list[float] = []
        transport = BalancedTransport([busy, a], retries=3, backoff_s=0.05, sleep=waits.append)
        rr = RemoteReranker(a, model="ce", transport=transport)
        got = rr.score(QUERY, DOCS)
        assert got == pytest.approx(ce.score(QUERY, DOCS), abs=2e-5)
        assert hits, "the busy server was asked"
        assert waits and waits[0] == pytest.approx(0.3), "Retry-After is honoured when longer than the backoff"


def test_only_busy_servers_end_in_overloaded():
    with busy_server(retry_after="0.01") as (busy, hits):
        transport = BalancedTransport([busy], retries=2, backoff_s=0.01)
        rr = RemoteReranker(busy, model="ce", transport=transport)
        with pytest.raises(Overloaded):
            rr.score(QUERY, DOCS)
        assert len(hits) == 3  # first try + 2 retries


def test_client_errors_are_not_retried(two_servers):
    a, b = two_servers
    transport = BalancedTransport([a, b], retries=3)
    with pytest.raises(InvalidInput) as err:  # another server would refuse it the same way
        transport.request("POST", "/v1/rerank", {"query": "", "documents": DOCS})
    assert err.value.field == "query"
    assert len(transport.attempts) == 1


def test_bad_url_lists_are_rejected():
    with pytest.raises(InvalidInput):
        BalancedTransport([])
    with pytest.raises(InvalidInput):
        BalancedTransport(["ftp://x"])


@contextlib.contextmanager
def scripted_server(script: list[tuple[int, dict[str, str]]]):
    """A loopback server answering request n with ``script[n]`` (status, headers); then 200 ``{"ok": n}``."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            n = len(hits)
            hits.append(self.path)
            status, headers = script[n] if n < len(script) else (200, {})
            body = json.dumps({"ok": n} if status == 200 else {"error": {"message": f"status {status}"}}).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_5xx_and_503_retry_after_are_retried_with_the_longer_wait():
    # 500: down, retried after the backoff; 503 + Retry-After: overloaded, the server's wait wins when longer
    with scripted_server([(500, {}), (503, {"Retry-After": "0.25"})]) as (url, hits):
        waits: list[float] = []
        transport = BalancedTransport([url], retries=3, backoff_s=0.05, cooldown_s=0, sleep=waits.append)
        assert transport.request("GET", "/v1/models") == {"ok": 2}
    assert len(hits) == 3
    assert waits == pytest.approx([0.05, 0.25])
    assert [outcome for _, outcome in transport.attempts] == ["down", "overloaded", "ok"]


def test_retry_after_is_capped_by_max_backoff():
    with scripted_server([(429, {"Retry-After": "30"}), (429, {"Retry-After": "0"})]) as (url, hits):
        waits: list[float] = []
        transport = BalancedTransport([url], retries=2, backoff_s=0.1, max_backoff_s=0.5, sleep=waits.append)
        assert transport.request("GET", "/v1/models") == {"ok": 2}
    assert waits == pytest.approx([0.5, 0.2]), "30 s capped at max_backoff_s; Retry-After 0 < the backoff"


def test_retries_zero_tries_once_and_raises_the_server_error():
    with scripted_server([(502, {})]) as (url, hits):
        waits: list[float] = []
        transport = BalancedTransport([url], retries=0, sleep=waits.append)
        with pytest.raises(ServerUnavailable, match="502"):
            transport.request("GET", "/v1/models")
    assert len(hits) == 1 and waits == []


def test_a_404_unknown_model_is_not_retried():
    with scripted_server([(404, {})]) as (url, hits):
        transport = BalancedTransport([url], retries=3, sleep=lambda s: None)
        with pytest.raises(Exception) as err:
            transport.request("POST", "/v1/rerank", {"model": "nope"})
    assert not isinstance(err.value, (ServerUnavailable, Overloaded))
    assert len(hits) == 1
