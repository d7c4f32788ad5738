"""FP8 on a CUDA GPU with FP8 units (sm89+): ``torch._scaled_mm`` against the float32 emulation, and fp8 scores
against bf16 on the real 0.6B and 8B reranker shapes (random weights), the gate's numbers printed.

Run on the device (``-m gpu -s``). Random weights lack real checkpoints' outlier channels, so these tests
prove the kernels and the plumbing; whether a real checkpoint keeps its rankings is the gate's job at load.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qrank.engine.fp8 import Fp8Linear, fp8_linear, fp8_supported, quantize_weight
from qrank.settings import EngineSettings, ModelSettings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(torch.cuda.is_available() and not fp8_supported("cuda")[0], reason="needs FP8 units (sm89+)"),
]


@pytest.mark.parametrize("m, k, n", [(1, 1024, 2048), (100, 4096, 1024), (333, 4096, 12288), (4096, 12288, 4096)])
def test_scaled_mm_equals_emulation(m, k, n):
    """The kernel multiplies the same e4m3 values with the same scales: only float32 summation order and the
    bf16 output rounding differ (one bf16 step of the output, 2^-8 relative)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(n, k, device="cuda", generator=g, dtype=torch.bfloat16) * 0.02
    w[7] *= 50  # an outlier channel
    x = torch.randn(m, k, device="cuda", generator=g, dtype=torch.bfloat16)
    x[:, 3] *= 30  # an outlier feature, as real activations have
    q = quantize_weight(w)
    torch.backends.cuda.matmul.allow_tf32 = False
    got = fp8_linear(x, q)  # torch._scaled_mm
    emu = fp8_linear(x, q, emulate=True)  # dequantized float32 product
    assert got.dtype == torch.bfloat16 and got.shape == (m, n)
    scale = emu.float().abs().max().item()
    err = (got.float() - emu.float()).abs().max().item()
    fast = fp8_linear(x, q._replace(fast_accum=True)).float()
    exact = (x.float() @ w.float().t())
    print(f"_scaled_mm ({m}x{k}x{n}): max |kernel - emulation| {err:.3e} of max |y| {scale:.3e}; fast_accum "
          f"{(fast - emu.float()).abs().max().item():.3e}; fp8 vs bf16 product {(got.float() - exact).abs().max():.3e}")
    torch.testing.assert_close(got.float(), emu.float(), rtol=2**-7, atol=2**-7 * scale)
    compiled = torch.compile(fp8_linear, dynamic=True, fullgraph=True)
    torch.testing.assert_close(compiled(x, q).float(), got.float(), rtol=2**-7, atol=2**-7 * scale)


def _random_model(shared, kind: str, size: str):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    raw = json.loads((shared / "configs" / f"qwen3-{kind}-{size}.json").read_text())
    raw.pop("architectures", None), raw.pop("torch_dtype", None)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            return (Qwen3ForCausalLM if kind == "reranker" else Qwen3Model)(Qwen3Config(**raw)).eval()
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("size", ["0.6b", "8b"])
def test_fp8_reranker_against_bf16_real_shapes(shared, size):
    """The load path's gate (bf16 engine, quantize in place, FP8 engine) on the real shapes, numbers printed."""
    from transformers import AutoTokenizer

    from qrank.models import quantization as qz
    from qrank.models.qwen3_reranker import Qwen3Reranker
    from qrank.types import ModelInfo

    model = _random_model(shared, "reranker", size)
    tok = AutoTokenizer.from_pretrained(str(shared / "tokenizers" / "qwen3"), padding_side="left")
    info = ModelInfo(id=f"random-{size}", kind="qwen3-reranker", role="reranker", max_length=8192, dtype="bfloat16",
                     device="cuda")
    build = lambda: Qwen3Reranker(model, tok, info, EngineSettings())  # noqa: E731
    torch.cuda.reset_peak_memory_stats()
    out = qz.quantize_backend(build, model.model, ModelSettings(quantization="fp8", quantization_check=False))
    q = out.info.extra["quantization"]
    print(f"FP8 gate, Qwen3-Reranker-{size} shape (random weights): {q}; peak "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    assert isinstance(model.model.layers[-1].mlp.down_proj, Fp8Linear)
    assert q["layers_quantized"] == 7 * model.config.num_hidden_layers
    assert q["max_abs_delta"] <= 0.1  # the gate's default: a collapse (0.5 / 1.0 / 0 everywhere) is far above
    scores = out.score_pairs([("what is fp8?", "FP8 is an 8-bit floating point format."), ("q", "d" * 50)])
    assert np.all(np.isfinite(scores))


def test_fp8_embedder_0_6b_shape(shared):
    from transformers import AutoTokenizer

    from qrank.models import quantization as qz
    from qrank.models.qwen3_embedder import Qwen3Embedder
    from qrank.types import ModelInfo

    model = _random_model(shared, "embedding", "0.6b")
    tok = AutoTokenizer.from_pretrained(str(shared / "tokenizers" / "qwen3-embedding"), padding_side="left")
    info = ModelInfo(id="random-emb-0.6b", kind="qwen3-embedding", role="embedder", max_length=8192,
                     dtype="bfloat16", device="cuda", dim=model.config.hidden_size, supports_dims=True)
    build = lambda: Qwen3Embedder(model, tok, info, EngineSettings())  # noqa: E731
    texts = ["a first text about fp8", "un deuxième texte", "第三个文本"]
    ref = build().embed_batch(texts)
    out = qz.quantize_backend(build, model, ModelSettings(quantization="fp8", quantization_check=False))
    print(f"FP8 gate, Qwen3-Embedding-0.6B shape (random weights): {out.info.extra['quantization']}")
    cos = np.sum(ref * out.embed_batch(texts), axis=1)
    print(f"cosine(fp8, bf16) of three texts: {cos}")
    assert cos.min() > 0.99


def test_from_pretrained_fp8_end_to_end(qwen3_reranker_dir):
    """The public door on a tiny model: the device check passes, the gate runs, its numbers are in the info."""
    from qrank import Reranker
    from qrank.settings import Settings

    settings = Settings(models={"quantization_check": False})  # tiny random weights: near-tied scores
    rr = Reranker.from_pretrained(str(qwen3_reranker_dir), settings=settings, device="cuda", quantization="fp8")
    q = rr.info.extra["quantization"]
    print(f"tiny reranker, fp8 through from_pretrained: {q}")
    assert rr.info.revision.endswith("+fp8") and q["method"] == "fp8" and q["check"] in ("passed", "failed, ignored")
    assert sorted(r.index for r in rr.rerank("q", ["a", "b", "c"])) == [0, 1, 2]
