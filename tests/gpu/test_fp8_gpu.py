"""FP8 on a CUDA GPU with FP8 units (sm89+): ``torch._scaled_mm`` and the fast engine's FP8 layers against a
float32 emulation of the same quantization, on the real 0.6B/8B reranker and 0.6B embedder layer shapes (random
weights); the load path's gate numbers (fp8 vs bf16) printed; ``from_pretrained(..., quantization="fp8")`` end to
end without a dynamo recompile storm.

Run on the device: ``TESTS_K=fp8 TEST_TIMEOUT=300 bash bench/device_run.sh tests``. Random weights lack real
checkpoints' outlier channels and their trained margins: how far fp8 scores move from bf16 on them is printed,
not asserted (a random 36-layer stack amplifies any rounding, bf16's own included); what is asserted is that
the kernels compute the quantized model the emulation defines. Whether a real checkpoint keeps its rankings
is the gate's job at load.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from qrank.engine.fp8 import Fp8Linear, Fp8Weight, fp8_linear, fp8_supported, quantize_body, quantize_weight
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


def _random_model(shared, kind: str, size: str, layers: int | None = None):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    raw = json.loads((shared / "configs" / f"qwen3-{kind}-{size}.json").read_text())
    raw.pop("architectures", None), raw.pop("torch_dtype", None)
    if layers is not None:
        raw["num_hidden_layers"] = layers
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            return (Qwen3ForCausalLM if kind == "reranker" else Qwen3Model)(Qwen3Config(**raw)).eval()
    finally:
        torch.set_default_dtype(old)


def _emulated_linear(x, weight, bias=None):
    """The emulation the engine's products must follow: an :class:`Fp8Weight` product with both operands
    dequantized to float32 (e4m3 values times their per-channel / per-token scales) and multiplied in
    float32, rounded once to the activation dtype; plain weights as the engine multiplies them."""
    if isinstance(weight, Fp8Weight):
        return fp8_linear(x, weight, bias, emulate=True)
    return torch.nn.functional.linear(x, weight, bias)


def _relative(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("kind", ["plain", "rms_norm", "silu_mul", "add_rms_norm"])
@pytest.mark.parametrize("m, n, strided", [(1000, 4096, False), (333, 12288, True), (4100, 9728, False),
                                           (17, 2560, True), (1, 1024, False)])
def test_fused_quantization_kernels_equal_the_reference_ops(kind, m, n, strided):
    """The fused kernels (qrank.engine.fp8_kernels) on the hardware, with its float8 cast, against the eager
    producer then :func:`~qrank.engine.fp8.fp8_rows` (tests/fp8_kernel_cases.py), on the real widths (8B: 4,096
    and 12,288; 4B: 2,560 and 9,728; 0.6B: 1,024)."""
    from fp8_kernel_cases import check

    from qrank.engine import fp8_kernels

    # up to 5e-3 of codes one step off: a row whose largest element rounds the other way in bfloat16 (another
    # rsqrt, another sum order) gets another scale, and a share of its codes flip together; the first H200 run
    # saw 1.8e-3 on a 12,288-wide RMSNorm, near the CPU's 2e-3 (bench/logs/device_2026-12-06h_h200)
    fraction = check(fp8_kernels, kind, m, n, strided=strided, device="cuda", max_differ=5e-3)
    print(f"fused {kind} {m}x{n}: {fraction:.2e} of the e4m3 codes one step off the reference ops")


_SHAPES = {"1-row": {"ROWS": 1, "CHUNK": 0, "num_warps": 16}, "4-rows": {"ROWS": 4, "CHUNK": 0, "num_warps": 4},
           "chunks": {"ROWS": 1, "CHUNK": 2048, "num_warps": 4}}
# the shapes the autotuner is offered (fp8_kernels._prune): 4 rows of 4,096 fit, 4 of 12,288 do not; no chunks for
# RMSNorm
_OFFERED = [("silu_mul", 12288, "1-row"), ("silu_mul", 12288, "chunks"), ("plain", 4096, "1-row"),
            ("plain", 4096, "4-rows"), ("plain", 4096, "chunks"), ("add_rms_norm", 4096, "1-row"),
            ("add_rms_norm", 4096, "4-rows")]


@pytest.mark.parametrize("kind, n, shape", _OFFERED)
def test_each_launch_shape_on_the_gpu(kind, n, shape):
    """Every shape the autotuner may pick computes the reference's rows (the test above takes the one it picked)."""
    from fp8_kernel_cases import check

    from qrank.engine import fp8_kernels

    check(fp8_kernels, kind, 333, n, strided=True, device="cuda", config=_SHAPES[shape], max_differ=5e-3)


