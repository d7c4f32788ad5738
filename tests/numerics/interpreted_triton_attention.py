"""qrank's Triton attention kernel, run on the CPU by Triton's interpreter (``TRITON_INTERPRET=1``).

Collected only through :func:`test_triton_attention.test_the_kernel_under_the_interpreter`, which runs
this file in a fresh pytest process: the interpreter must be switched on before Triton is first
imported (its own library functions are decorated then), which another test may already have done.

The interpreter executes the kernel's own code (its tiling, prefix/own key loops, masks, online
softmax) with numpy, so these tests check its indexing and numerics against an independent reference:
per-row ``scaled_dot_product_attention`` with an explicit mask over the row's gathered keys, and, in the
engine, the model card's scoring recipe. Speed is measured on the GPU (bench/, BENCHMARKS.md).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from official_recipes import official_qwen3_rerank
from triton_interpreter import gpu_float_casts, mend_scalar_index

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_triton_attention.py with TRITON_INTERPRET=1", allow_module_level=True)


@pytest.fixture(scope="module")
def kernel():
    """The kernel module under the interpreter (its loops over loaded bounds need the mended index), with the
    GPU's float casts (:func:`~triton_interpreter.gpu_float_casts`: the FP8 form rounds its probabilities)."""
    undo = mend_scalar_index()
    undo_casts = gpu_float_casts()
    from qrank.engine import triton_attention

    assert type(triton_attention._prefix_attention_kernel).__name__ == "InterpretedFunction"
    yield triton_attention
    undo_casts()
    undo()


def _layout(seed: int):
    """A pass with two prefix groups (one longer than a key block), unshared rows and one-token rows."""
    from qrank.engine.packing import build_layout

    rng = np.random.default_rng(seed)
    tok = lambda n: rng.integers(0, 100, int(n)).tolist()  # noqa: E731
    a, b = tok(37), tok(70)
    seqs = [a + tok(n) for n in rng.integers(1, 150, 5)] + [a + tok(1)]
    seqs += [b + tok(n) for n in (3, 64, 65)] + [tok(1), tok(70), tok(129)]
    plan = [(37, list(range(6))), (70, [6, 7, 8]), (0, [9]), (0, [10]), (0, [11])]
    return build_layout(seqs, plan)


def _reference(layout, q, k, v, scale):
    from attention_reference import varlen_reference

    from qrank.engine.packing import varlen_plan

    plan = varlen_plan(layout)
    idx = torch.from_numpy(plan.k_index)
    return varlen_reference(q.float(), k.float()[idx], v.float()[idx], plan.cu_q, plan.cu_k, plan.max_q, plan.max_k,
                            scale)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, 3e-3)])
@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (4, 1), (2, 2)])
def test_kernel_equals_per_row_attention(kernel, dtype, tol, heads, kv_heads):
    layout = _layout(0)
    T, D = layout.num_tokens, 16
    gen = torch.Generator().manual_seed(heads * 10 + kv_heads)
    q = torch.randn(T, heads, D, generator=gen).to(dtype)
    k = torch.randn(T, kv_heads, D, generator=gen).to(dtype)
    v = torch.randn(T, kv_heads, D, generator=gen).to(dtype)
    want = _reference(layout, q, k, v, D**-0.5)
    for block_t, block_n, heavy_first in ((16, 16, False), (8, 64, False), (8, 16, True)):
        table = kernel.tile_table(layout.q_start, layout.q_len, layout.p_start, layout.p_len, block_t,
                                  heavy_first=heavy_first)
        got = kernel.prefix_attention(q, k, v, torch.from_numpy(table), D**-0.5, block_t=block_t, block_n=block_n)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, atol=tol, rtol=0)


