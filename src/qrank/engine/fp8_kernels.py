"""Triton kernels that quantize an FP8 product's input per token in one read of the row, fused with its producer.

Each FP8 projection of a Qwen3 layer needs its input quantized per token (:func:`qrank.engine.fp8.quantize_rows`):
the row's largest magnitude first, then the division and the cast. Left to ``torch.compile``, the rows of 4,096
and 12,288 elements became looped reductions that read their input twice, on top of the producer's own pass: on
an H100 (8B shape, 1 x 100 documents) the quantizing kernels took 93 ms of a 418 ms pass where bf16's
element-wise work took 41 ms (bench/logs/device_2026-12-06e_h100/fp8_bench.log). Here one program holds one
whole row in registers, computes the producer (RMSNorm, residual add + RMSNorm, SiLU-and-multiply or nothing),
its amax and the cast, and writes the FP8 row and its scale: one read, one write.

The arithmetic follows the eager reference op for op (float32 math, the bfloat16 roundings transformers does,
true division), so the result equals :func:`qrank.engine.fp8.quantize_rows` of the reference producer up to the
order of the RMSNorm's sum (tests/numerics/interpreted_fp8_kernels.py runs these kernels under Triton's
interpreter against it; tests/gpu/test_fp8_gpu.py on the GPU).

The kernels are wrapped as ``torch.library`` custom ops (``qrank::*``) so a ``torch.compile`` graph calls them
as they are. Output rows are padded to a multiple of 16 (the FP8 product's requirement) with zero rows whose
scale is the minimum, as the reference's zero padding gives.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fp8 import E4M3_MAX, MIN_SCALE, ROW_MULTIPLE

KINDS = {"plain": 0, "rms_norm": 1, "add_rms_norm": 2, "silu_mul": 3}
_E4M3_MAX: tl.constexpr = tl.constexpr(E4M3_MAX)
_MIN_SCALE: tl.constexpr = tl.constexpr(MIN_SCALE)


@triton.jit
def _rows_quant_kernel(A, B, W, Res, Out, Scale, m, n, stride_a, stride_b, stride_res, stride_out, eps,
                       KIND: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # rows x 12,288 passes 2**31 on long passes
    offs = tl.arange(0, BLOCK)
    inside = offs < n
    live = inside & (row < m)  # rows past m are the padding: zeros, as the reference pads
    a = tl.load(A + row * stride_a + offs, mask=live, other=0.0).to(tl.float32)
    if KIND == 1 or KIND == 2:  # RMSNorm (after the residual add for KIND 2), as transformers computes it
        if KIND == 2:
            b = tl.load(B + row * stride_b + offs, mask=live, other=0.0).to(tl.float32)
            a = (a + b).to(A.dtype.element_ty)
            tl.store(Res + row * stride_res + offs, a, mask=live)
            a = a.to(tl.float32)
        var = tl.sum(a * a, axis=0) / n
        h = (a * tl.math.rsqrt(var + eps)).to(A.dtype.element_ty).to(tl.float32)
        w = tl.load(W + offs, mask=inside, other=0.0).to(tl.float32)
        a = (w * h).to(A.dtype.element_ty).to(tl.float32)
    elif KIND == 3:  # SiLU(gate) * up, each rounded to the activations' dtype as the eager ops are
        b = tl.load(B + row * stride_b + offs, mask=live, other=0.0).to(tl.float32)
        s = tl.math.div_rn(a, 1.0 + tl.exp(-a)).to(A.dtype.element_ty).to(tl.float32)
        a = (s * b).to(A.dtype.element_ty).to(tl.float32)
    amax = tl.max(tl.where(inside, tl.abs(a), 0.0), axis=0)
    scale = tl.maximum(tl.math.div_rn(amax, _E4M3_MAX), _MIN_SCALE)
    q = tl.minimum(tl.maximum(tl.math.div_rn(a, scale), -_E4M3_MAX), _E4M3_MAX)
    tl.store(Out + row * stride_out + offs, q.to(tl.float8e4nv), mask=inside)
    tl.store(Scale + row, scale)


def _launch(kind: str, a, b=None, w=None, eps: float = 0.0):
    """Run the kernel over ``a`` (M, N) (and ``b``, ``w`` as ``kind`` needs): (e4m3 (M16, N), scale (M16, 1)[, sum])."""
    m, n = a.shape
    rows = -(-m // ROW_MULTIPLE) * ROW_MULTIPLE
    out = torch.empty((rows, n), dtype=torch.float8_e4m3fn, device=a.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=a.device)
    res = torch.empty_like(a) if kind == "add_rms_norm" else None
    block = triton.next_power_of_2(n)
    if rows:
        _rows_quant_kernel[(rows,)](
            a, a if b is None else b, a if w is None else w, a if res is None else res, out, scale, m, n,
            a.stride(0), 0 if b is None else b.stride(0), 0 if res is None else res.stride(0), out.stride(0),
            float(eps), KIND=KINDS[kind], BLOCK=block, num_warps=min(16, max(4, block // 1024)))
    return (out, scale) if res is None else (out, scale, res)


def _check(name: str, t) -> None:
    if t.dim() != 2 or t.stride(-1) != 1:
        raise ValueError(f"{name} must be 2-D with unit stride on its rows, got {tuple(t.shape)} {t.stride()}")


@torch.library.custom_op("qrank::fp8_quantize_rows", mutates_args=())
def quantize_rows(a: torch.Tensor, kind: str, b: torch.Tensor | None = None, w: torch.Tensor | None = None,
                  eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token e4m3 of ``producer(a[, b])``: 'plain' a, 'rms_norm' RMSNorm(a) * w, 'silu_mul' SiLU(a) * b.

    Returns (e4m3 (M16, N), scale (M16, 1) float32), rows padded to a multiple of 16.
    """
    _check("a", a)
    if b is not None:
        _check("b", b)
    return _launch(kind, a, b, w, eps)


@quantize_rows.register_fake
def _(a, kind, b=None, w=None, eps=0.0):
    rows = (a.shape[0] + ROW_MULTIPLE - 1) // ROW_MULTIPLE * ROW_MULTIPLE
    return a.new_empty((rows, a.shape[1]), dtype=torch.float8_e4m3fn), a.new_empty((rows, 1), dtype=torch.float32)


@torch.library.custom_op("qrank::fp8_add_rms_norm_quantize", mutates_args=())
def add_rms_norm_quantize(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor,
                          eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x = a + b`` (the residual stream, returned) and the per-token e4m3 of RMSNorm(x) * w: (e4m3, scale, x)."""
    _check("a", a)
    _check("b", b)
    return _launch("add_rms_norm", a, b, w, eps)


@add_rms_norm_quantize.register_fake
def _(a, b, w, eps):
    rows = (a.shape[0] + ROW_MULTIPLE - 1) // ROW_MULTIPLE * ROW_MULTIPLE
    return (a.new_empty((rows, a.shape[1]), dtype=torch.float8_e4m3fn), a.new_empty((rows, 1), dtype=torch.float32),
            torch.empty_like(a))