@pytest.mark.parametrize("size", ["0.6b", "8b"])
def test_engine_with_fused_kernels_equals_reference_ops(shared, monkeypatch, size):
    """The served (compiled) FP8 engine with the fused quantization kernels against the same engine quantizing
    with the reference ops: nearer each other than fp8 is to bf16 (see the test below for why a random stack
    keeps them from being equal), finite, and each under its own compile key."""
    from qrank.engine.fast import FastEngine
    from qrank.engine.qwen3_forward import Qwen3Stack

    model = _random_model(shared, "reranker", size, layers=2)
    body = model.model
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(100, 50000, (n,), generator=g).tolist() for n in (37, 300, 1, 129, 700)]
    seqs += [seqs[1][:200] + s for s in ([5, 6, 7], [8] * 40)]
    bf16 = FastEngine(body).last_hidden(seqs)
    quantize_body(body)
    fused = FastEngine(body)
    with monkeypatch.context() as m:
        m.setattr(Qwen3Stack, "fp8_kernels", False)
        plain = FastEngine(body)
    assert fused.stack.fp8_kernels and not plain.stack.fp8_kernels
    assert fused.stack.compile_key != plain.stack.compile_key
    assert fused.config.compile and plain.config.compile
    got, want = fused.last_hidden(seqs), plain.last_hidden(seqs)
    err, quant = _relative(got, want), _relative(want, bf16)
    print(f"{size} (2 layers): fused kernels vs reference ops {err:.5f} of the norm; fp8 vs bf16 {quant:.5f}")
    assert torch.isfinite(got).all() and err < quant


@pytest.mark.parametrize("kind, size", [("reranker", "0.6b"), ("reranker", "8b"), ("embedding", "0.6b")])
def test_fp8_engine_matches_emulation_per_product_end_to_end_relaxed_after_h100(shared, monkeypatch, kind, size):
    """The fast engine's FP8 products (``torch._scaled_mm``) against the float32 emulation, on the real layer
    shapes and the activations that really flow through the engine; and the engine as it serves (compiled).

    Per product (asserted tightly): every FP8 product of the eager engine is also emulated on the very same
    input; both multiply the same e4m3 values with the same scales and round the float32 result once to
    bfloat16, so they differ by float32 summation order and one bf16 rounding step (2^-8 relative; 2^-6 of
    the product's norm is allowed). Wrong scales or a transposed operand give errors of 100% and more.

    End to end (relaxed after it failed): the first version asserted that the eager kernel engine and an
    all-emulated engine end within 1% of the hidden state's norm of each other. On an H100 (2026-12-05) they
    ended 6.8-7.6% apart, with fp8 vs bf16 13-15% apart: one-ulp bf16 differences between the two paths flip
    e4m3 roundings at each next requantization (1/8 relative for an element) and two random layers amplify
    them (bench/logs/gpu_tests_2026-12-05). What is asserted end to end is what tells "the quantized model"
    from "something else": both paths nearer each other than fp8 is to bf16, and finite.
    """
    from qrank.engine import qwen3_forward
    from qrank.engine.fast import FastEngine

    model = _random_model(shared, kind, size, layers=2)
    body = getattr(model, "model", model)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(100, 50000, (n,), generator=g).tolist() for n in (37, 300, 1, 129)]
    seqs += [seqs[1][:200] + s for s in ([5, 6, 7], [8] * 40)]  # shared prefix: the prefix path too
    bf16 = FastEngine(body).last_hidden(seqs)
    quantize_body(body)
    served = FastEngine(body)
    assert served.config.compile, served.config.fallbacks
    got = served.last_hidden(seqs)
    eager_kw = {"compile": "off", "cuda_graphs": "off", "attention": served.config.attention}
    kernel_linear, products = qwen3_forward.linear, []

    def both(x, weight, bias=None):  # the kernel's product, and the emulation's on the same input
        out = kernel_linear(x, weight, bias)
        if isinstance(weight, Fp8Weight):
            products.append(_relative(out, fp8_linear(x, weight, bias, emulate=True)))
        return out

    with monkeypatch.context() as m:  # the eager path's products read ``linear`` from qwen3_forward
        m.setattr(qwen3_forward, "linear", both)
        kernel = FastEngine(body, **eager_kw).last_hidden(seqs)
    with monkeypatch.context() as m:
        m.setattr(qwen3_forward, "linear", _emulated_linear)
        emu = FastEngine(body, **eager_kw).last_hidden(seqs)
    err, quant, served_err = _relative(kernel, emu), _relative(kernel, bf16), _relative(got, emu)
    print(f"{kind} {size} (2 layers, {served.config.attention}): {len(products)} fp8 products, worst kernel vs "
          f"emulation on the same input {max(products):.2e} of the norm; end to end, relative to the norm: eager "
          f"kernel vs emulation {err:.5f}, compiled (served) vs emulation {served_err:.5f}, fp8 vs bf16 {quant:.5f}")
    assert len(products) >= 2 * 4  # every layer's projections went through the check
    assert max(products) <= 2**-6
    assert torch.isfinite(got).all() and torch.isfinite(kernel).all()
    assert err < quant and served_err < quant