def test_padded_tiles_do_nothing_and_strided_inputs_work(kernel):
    layout = _layout(1)
    T, D = layout.num_tokens, 16
    qkv = torch.randn(T, 4 + 2 + 2, D)  # q, k and v as views of one tensor, as a stacked projection gives them
    q, k, v = qkv[:, :4], qkv[:, 4:6], qkv[:, 6:]
    want = _reference(layout, q, k, v, 0.3)
    table = kernel.tile_table(layout.q_start, layout.q_len, layout.p_start, layout.p_len, 16, size=64, heavy_first=True)
    used = int((-(-layout.q_len // 16)).sum())
    assert used < 64 and (table.reshape(5, -1)[:, used:] == 0).all()  # room to spare: empty tiles
    got = kernel.prefix_attention(q, k, v, torch.from_numpy(table), 0.3, block_t=16, block_n=16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="do not fit"):
        kernel.tile_table(layout.q_start, layout.q_len, layout.p_start, layout.p_len, 16, size=3)
    with pytest.raises(ValueError, match="unit stride"):
        kernel.prefix_attention(q.transpose(1, 2).contiguous().transpose(1, 2), k, v, torch.from_numpy(table), 0.3,
                                block_t=16)


def test_engine_with_the_kernel_equals_the_official_recipe(kernel, qwen3_reranker_dir):
    """The whole fast engine on the Triton kernel (eager and through the CUDA-graph padding) vs the model card."""
    from qrank import Reranker, Settings
    from qrank.engine.graphs import GraphRunner
    from qrank.engine.packing import build_layout, plan_passes

    queries = ["What is the capital of China?", "how do vaccines train the immune system"]
    docs = ["The capital of China is Beijing.", "short", "The immune system learns from a harmless piece. " * 5, "The"]
    pairs = [(q, d) for q in queries for d in docs]
    settings = Settings(engine={"engine": "fast", "attention": "triton", "max_batch_tokens": 256})
    rr = Reranker.from_pretrained(str(qwen3_reranker_dir), settings=settings, device="cpu", dtype="float32")
    engine = rr.model.engine
    assert (engine.config.attention, engine.config.cuda_graphs, engine.config.fallbacks) == ("triton", False, ())
    assert rr.model.info.extra["engine"]["attention"] == "triton"
    official = np.asarray(official_qwen3_rerank(str(qwen3_reranker_dir), pairs))
    np.testing.assert_allclose(rr.model.score_pairs(pairs), official, atol=1e-4)
    seqs = rr.model.encode(pairs)
    expected = engine.last_hidden(seqs)
    runner = GraphRunner(engine.stack, attention="triton")
    lengths = [len(s) for s in seqs]
    passes = plan_passes(engine.groups(seqs), lengths, 256, 256)
    assert len(passes) > 1
    with torch.inference_mode():
        for plan in passes:
            layout = build_layout(seqs, plan)
            shape, host = runner.inputs(layout)  # padded to the static shape a CUDA graph would replay
            got = runner.forward_static(torch.from_numpy(host), shape)[: len(layout.members)]
            torch.testing.assert_close(got, expected[layout.members], atol=1e-4, rtol=0)


def test_long_rows_on_the_kernel_short_rows_on_sdpa_equal_the_official_recipe(kernel, qwen3_reranker_dir,
                                                                              monkeypatch):
    """``long_row_attention='triton'`` beside ``attention='sdpa'``: the passes with a long row (here: longer than
    the request's middle length) run the kernel, the others bucketed SDPA, and every score equals the model card's."""
    from qrank import Reranker, Settings
    from qrank.engine import attention, fast

    kinds: list[tuple[str, bool]] = []
    real = fast.make_attention
    monkeypatch.setattr(fast, "make_attention", lambda kind, layout, *a, **kw: kinds.append(
        (kind, attention.has_long_rows(layout))) or real(kind, layout, *a, **kw))
    queries = ["What is the capital of China?", "how do vaccines train the immune system"]
    docs = ["The capital of China is Beijing.", "The immune system learns from a harmless piece. " * 5, "The"]
    pairs = [(q, d) for q in queries for d in docs]
    settings = Settings(engine={"engine": "fast", "attention": "sdpa", "long_row_attention": "triton",
                                "max_batch_tokens": 128})
    rr = Reranker.from_pretrained(str(qwen3_reranker_dir), settings=settings, device="cpu", dtype="float32")
    config = rr.model.engine.config
    assert (config.attention, config.long_row_attention, config.fallbacks) == ("sdpa", "triton", ())
    lengths = sorted(len(s) for s in rr.model.encode(pairs))  # a row sees its whole sequence (prefix + own)
    monkeypatch.setattr(attention, "LONG_ROW_KEYS", (lengths[0] + lengths[-1]) // 2)  # read at every pass
    official = np.asarray(official_qwen3_rerank(str(qwen3_reranker_dir), pairs))
    np.testing.assert_allclose(rr.model.score_pairs(pairs), official, atol=1e-4)
    assert {long for _, long in kinds} == {True, False}, kinds
    assert all(kind == ("triton" if long else "sdpa") for kind, long in kinds), kinds


def test_the_kernel_needs_cuda_outside_the_interpreter(qwen3_reranker_dir, monkeypatch):
    """Outside the interpreter a CPU cannot run the kernel: the engine falls back at load and says why."""
    from transformers import AutoModelForCausalLM

    from qrank.engine import attention
    from qrank.engine.fast import FastEngine

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(attention, "_PROBED", {})  # the interpreter's answers are this process's so far
    body = AutoModelForCausalLM.from_pretrained(str(qwen3_reranker_dir), dtype=torch.float32).eval().model
    config = FastEngine(body, attention="triton").config
    assert config.attention == "sdpa"
    assert config.fallbacks[0] == "attention: triton -> varlen (needs a CUDA device (or TRITON_INTERPRET=1))"
    assert FastEngine(body).config.attention == "sdpa"  # 'auto' on the CPU


def _fp8_inputs(layout, heads, kv_heads, D, seed):
    from qrank.engine.fp8_attention import quantize_attention_inputs

    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(layout.num_tokens, h, D, generator=gen) for h in (heads, kv_heads, kv_heads))
    return (q, k, v), quantize_attention_inputs(q, k, v)


def _emulated_fp8_attention(layout, q8, k8, fv, scale):
    """The FP8 kernel's arithmetic when a key block holds a row's whole prefix or whole own part, written row by
    row in torch: scores from the e4m3 values, the prefix's keys first, then the row's own (causal) with the
    running maximum and the rescale the online softmax does, probabilities scaled by 2^8 and rounded to e4m3 for
    ``p @ v``, the row sum from the unrounded ones. Independent of the kernel's tiling, loops and pointer
    arithmetic (the parts tested)."""
    sq, sk, sv = (float(x) for x in fv.scales)
    qf, kf, vf = q8.double(), k8.double(), fv.vt.double().permute(2, 0, 1)
    group = qf.shape[1] // kf.shape[1]
    out = torch.zeros(qf.shape, dtype=torch.float64)
    for q0, ql, p0, pl in zip(layout.q_start, layout.q_len, layout.p_start, layout.p_len):
        own = torch.arange(ql)
        for h in range(qf.shape[1]):
            q, kh = qf[q0:q0 + ql, h], h // group
            m = torch.full((ql, 1), float("-inf"), dtype=torch.float64)
            acc, total = torch.zeros(ql, qf.shape[2], dtype=torch.float64), torch.zeros(ql, 1, dtype=torch.float64)
            blocks = [(slice(p0, p0 + pl), None)] if pl else []
            blocks.append((slice(q0, q0 + ql), own[None, :] <= own[:, None]))
            for keys, causal in blocks:
                s = q @ kf[keys, kh].T * (scale * sq * sk * 1.4426950408889634)
                if causal is not None:
                    s = s.masked_fill(~causal, float("-inf"))
                m_new = torch.maximum(m, s.amax(1, keepdim=True))
                alpha = torch.exp2(m - m_new)
                p = torch.exp2(s - m_new + 8.0)
                p8 = p.float().to(torch.float8_e4m3fn).double()
                acc = acc * alpha + p8 @ vf[keys, kh]
                total = total * alpha + p.sum(1, keepdim=True)
                m = m_new
            out[q0:q0 + ql, h] = acc / total * sv
    return out.float()


@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (2, 2)])
def test_fp8_kernel_equals_its_arithmetic_emulated_row_by_row(kernel, heads, kv_heads):
    """Key blocks (block_n 256) that hold a row's whole prefix or whole own part, so the emulation rounds the same
    probabilities as the kernel; q/k/v scales, the transposed v, the prefix and the masks are what is checked."""
    layout = _layout(0)
    D = 16
    _, (q8, k8, fv) = _fp8_inputs(layout, heads, kv_heads, D, seed=heads)
    want = _emulated_fp8_attention(layout, q8, k8, fv, D**-0.5)
    assert int((layout.p_len + layout.q_len).max()) <= 256
    for block_t in (16, 8):
        table = torch.from_numpy(kernel.tile_table(layout.q_start, layout.q_len, layout.p_start, layout.p_len,
                                                   block_t))
        got = kernel.prefix_attention_fp8(q8, k8, fv.vt, fv.scales, table, D**-0.5, out_dtype=torch.float32,
                                          block_t=block_t, block_n=256)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)


