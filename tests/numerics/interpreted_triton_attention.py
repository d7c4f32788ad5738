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
from triton_interpreter import mend_scalar_index

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_triton_attention.py with TRITON_INTERPRET=1", allow_module_level=True)


@pytest.fixture(scope="module")
def kernel():
    """The kernel module under the interpreter (its loops over loaded bounds need the mended index)."""
    undo = mend_scalar_index()
    from qrank.engine import triton_attention

    assert type(triton_attention._prefix_attention_kernel).__name__ == "InterpretedFunction"
    yield triton_attention
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