@pytest.mark.parametrize("size", ["0.6b", "8b"])
def test_fp8_gate_numbers_real_shapes(shared, size):
    """The load path's gate (bf16 engine, quantize in place, FP8 engine) on the full real shapes: its numbers
    printed, not asserted (random weights: near-tied scores and a chaotic deep stack, see the module doc)."""
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
    print(f"FP8 gate, Qwen3-Reranker-{size} shape (random weights; printed, not asserted): {q}; peak "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    assert isinstance(model.model.layers[-1].mlp.down_proj, Fp8Linear)
    assert q["layers_quantized"] == 7 * model.config.num_hidden_layers and q["pairs"] == 80
    assert out.info.extra["engine"]["compile"]  # the FP8 engine still compiles (no fallback to eager)
    # 'auto' replays FP8 passes as CUDA graphs at every size (engine.config.graphs_by_default), 8B included
    assert out.info.extra["engine"]["cuda_graphs"], out.info.extra["engine"]
    scores = out.score_pairs([("what is fp8?", "FP8 is an 8-bit floating point format."), ("q", "d" * 50)])
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))


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
    got = out.embed_batch(texts)
    cos = np.sum(ref * got, axis=1)
    print(f"FP8 gate, Qwen3-Embedding-0.6B shape (random weights; printed, not asserted): "
          f"{out.info.extra['quantization']}; cosine(fp8, bf16) of three texts: {cos}")
    assert np.all(np.isfinite(got)) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-3)


