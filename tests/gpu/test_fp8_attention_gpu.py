"""FP8 attention on a Hopper-class GPU (``quantization_fp8_attention``): the Triton kernel's FP8 form against
exact attention on the real head shapes, and the FP8 engine with it against the FP8 engine without it.

Run on the device: ``TESTS_K=fp8 TEST_TIMEOUT=300 bash bench/device_run.sh tests``. The kernel's indexing and
arithmetic are checked on the CPU under Triton's interpreter (tests/numerics/interpreted_triton_attention.py);
here the hardware's FP8 products and casts. Random weights: errors are printed and bounded by e4m3's precision,
not by quality (the gate at load judges a real checkpoint).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_fp8_gpu import _random_model, _relative

from qrank.engine.fp8 import fp8_supported, quantize_body

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "numerics"))  # attention_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(torch.cuda.is_available() and not fp8_supported("cuda")[0], reason="needs FP8 units (sm89+)"),
]


@pytest.mark.parametrize("heads, kv_heads", [(16, 8), (32, 8)])
def test_fp8_kernel_against_exact_attention(heads, kv_heads):
    """One layer's attention over a packed pass (a shared prefix, documents of 50-3,000 tokens), head size 128:
    the FP8 kernel within e4m3's error of exact float32 attention, the bf16 kernel far closer."""
    from attention_reference import varlen_reference

    from qrank.engine.attention import TritonAttention
    from qrank.engine.fp8_attention import quantize_attention_inputs
    from qrank.engine.packing import build_layout, varlen_plan

    g = torch.Generator().manual_seed(heads)
    head = torch.randint(0, 1000, (80,), generator=g).tolist()
    seqs = [head + torch.randint(0, 1000, (n,), generator=g).tolist() for n in (50, 450, 3000, 1, 700)]
    layout = build_layout(seqs, [(80, list(range(len(seqs))))])
    T, D = layout.num_tokens, 128
    q, k, v = (torch.randn(T, h, D, device="cuda", dtype=torch.bfloat16) for h in (heads, kv_heads, kv_heads))
    plan = varlen_plan(layout)
    idx = torch.from_numpy(plan.k_index).cuda()
    exact = varlen_reference(q.float(), k.float()[idx], v.float()[idx], plan.cu_q, plan.cu_k, plan.max_q,
                             plan.max_k, D**-0.5)
    att = TritonAttention.for_layout(layout, "cuda", D**-0.5, heads // kv_heads)
    bf16 = _relative(att(q, k, v), exact)
    out = att(*quantize_attention_inputs(q, k, v))
    fp8 = _relative(out, exact)
    qk = _relative(att(*quantize_attention_inputs(q, k, v, values=False)), exact)
    print(f"{heads}/{kv_heads} heads: relative error vs exact attention, bf16 kernel {bf16:.5f}, FP8 kernel "
          f"{fp8:.5f}, q and k only {qk:.5f}")
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert bf16 < 0.01 and fp8 < 0.08 and qk < 0.08


@pytest.mark.parametrize("size", ["0.6b", "8b"])
def test_fp8_engine_with_fp8_attention(shared, size):
    """2 layers of the real shape: the served engine (compiled, CUDA graphs) with FP8 attention reports it, and
    its hidden states differ from the FP8 engine's with bf16 attention by about what FP8 products do to bf16."""
    from qrank.engine.fast import FastEngine
    from qrank.engine.fp8_attention import set_fp8_attention

    model = _random_model(shared, "reranker", size, layers=2)
    body = model.model
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(100, 50000, (n,), generator=g).tolist() for n in (37, 300, 1, 1500)]
    seqs += [seqs[1][:200] + s for s in ([5, 6, 7], [8] * 40)]
    bf16 = FastEngine(body).last_hidden(seqs)
    quantize_body(body)
    plain = FastEngine(body)
    set_fp8_attention(body, "qk")
    fp8attn = FastEngine(body)
    c = fp8attn.config
    assert c.fp8_attention == "qk" and c.compile and c.cuda_graphs and not c.fallbacks, c
    assert not plain.config.fp8_attention and plain.stack.compile_key != fp8attn.stack.compile_key
    got, want = fp8attn.last_hidden(seqs), plain.last_hidden(seqs)
    err, quant = _relative(got, want), _relative(want, bf16)
    print(f"{size} (2 layers): FP8 attention vs bf16 attention (FP8 products both) {err:.5f} of the norm; "
          f"FP8 products vs bf16 {quant:.5f}")
    assert torch.isfinite(got).all() and err < 3 * quant


def test_fp8_gate_numbers_8b_with_fp8_attention(shared):
    """The load path's gate on the full 8B shape with FP8 attention: numbers printed, not asserted (random
    weights, see tests/gpu/test_fp8_gpu.py)."""
    from transformers import AutoTokenizer

    from qrank.models import quantization as qz
    from qrank.models.qwen3_reranker import Qwen3Reranker
    from qrank.settings import EngineSettings, ModelSettings
    from qrank.types import ModelInfo

    model = _random_model(shared, "reranker", "8b")
    tok = AutoTokenizer.from_pretrained(str(shared / "tokenizers" / "qwen3"), padding_side="left")
    info = ModelInfo(id="random-8b", kind="qwen3-reranker", role="reranker", max_length=8192, dtype="bfloat16",
                     device="cuda")
    build = lambda: Qwen3Reranker(model, tok, info, EngineSettings())  # noqa: E731
    out = qz.quantize_backend(build, model.model, ModelSettings(quantization="fp8", quantization_check=False,
                                                                 quantization_fp8_attention=True))
    q = out.info.extra["quantization"]
    print(f"FP8 gate with FP8 attention, Qwen3-Reranker-8B shape (random weights; printed, not asserted): {q}")
    assert q["attention"].startswith("q, k e4m3") and out.engine.config.fp8_attention == "qk"
