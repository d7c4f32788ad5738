"""qrank on Ray Serve: a head and a worker node as separate processes on 127.0.0.1, two replicas.

Checks that both replicas answer, that answers equal the single-process core, and that killing a
replica under load costs no request and no wrong answer (the proxy retries on another replica).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

QUERY = "Vitamin D deficiency raises the risk of respiratory infections"
DOCS = [
    "Serum vitamin D levels were inversely associated with respiratory tract infections.",
    "The Eiffel Tower was completed in 1889.",
    "Daily vitamin D3 reduced upper respiratory infections among schoolchildren.",
    "Photosynthesis converts light energy into chemical energy.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _ray_start(args: list[str], env: dict) -> None:
    proc = subprocess.run([_ray_cli(), "start", *args], env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        pytest.fail(f"ray start {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def ray_serve_patience() -> dict[str, str]:
    from qrank.distributed.patience import SERVE_PATIENCE

    return dict(SERVE_PATIENCE)


def _stop_own_cluster(*markers: str) -> None:
    """Stop the processes of this test's Ray cluster only. ``ray stop`` kills every Ray process on the
    machine: a developer's own cluster, or another test run's, whose drivers then exit with it. ``markers``: the
    temp dir (gcs, raylets, agents are given it) and the head's address (the client server, ``ray.util.client
    .server``, is given only that, and outlived the test before it was a marker)."""
    import psutil

    roots = []
    for p in psutil.process_iter(["cmdline"]):
        if any(m in part for part in (p.info["cmdline"] or []) for m in markers):
            roots.append(p)
    procs: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            for p in [root, *root.children(recursive=True)]:  # workers rename themselves ("ray::IDLE")
                procs[p.pid] = p
        except psutil.NoSuchProcess:
            continue
    for p in procs.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=20)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def cluster():
    # Ray reads the auth settings once, when first imported: the root conftest.py sets them before any import
    # (collection imports Ray early); these only matter when this file runs without that conftest
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    pytest.importorskip("ray.serve", reason="needs the 'ray' extra")
    import ray

    port = _free_port()
    temp = tempfile.mkdtemp(prefix="qr-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Ray swaps 127.0.0.1 for the machine's network address; other loopback addresses it keeps, so both
    # "nodes" and all their traffic stay on the loopback range. Token auth as a real cluster would use.
    # Serve kills an HTTP proxy that is not ready within 5 s: on a loaded 2-core CI machine it can take longer
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **ray_serve_patience()}
    common = ["--num-cpus=2", "--object-store-memory=100000000", "--disable-usage-stats"]
    head, worker = "127.0.0.2", "127.0.0.3"
    _ray_start(
        ["--head", f"--port={port}", f"--node-ip-address={head}", "--include-dashboard=false", f"--temp-dir={temp}",
         *common],
        env,
    )
    try:
        _ray_start([f"--address={head}:{port}", f"--node-ip-address={worker}", *common], env)
        ray.init(address=f"{head}:{port}", _node_ip_address=head, log_to_driver=False)
        deadline = time.time() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2, "the worker node did not join"
        yield port
    finally:
        try:
            if ray.is_initialized():
                from ray import serve

                serve.shutdown()
        finally:
            ray.shutdown()
            _stop_own_cluster(temp, f"{head}:{port}")
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def served(cluster, ce_dir):
    from qrank.distributed import ray_serve
    from qrank.settings import Settings

    http_port = _free_port()
    settings = Settings(
        server={"rerankers": [str(ce_dir)], "port": http_port, "max_wait_ms": 2.0},
        distributed={"replicas": 2, "num_cpus_per_replica": 1.0, "retries": 5},
    )
    ray_serve.run(settings, blocking=False)
    return f"http://127.0.0.1:{http_port}"


def test_two_replicas_answer_like_the_single_process_core(served, ce):
    import httpx

    from concurrent.futures import ThreadPoolExecutor

    expected = ce.rerank(QUERY, DOCS)

    def call(i):
        r = httpx.post(f"{served}/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=60)
        return r.status_code, r.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(48)))
    for status, body in answers:
        assert status == 200, body
        assert [r["index"] for r in body["results"]] == [r.index for r in expected]
        assert [r["relevance_score"] for r in body["results"]] == pytest.approx([r.score for r in expected], abs=1e-5)
    replicas = httpx.get(f"{served}/v1/replicas", timeout=10).json()
    calls = next(iter(replicas.values()))["calls_by_replica"]
    assert len(calls) == 2 and all(n > 0 for n in calls.values()), calls


def test_truncate_false_serves_a_pair_filling_the_window_and_refuses_one_token_more(served, ce, ce_dir):
    """A Ray-served reranker cannot lay documents out, so the door refuses by the replica's token counts; a pair
    of exactly the window's tokens (counted by the checkpoint's own tokenizer) must be served, not refused."""
    import httpx
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ce_dir))
    count = lambda d: len(tok(QUERY, d)["input_ids"])  # noqa: E731
    docs = {count(d): d for d in (" ".join(["word"] * k) for k in range(480, 520))}
    window = ce.info.max_length  # 512
    body = {"query": QUERY, "truncate": False}
    r = httpx.post(f"{served}/v1/rerank", json={**body, "documents": [docs[window]]}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["relevance_score"] == pytest.approx(ce.score(QUERY, [docs[window]])[0], abs=1e-5)
    r = httpx.post(f"{served}/v1/rerank", json={**body, "documents": [docs[window + 1]]}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["field"] == "documents[0]", r.text


def test_killing_a_replica_under_load_loses_no_request(served, ce):
    import httpx
    import ray

    expected = [r.index for r in ce.rerank(QUERY, DOCS)]
    results: list[tuple[int, list[int]]] = []
    stop = threading.Event()

    def load():
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                r = client.post(f"{served}/v1/rerank", json={"query": QUERY, "documents": DOCS})
                body = r.json()
                results.append((r.status_code, [x["index"] for x in body.get("results", [])]))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        named = ray.util.list_named_actors(all_namespaces=True)
        replicas = [a["name"] for a in named if a["namespace"] == "serve" and "model-0-reranker" in a["name"]]
        assert len(replicas) == 2, named
        ray.kill(ray.get_actor(replicas[0], namespace="serve"), no_restart=True)
        time.sleep(8)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert len(results) > 20
    bad = [r for r in results if r[0] != 200 or r[1] != expected]
    assert not bad, bad[:5]
