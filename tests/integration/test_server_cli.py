"""``qrank serve`` as a user runs it: configured by environment variables, stopped by SIGTERM, and
refusing settings under which a valid request could never be served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")

from qrank.server.run import free_port  # noqa: E402


def qrank(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    code = "import sys; from qrank.cli import main; sys.exit(main(sys.argv[1:]))"
    full_env = {**os.environ, "QRANK_MODELS__DEVICE": "cpu", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def wait_ready(proc: subprocess.Popen, url: str, headers: dict | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            if httpx.get(url + "/ready", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> str:
    """SIGTERM, then the server's stderr."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_serve_the_shared_cross_encoder_and_embedder(ce_dir, minilm_dir, quantization):
    """The README's models behind `qrank serve`: it crashed on its start-up banner for every classic encoder (the
    banner read the quantization setting's name as the FP8 gate's numbers)."""
    port = free_port()
    proc = qrank("serve", "--reranker", str(ce_dir), "--embedder", str(minilm_dir), "--port", str(port),
                 "--quantization", quantization)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        cards = {m["id"]: m["qrank"] for m in httpx.get(url + "/v1/models").json()["data"]}
        r = httpx.post(url + "/v1/rerank", json={"query": "vitamin d and bone density",
                                                 "documents": ["Cats are small mammals.",
                                                               "Vitamin D supplements increased bone density."]})
        assert r.status_code == 200, r.text
        assert [x["index"] for x in r.json()["results"]] == [1, 0]
        e = httpx.post(url + "/v1/embeddings", json={"input": ["a", "b"], "encoding_format": "float"})
        assert e.status_code == 200 and len(e.json()["data"][0]["embedding"]) == 384, e.text
    finally:
        err = stop(proc)
    for card in cards.values():
        if quantization == "none":
            assert card["quantization"] is None  # absent when not quantized, as /v1/models documents
        else:
            assert card["quantization"]["method"] == "int8" and "recipe" in card["quantization"]
    text = " ".join(err.split())  # rich wraps the banner at 80 columns off a terminal
    assert "reranker" in text and "max_length 512" in text, text[-2000:]
    assert ("int8: weights int8 per output channel" in text) == (quantization == "int8"), text[-2000:]


def test_serve_from_env_and_sigterm(qwen3_reranker_dir):
    port = free_port()
    proc = qrank(
        "serve",
        "--no-access-log",
        env={
            "QRANK_SERVER__RERANKERS": str(qwen3_reranker_dir),
            "QRANK_SERVER__PORT": str(port),
            "QRANK_SERVER__API_KEY": "env-key",
            "QRANK_SERVER__MAX_DOCUMENTS": "3",
        },
    )
    url = f"http://127.0.0.1:{port}"
    auth = {"authorization": "Bearer env-key"}
    try:
        wait_ready(proc, url, auth)
        models = httpx.get(url + "/v1/models", headers=auth).json()["data"]
        assert [m["id"] for m in models] == [str(qwen3_reranker_dir)]  # the name it was given
        r = httpx.post(url + "/v1/rerank", headers=auth, json={"query": "q", "documents": ["a", "b"]})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        r = httpx.post(url + "/v1/rerank", headers=auth, json={"query": "q", "documents": ["a"] * 4})
        assert r.status_code == 413  # QRANK_SERVER__MAX_DOCUMENTS reached the server
        assert httpx.get(url + "/v1/models").status_code == 401
    finally:
        err = stop(proc)
    # uvicorn finishes the graceful shutdown, then re-raises the signal so supervisors see it
    assert proc.returncode in (0, -signal.SIGTERM), err[-2000:]
    assert "Application shutdown complete" in err, err[-2000:]


@pytest.mark.parametrize(
    "args,field",
    [
        pytest.param(
            ["--max-batch-tokens", "4096"], "engine.max_batch_tokens", marks=pytest.mark.slow
        ),  # < max_length 8192
        (["--served-model-name", "a", "--served-model-name", "b"], "server.served_model_names"),
    ],
)
def test_serve_refuses_impossible_settings(qwen3_reranker_dir, args, field):
    proc = qrank("serve", "--reranker", str(qwen3_reranker_dir), "--port", str(free_port()), *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-2000:]
    assert field in " ".join(err.split())


def test_serve_without_models_says_so():
    proc = qrank("serve", "--port", str(free_port()))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--reranker or --embedder" in " ".join(err.split())
