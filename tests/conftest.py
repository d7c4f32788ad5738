"""Shared fixtures: the real assets in ../shared and tiny random models built from them once per run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the offline environment and the skip accounting live in the repository's root conftest.py

# collected only inside the subprocesses of test_triton_attention.py and test_fp8_kernels.py, where Triton's
# interpreter is on
collect_ignore = [] if os.environ.get("TRITON_INTERPRET") == "1" else [
    "numerics/interpreted_triton_attention.py", "numerics/interpreted_fp8_kernels.py"]

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402

SHARED = tiny_models.SHARED


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is missing (the ../shared assets folder must sit beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def minilm_dir(shared) -> Path:
    """Real sentence-transformers/all-MiniLM-L6-v2 weights."""
    return _need(shared / "models" / "all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def ce_dir(shared) -> Path:
    """The real small cross-encoder fine-tuned on SciFact train claims."""
    return _need(shared / "models" / "scifact-minilm-ce")


@pytest.fixture(scope="session")
def scifact_dir(shared) -> Path:
    return _need(shared / "datasets" / "scifact")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, shared) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def qwen3_reranker_dir(tiny_dir) -> Path:
    """A tiny random Qwen3ForCausalLM with the real Qwen tokenizer."""
    return tiny_models.build_qwen3_reranker(tiny_dir / "qwen3-reranker")


@pytest.fixture(scope="session")
def qwen3_seq_cls_dir(tiny_dir, qwen3_reranker_dir) -> Path:
    """The same weights converted to a one-label Qwen3ForSequenceClassification."""
    return tiny_models.build_qwen3_seq_cls(qwen3_reranker_dir, tiny_dir / "qwen3-reranker-seq-cls")


@pytest.fixture(scope="session")
def qwen3_embedder_dir(tiny_dir) -> Path:
    """A tiny random Qwen3Model with the real Qwen3-Embedding tokenizer."""
    return tiny_models.build_qwen3_embedder(tiny_dir / "qwen3-embedding")


@pytest.fixture(scope="session")
def random_ce_dir(tiny_dir, minilm_dir) -> Path:
    """A random BertForSequenceClassification(num_labels=1) with MiniLM's shape and vocabulary."""
    return tiny_models.build_random_cross_encoder(tiny_dir / "random-ce")


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    from qrank import Embedder

    return Embedder.from_pretrained(str(minilm_dir), device="cpu")


@pytest.fixture(scope="session")
def ce(ce_dir):
    from qrank import Reranker

    return Reranker.from_pretrained(str(ce_dir), device="cpu")


@pytest.fixture(scope="session")
def qwen3_reranker(qwen3_reranker_dir):
    from qrank import Reranker

    return Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def qwen3_embedder(qwen3_embedder_dir):
    from qrank import Embedder

    return Embedder.from_pretrained(str(qwen3_embedder_dir), device="cpu", dtype="float32")