def test_fp8_kernel_with_q_and_k_only_equals_attention_of_the_dequantized_q_and_k(kernel):
    """v left as it is (float32 here: ``p @ v`` unrounded): the kernel is exact attention of the e4m3 q and k."""
    from qrank.engine.fp8_attention import quantize_attention_inputs

    layout = _layout(4)
    D = 16
    gen = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(layout.num_tokens, h, D, generator=gen) for h in (4, 2, 2))
    q8, k8, fv = quantize_attention_inputs(q, k, v, values=False)
    assert fv.vt is v and fv.scales[2] == 1
    want = _reference(layout, q8.float() * fv.scales[0], k8.float() * fv.scales[1], v, D**-0.5)
    table = torch.from_numpy(kernel.tile_table(layout.q_start, layout.q_len, layout.p_start, layout.p_len, 16))
    got = kernel.prefix_attention_fp8(q8, k8, v, fv.scales, table, D**-0.5, out_dtype=torch.float32, block_t=16,
                                      block_n=16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_fp8_kernel_error_against_exact_attention_and_a_wrong_scale(kernel):
    """Across key blocks (block_n 16: rows of up to 13 blocks) against exact float64 attention of the unquantized
    inputs: the error is e4m3's (3 mantissa bits on q, k, v and the probabilities), and a v scale off by 2x is
    caught by the same measure."""
    layout = _layout(3)
    D = 16
    (q, k, v), (q8, k8, fv) = _fp8_inputs(layout, 4, 2, D, seed=7)
    exact = _reference(layout, q.double(), k.double(), v.double(), D**-0.5)
    table = torch.from_numpy(kernel.tile_table(layout.q_start, layout.q_len, layout.p_start, layout.p_len, 16))
    run = lambda scales: kernel.prefix_attention_fp8(q8, k8, fv.vt, scales, table, D**-0.5,  # noqa: E731
                                                     out_dtype=torch.bfloat16, block_t=16, block_n=16).float()
    rel = lambda got: float((got - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt())  # noqa: E731
    err = rel(run(fv.scales))
    print(f"FP8 attention, relative RMS error against exact attention: {err:.4f}")
    assert err < 0.08
    assert rel(run(fv.scales * torch.tensor([1.0, 1.0, 2.0]))) > 0.5
    with pytest.raises(ValueError, match="unit stride on T"):
        kernel.prefix_attention_fp8(q8, k8, fv.vt.transpose(1, 2), fv.scales, table, D**-0.5,
                                    out_dtype=torch.bfloat16, block_t=16)


def test_fp8_attention_engine_equals_the_kernel_path_it_replaces(kernel, qwen3_reranker_dir):
    """The fast engine on a tiny Qwen3 body with FP8 products (emulated on the CPU) and the body marked for FP8
    attention ('qk': what ``quantization_fp8_attention=True`` does at load; 'all'): the engine runs the kernel's
    FP8 form, each under its own compile key, and its hidden states stay near those with bf16 attention."""
    from transformers import AutoModelForCausalLM

    from qrank.engine.fast import FastEngine
    from qrank.engine.fp8 import quantize_body
    from qrank.engine.fp8_attention import set_fp8_attention

    body = AutoModelForCausalLM.from_pretrained(str(qwen3_reranker_dir), dtype=torch.float32).eval().model
    quantize_body(body)
    rng = np.random.default_rng(4)
    head = rng.integers(100, 5000, 30).tolist()
    seqs = [head + rng.integers(100, 5000, n).tolist() for n in (3, 40, 90)] + [rng.integers(100, 5000, 17).tolist()]
    plain = FastEngine(body, attention="triton", max_batch_tokens=256)
    want = plain.last_hidden(seqs)
    keys = set()
    for form in ("qk", "all"):
        set_fp8_attention(body, form)
        fp8 = FastEngine(body, attention="triton", max_batch_tokens=256)
        assert (fp8.config.attention, fp8.config.fp8_attention, fp8.config.fallbacks) == ("triton", form, ())
        keys.add(fp8.stack.compile_key)
        got = fp8.last_hidden(seqs)
        err = float((got - want).norm() / want.norm())
        print(f"tiny Qwen3 body, FP8 attention ({form}) vs bf16 attention (FP8 products both): {err:.4f} of the norm")
        assert torch.isfinite(got).all() and 0 < err < 0.05
    assert not plain.config.fp8_attention and len(keys | {plain.stack.compile_key}) == 3