def test_from_pretrained_fp8_end_to_end(qwen3_reranker_dir, caplog):
    """The public door: device check, bf16 probe engine, FP8 engine, gate, then requests of several sizes
    (a one-row one too) — without dynamo hitting its recompile limit, which it did when every engine kind
    shared one compiled code object (the FP8 engine then ran eagerly, with a warning)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from qrank import Reranker
    from qrank.engine.qwen3_forward import layer_segments

    dynamo_log = logging.getLogger("torch._dynamo")  # torch's loggers need not propagate to the root's capture
    dynamo_log.addHandler(caplog.handler)
    try:
        # tiny random weights: near-tied scores, so the gate's verdict means nothing here; its plumbing does
        rr = Reranker.from_pretrained(str(qwen3_reranker_dir), device="cuda", quantization="fp8",
                                      quantization_check=False)
        for docs in (["a", "b", "c"], ["only one"], [f"document {i} " * (i + 1) for i in range(40)]):
            assert sorted(r.index for r in rr.rerank("q", docs)) == list(range(len(docs)))
    finally:
        dynamo_log.removeHandler(caplog.handler)
    q = rr.info.extra["quantization"]
    print(f"tiny reranker, fp8 through from_pretrained: {q}")
    assert rr.info.revision.endswith("+fp8") and q["method"] == "fp8" and q["check"] in ("passed", "failed, ignored")
    engine = rr.model.engine
    assert engine.config.compile, engine.config.fallbacks
    entries = [len(_debug_get_cache_entry_list(f.__code__)) for f in layer_segments(engine.stack.compile_key)]
    print(f"dynamo cache entries of the FP8 engine's layer halves: {entries}")
    assert all(1 <= n <= 4 for n in entries)  # its general graph and few specialisations, not a pile
    storm = [r.getMessage() for r in caplog.records if "recompile" in r.getMessage().lower()]
    assert not storm, storm


def test_prequantized_checkpoints_on_the_scaled_mm_kernels_relaxed_after_h100(tmp_path):
    """Pre-quantized checkpoints through the public door on the GPU (quantization left at 'none': the checkpoint's
    own wins). The checkpoint's FP8 matrices and scales reach the GPU bit-exact; qrank quantizing the same bf16
    original on the GPU gives the same matrices up to the last bit of a few scales (the writer divided on the CPU).

    Relaxed after an H100 run (2026-12-06, bench/logs/device_2026-12-06g_h100): scores of the checkpoint and of
    qrank's own quantization were asserted equal to 1e-5 and differed by 1.0e-2 to 1.5e-2 on every engine path
    (reference, fast, graphs off, compile off) and in either load order. This tiny model, initialised with 2.5x
    the default spread, is that sensitive: the fast and the reference engine on the *same* weights differ by
    2e-2 on it. The weights are now compared directly and the scores within that noise."""
    import tiny_models
    from fp8_checkpoint_writer import block_config, ct_config, quantize_blocks, quantize_ct, write_checkpoint
    from safetensors.torch import load_file

    from qrank import Reranker

    # saved in bfloat16, so the writer (float32 from the file) and qrank (float32 from the bf16 model) quantize
    # the same numbers
    original = tiny_models.build_qwen3_reranker(tmp_path / "orig", spread=0.05, dtype=torch.bfloat16)
    ct = write_checkpoint(original, tmp_path / "ct", quantize_ct(original), ct_config())
    blocks = write_checkpoint(original, tmp_path / "blocks", quantize_blocks(original, (128, 128)),
                              block_config((128, 128)))
    docs = [f"document {i}: " + "a longer passage about retrieval " * (i % 7 + 1) for i in range(24)]

    def load(path, **kw):
        rr = Reranker.from_pretrained(str(path), device="cuda", quantization_check=False, **kw)
        got = {r.index: r.score for r in rr.rerank("what is reranking?", docs)}
        fp8 = {name: m for name, m in rr.model.model.named_modules() if isinstance(m, Fp8Linear)}
        return rr.info.extra["quantization"], np.array([got[i] for i in range(len(docs))]), fp8

    _, own, own_fp8 = load(original, quantization="fp8")
    q_ct, from_ct, ct_fp8 = load(ct)
    q_blocks, from_blocks, _ = load(blocks)
    written = load_file(ct / "model.safetensors")
    assert sorted(ct_fp8) == sorted(own_fp8) and len(ct_fp8) == 14
    scale_ulps, flipped, total = 0, 0, 0
    for name, m in ct_fp8.items():
        data, scale = written[name + ".weight"], written[name + ".weight_scale"].reshape(-1)
        assert torch.equal(m.weight_fp8.cpu().view(torch.uint8), data.view(torch.uint8)), name
        assert torch.equal(m.weight_scale.cpu(), scale), name
        mine = own_fp8[name]
        torch.testing.assert_close(mine.weight_scale.cpu(), scale, rtol=2.5e-7, atol=0)  # a last bit at most
        scale_ulps += int((mine.weight_scale.cpu() != scale).sum())
        flipped += int((mine.weight_fp8.cpu().view(torch.uint8) != data.view(torch.uint8)).sum())
        total += data.numel()
    print(f"qrank's own quantization on the GPU vs the checkpoint: {scale_ulps} scales differ in the last bit, "
          f"{flipped} of {total} FP8 elements differ\ncompressed-tensors: {q_ct}\nblocks: {q_blocks}\n"
          f"scores: max |ct - own| {np.abs(from_ct - own).max():.2e}, max |blocks - own| "
          f"{np.abs(from_blocks - own).max():.2e}")
    assert flipped <= total * 1e-3
    assert q_ct["source"].startswith("checkpoint (compressed-tensors") and q_blocks["weights"].endswith("blocks)")
    assert q_ct["check"] == q_blocks["check"] == "passed"
    np.testing.assert_allclose(from_ct, own, atol=0.05)
    np.testing.assert_allclose(from_blocks, own, atol=0.05)
