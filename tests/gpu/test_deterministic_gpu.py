"""Deterministic mode on a CUDA GPU: the fast engine's bf16 score of a pair (a text's vector) is bit-identical
alone, inside a 100-document request, inside a call mixed with another query's pairs, and in shuffled order —
Qwen3 reranker shapes 0.6B and 8B and the 0.6B embedder shape, random bf16 weights, the real Qwen tokenizer.

Run on the device: ``TESTS_K=deterministic TEST_TIMEOUT=420 bash bench/device_run.sh tests``.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

QUERY = "how do vaccines train the immune system"
OTHER = "effects of sleep on memory consolidation"
_WORDS = ("vaccines train immune cells sleep helps memory consolidation proteins fold in the cell membrane "
          "antibodies bind antigens neurons fire during rest patients trial dose risk cohort").split()


def _documents(n: int, seed: int) -> list[str]:
    """Varied lengths (5 to ~600 tokens) so that passes pack, bucket and pad differently."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 600))) for _ in range(n)]


def _random_model(shared, kind: str, size: str):
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    raw = json.loads((shared / "configs" / f"qwen3-{kind}-{size}.json").read_text())
    raw.pop("architectures", None)
    raw.pop("torch_dtype", None)
    cls = Qwen3ForCausalLM if kind == "reranker" else Qwen3Model
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            torch.manual_seed(0)
            model = cls(Qwen3Config(**raw)).eval()
    finally:
        torch.set_default_dtype(old)
    tok_dir = shared / "tokenizers" / ("qwen3" if kind == "reranker" else "qwen3-embedding")
    return model, AutoTokenizer.from_pretrained(str(tok_dir), padding_side="left")


def _backend(shared, kind: str, size: str, deterministic: bool):
    from qrank.models.qwen3_embedder import Qwen3Embedder
    from qrank.models.qwen3_reranker import Qwen3Reranker
    from qrank.settings import EngineSettings
    from qrank.types import ModelInfo

    model, tok = _random_model(shared, kind, size)
    role = "reranker" if kind == "reranker" else "embedder"
    info = ModelInfo(id=f"random-{size}", kind=f"qwen3-{kind}", role=role, max_length=2048, dtype="bfloat16",
                     device="cuda", dim=model.config.hidden_size if role == "embedder" else None)
    cls = Qwen3Reranker if role == "reranker" else Qwen3Embedder
    return cls(model, tok, info, EngineSettings(engine="fast", deterministic=deterministic))


@pytest.mark.parametrize("size", ["0.6b", "8b"])
def test_reranker_pair_bits_do_not_depend_on_the_batch(shared, size):
    backend = _backend(shared, "reranker", size, deterministic=True)
    engine = backend.info.extra["engine"]
    assert engine["max_batch_size"] == 1 and engine["prefix_sharing"] is False, engine
    target = "Vaccines expose immune cells to antigens so that antibodies are ready."
    docs = _documents(99, seed=1)
    alone = backend.score_pairs([(QUERY, target)])
    for position in (0, 50, 99):
        crowd = docs[:position] + [target] + docs[position:]
        got = backend.score_pairs([(QUERY, d) for d in crowd])[position : position + 1]
        assert np.array_equal(got, alone), (size, position, got, alone)
    mixed = [(OTHER, d) for d in docs[:40]] + [(QUERY, target)] + [(OTHER, d) for d in docs[40:]]
    assert np.array_equal(backend.score_pairs(mixed)[40:41], alone)
    pairs = [(QUERY, d) for d in docs]
    base = backend.score_pairs(pairs)
    order = list(range(len(pairs)))
    random.Random(2).shuffle(order)
    assert np.array_equal(backend.score_pairs([pairs[i] for i in order]), base[order])
    assert np.array_equal(backend.score_encoded(backend.encode_pairs(pairs)), base)  # the server's path
    print(f"{size} deterministic: {engine}")


def test_default_mode_for_comparison(shared):
    """Not a guarantee: how far the default (batched, prefix-shared) mode's bits move, printed for the log."""
    backend = _backend(shared, "reranker", "0.6b", deterministic=False)
    docs = _documents(100, seed=1)
    pairs = [(QUERY, d) for d in docs]
    alone = np.concatenate([backend.score_pairs([p]) for p in pairs])
    together = backend.score_pairs(pairs)
    diff = np.abs(alone.astype(np.float64) - together)
    print(f"0.6b default mode: {int((diff > 0).sum())}/100 pairs differ alone vs in one request, max {diff.max():.2e}")


def test_embedder_vector_bits_do_not_depend_on_the_batch(shared):
    backend = _backend(shared, "embedding", "0.6b", deterministic=True)
    target = "Antibodies bind antigens."
    texts = _documents(99, seed=3)
    alone = backend.embed_batch([target])
    for position in (0, 99):
        crowd = texts[:position] + [target] + texts[position:]
        assert np.array_equal(backend.embed_batch(crowd)[position : position + 1], alone), position
    assert np.array_equal(backend.embed_batch([target], dim=256), backend.embed_batch([texts[0], target], dim=256)[1:])
