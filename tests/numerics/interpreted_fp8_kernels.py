"""qrank's fused FP8 quantization kernels (:mod:`qrank.engine.fp8_kernels`) run on the CPU by Triton's interpreter.

Collected only through :func:`test_fp8_kernels.test_the_kernels_under_the_interpreter`, which runs this file in a
fresh pytest process with ``TRITON_INTERPRET=1`` (the interpreter must be on before Triton is first imported).

The reference is independent of the kernels (tests/fp8_kernel_cases.py): the eager ops the layer uses without
them, then :func:`qrank.engine.fp8.fp8_rows`. The interpreter runs the
kernels' own code (row indexing, masks, padding rows, strides, the producers' float32 math and roundings)
with numpy. Its float casts are not the GPU's: it truncates float32 to bfloat16 and rounds float8 half-up
without carrying into the exponent (Triton 3.6, ``interpreter._convert_float``), where the GPU's ``cvt.rn``
rounds to nearest even like torch. The fixture swaps in torch's casts, so the kernels are checked with
the GPU's rounding; tests/gpu/test_fp8_gpu.py checks them on the hardware.
"""

from __future__ import annotations

import os

import pytest
import torch
from fp8_kernel_cases import EPS, KINDS, check
from triton_interpreter import gpu_float_casts, mend_scalar_index

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_fp8_kernels.py with TRITON_INTERPRET=1", allow_module_level=True)


@pytest.fixture(scope="module")
def kernels():
    """The kernel module under the interpreter, with round-to-nearest-even float casts (see the docstring)."""
    undo_casts = gpu_float_casts()
    undo = mend_scalar_index()  # the chunked shapes loop over the row's width, a runtime bound
    from qrank.engine import fp8_kernels

    assert type(fp8_kernels._rows_quant_kernel.fn).__name__ == "InterpretedFunction"
    yield fp8_kernels
    undo_casts()
    undo()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m, n, strided", [(37, 3000, False), (16, 512, True), (1, 4096, False), (5, 12288, True)])
def test_kernel_equals_eager_producer_then_quantize_rows(kernels, kind, m, n, strided):
    check(kernels, kind, m, n, strided=strided)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", [{"ROWS": 2, "CHUNK": 0}, {"ROWS": 4, "CHUNK": 0}, {"ROWS": 1, "CHUNK": 1024}],
                         ids=["2-rows", "4-rows", "chunks"])
def test_every_launch_shape_the_autotuner_may_pick(kernels, kind, config):
    """Each shape the GPU's autotuner chooses from computes the same rows (chunks serve the element-wise
    producers only: RMSNorm needs its whole row, and the autotuner is never offered chunks for it)."""
    if config["CHUNK"] and kind in ("rms_norm", "add_rms_norm"):
        assert not kernels._prune(kernels._configs(), {}, BLOCK=4096, KIND=kernels.KINDS[kind])[-1].kwargs["CHUNK"]
        return
    check(kernels, kind, 37, 2500, strided=True, config=config)


def test_layer_halves_with_kernels_equal_the_reference_ops(kernels):
    """The wiring: both layer halves of a small FP8 layer on the CPU, with the kernels' ops and with the
    reference ops; products emulated (the same :func:`qrank.engine.fp8.fp8_linear` either way)."""
    from qrank.engine import qwen3_forward
    from qrank.engine.fp8 import quantize_weight

    g = torch.Generator().manual_seed(3)
    hidden, heads, kv, dim, inter, t = 256, 4, 2, 64, 768, 21

    def rand(*shape, spread=1.0):
        return (torch.randn(*shape, generator=g) * spread).to(torch.bfloat16)

    def weight(n, k):
        return quantize_weight(rand(n, k, spread=k**-0.5))

    wq, wk, wv, wo = weight(heads * dim, hidden), weight(kv * dim, hidden), weight(kv * dim, hidden), weight(
        hidden, heads * dim)
    w_gate, w_up, w_down = weight(inter, hidden), weight(inter, hidden), weight(hidden, inter)
    x, r, qn = rand(t, hidden), rand(t, hidden), rand(dim)
    ln = (torch.rand(hidden, generator=g) + 0.5).to(torch.bfloat16)
    cos, sin = rand(t, 1, dim), rand(t, 1, dim)
    got, want = {}, {}
    for fused, out in ((True, got), (False, want)):
        q, k, v, x1 = qwen3_forward.attn_inputs(x, r, ln, wq, wk, wv, None, None, None, qn, qn, cos, sin, EPS, heads,
                                                kv, dim, fused)
        out["qkv"] = torch.cat([q.flatten(1), k.flatten(1), v.flatten(1)], 1).float()
        out["stream"] = x1.float()
        x2, r2 = qwen3_forward.attn_output_mlp(q.reshape(t, -1), x1, wo, None, ln, w_gate, w_up, w_down, EPS, fused)
        assert (r2 is not None) == fused
        out["layer"] = (x2 if r2 is None else x2 + r2).float()
    assert torch.equal(got["stream"], want["stream"])  # x + r, rounded once to bfloat16 either way
    for name in got:
        err = ((got[name] - want[name]).norm() / want[name].norm()).item()
        assert err < 1e-2, f"{name}: {err:.2e} of the norm"
    assert not torch.equal(got["layer"], got["stream"])  # the second half did something
