"""The packed encoder path on a CUDA GPU (bf16, FlashAttention varlen) against sentence-transformers in bf16.

Shapes: a small XLM-R, ModernBERT and BERT (random weights; the real-shape runs are bench/encoder_gpu_bench.py) and the
real shared MiniLM cross-encoder. Tolerance: bf16 (two systems rounding differently), checked on scores
after the sigmoid and on normalised vectors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny_models  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

_WORDS = "cells proteins vaccines immune memory sleep rivers sediment planets orbit gravity membrane".split()
DOCS = [" ".join(_WORDS[(7 * i + 3 * j) % len(_WORDS)] for j in range(1 + (37 * i) % 300)) for i in range(24)]
PAIRS = [(q, d) for q in ("how do vaccines train immune cells", "sleep and memory") for d in DOCS]


def _asset(shared: Path, name: str) -> Path:
    """A model folder under ``shared/models``; a missing one fails with what to carry (it is not a skip: a GPU run
    that silently tested less would look green). On 2026-12-06 the uncarried MiniLM gave an opaque hub error."""
    path = shared / "models" / name
    if not (path / "config.json").is_file():
        pytest.fail(f"{path} is missing: carry ../shared/models/{name} to the device "
                    "(bench/device_pending.sh encoders)")
    return path


def _reranker_pair(path: str):
    from sentence_transformers import CrossEncoder

    from qrank import Reranker

    st = CrossEncoder(path, device="cuda", model_kwargs={"dtype": torch.bfloat16})
    rr = Reranker.from_pretrained(path, device="cuda", dtype="bfloat16")
    return st, rr


@pytest.mark.parametrize("which", ["xlmr", "minilm-ce", "modernbert"])
def test_packed_cross_encoder_matches_st_in_bf16(tmp_path, shared, which):
    if which == "xlmr":
        tok = tiny_models.build_xlmr_tokenizer(tmp_path / "tok")
        path = str(tiny_models.build_random_encoder(tmp_path / "ce", tok, "xlm-roberta", "reranker"))
    elif which == "modernbert":  # local window 16: FlashAttention's window_size must equal the transformers mask
        path = str(tiny_models.build_random_encoder(tmp_path / "ce", _asset(shared, "all-MiniLM-L6-v2"),
                                                    "modernbert", "reranker"))
    else:
        path = str(_asset(shared, "scifact-minilm-ce"))
    st, rr = _reranker_pair(path)
    assert rr.model.packed is not None
    if which != "modernbert":  # BERT / XLM-R: residual add + LayerNorm fused by inductor on the GPU
        from qrank.models.packed_encoder import _eager_add_norm

        assert rr.model.packed.add_norm is not _eager_add_norm
    ref = st.predict(PAIRS)
    got = rr.model.score_pairs(PAIRS)  # 48 pairs: tokenized first, one packed run (PackedRows.worth_it)
    assert np.max(np.abs(got - ref)) < 3e-2
    assert np.corrcoef(got, ref)[0, 1] > 0.99
    # the path of big requests: tokenizing overlapped with the GPU, chunks growing from 512 tokens
    from qrank.engine.pipelining import pipelined_last_hidden
    from qrank.models.cross_encoder import apply_activation
    from qrank.models.packed_runs import PackedRows

    rows = PackedRows(rr.model.packed, rr.model.packed.logits, 16384, first_tokens=512)
    piped = apply_activation(pipelined_last_hidden(rows, PAIRS, rr.model.encode_pairs)[:, 0].numpy(),
                             rr.model.activation)
    assert np.max(np.abs(piped - ref)) < 3e-2


@pytest.mark.parametrize("model_type,pooling", [("xlm-roberta", "mean"), ("bert", "cls")])
def test_packed_embedder_matches_st_in_bf16(tmp_path, shared, model_type, pooling):
    from sentence_transformers import SentenceTransformer

    from qrank import Embedder

    tok = tiny_models.build_xlmr_tokenizer(tmp_path / "tok") if model_type == "xlm-roberta" else (
        _asset(shared, "all-MiniLM-L6-v2"))
    path = str(tiny_models.build_random_encoder(tmp_path / "emb", tok, model_type, "embedder", pooling=pooling))
    st = SentenceTransformer(path, device="cuda", model_kwargs={"dtype": torch.bfloat16})
    em = Embedder.from_pretrained(path, device="cuda", dtype="bfloat16")
    assert em.model.packed is not None
    ref = st.encode(DOCS, normalize_embeddings=True)
    got = em.model.embed_batch(DOCS)
    assert np.min(np.sum(got * ref, axis=1)) > 0.995
