"""Helpers for the server tests: live servers on 127.0.0.1 around already loaded models, and fakes for
queueing behaviour (a model whose forward pass waits for the test, a model that fails on a marker)."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

from qrank import Embedder, Reranker, Settings
from qrank.types import ModelInfo

pytest.importorskip("fastapi", reason="the server extra is not installed")

from qrank.server import ModelPool, create_app  # noqa: E402
from qrank.server.run import running_server  # noqa: E402


@contextlib.contextmanager
def live_handle(settings: Settings | None = None, *, rerankers=None, embedders=None):
    """Like :func:`live_server` but yields the :class:`~qrank.server.run.RunningServer` (to stop it)."""
    settings = settings or Settings()
    pool = ModelPool.from_models(rerankers=rerankers or {}, embedders=embedders or {})
    with running_server(create_app(settings, pool), settings) as running:
        yield running


@contextlib.contextmanager
def live_server(settings: Settings | None = None, *, rerankers=None, embedders=None):
    """A real uvicorn server in a thread, on a free port of 127.0.0.1; yields its base URL."""
    settings = settings or Settings()
    pool = ModelPool.from_models(rerankers=rerankers or {}, embedders=embedders or {})
    with running_server(create_app(settings, pool), settings) as running:
        yield running.url


def server_settings(home=None, **server) -> Settings:
    """Settings for a test server: no access log, and a fresh data folder (collections, caches)."""
    import tempfile

    return Settings(home=home or tempfile.mkdtemp(prefix="qrank-test-home-"), server={"access_log": False, **server})


class WithoutLayouts:
    """A real scorer that cannot lay documents out (what a Ray-served model looks like to the door): the door then
    refuses over-long pairs by their token counts."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.info = inner.info

    def encode_pairs(self, pairs, **kwargs):
        return self.inner.encode_pairs(pairs, **kwargs)

    def score_encoded(self, encoded):
        return self.inner.score_encoded(encoded)

    def score_pairs(self, pairs, *, instruction=None):
        return self.inner.score_pairs(pairs, instruction=instruction)

    def count_tokens(self, pairs, **kwargs):
        return self.inner.count_tokens(pairs, **kwargs)


class GatedScorer:
    """Scores by word overlap, but each forward pass waits until the test opens the gate.

    It records every batch it was given, so tests can see which requests reached the model together.
    """

    def __init__(self, max_length: int = 512) -> None:
        self.info = ModelInfo(
            id="gated", kind="fake", role="reranker", max_length=max_length, dtype="float32", device="cpu"
        )
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[tuple[str, str]]] = []
        self.gate.set()

    def count_tokens(self, pairs, *, instruction=None):
        # a fake's "tokenizer": words, plus two separators
        return [len(q.split()) + len(d.split()) + 2 for q, d in pairs]

    def score_pairs(self, pairs, *, instruction=None):
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("test gate never opened")
        self.calls.append(list(pairs))
        out = []
        for q, d in pairs:
            words = q.lower().split()
            out.append(sum(w in d.lower().split() for w in words) / max(len(words), 1))
        return np.array(out, dtype=np.float32)


class PoisonScorer(GatedScorer):
    """Like :class:`GatedScorer`, but a document containing ``NAN`` scores NaN and one containing
    ``CRASH`` makes the whole call raise (as a CUDA or tokenizer error would)."""

    def score_pairs(self, pairs, *, instruction=None):
        if any("CRASH" in d for _, d in pairs):
            self.calls.append(list(pairs))
            raise RuntimeError("backend failure on this batch")
        scores = super().score_pairs(pairs, instruction=instruction)
        for i, (_, d) in enumerate(pairs):
            if "NAN" in d:
                scores[i] = np.nan
        return scores


def as_reranker(model) -> Reranker:
    return Reranker(model)


def as_embedder(model) -> Embedder:
    return Embedder(model)


def load_bench_module(name: str):
    """Import ``bench/<name>.py`` (bench/ is a folder of scripts, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def queue_depth(client, model: str) -> float:
    """The server's ``qrank_queue_depth`` gauge for ``model`` (read from /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "qrank_queue_depth":
            for sample in family.samples:
                if sample.labels.get("model") == model:
                    return sample.value
    return 0.0


def wait_until(predicate, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def rerank_body(query: str, *docs: str) -> dict:
    """A ``/v1/rerank`` body: one query, its documents."""
    return {"query": query, "documents": list(docs)}
