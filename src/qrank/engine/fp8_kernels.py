"""Triton kernels that quantize an FP8 product's input per token, fused with the op that produces it.

Each FP8 projection of a Qwen3 layer needs its input quantized per token (:func:`qrank.engine.fp8.quantize_rows`):
the row's largest magnitude first, then the division and the cast. Left to ``torch.compile``, the rows of 4,096
and 12,288 elements became looped reductions that read their input twice, on top of the producer's own pass: on
an H100 (8B shape, 1 x 100 documents) the quantizing kernels took 93 ms of a 418 ms pass where bf16's
element-wise work took 41 ms (bench/logs/device_2026-12-06e_h100/fp8_bench.log). Here a program holds whole
rows in registers (1, 2 or 4 of them; or, for the element-wise producers, chunks of one row read twice, the
second time from L2), computes the producer (RMSNorm, residual add + RMSNorm, SiLU-and-multiply or nothing),
the row's amax and the cast, and writes the FP8 row and its scale. Which shape runs is autotuned per (width,
kind) when an FP8 stack is built (:func:`tune`). Measured on an H100, same run: these kernels 40.7 ms for that
work, the 8B pass 1.47x bf16 instead of 1.35x with the reference ops (bench/logs/device_2026-12-06i_h100).

The arithmetic follows the eager reference op for op (float32 math, the bfloat16 roundings transformers does),
so the result equals :func:`qrank.engine.fp8.quantize_rows` of the reference producer but where a last-bit
difference meets a rounding tie: the RMSNorm's sum runs in another order, SiLU's quotient is approximate and
each row is multiplied by its scale's exact reciprocal instead of divided element by element; the scale
itself, amax * float32(1/448), is torch's on CUDA to the last bit (tests/numerics/interpreted_fp8_kernels.py
runs the kernels under Triton's interpreter, tests/gpu/test_fp8_gpu.py on the GPU; at most 1.2e-5 of the
e4m3 codes one step off on an H100).

The kernels are wrapped as ``torch.library`` custom ops (``qrank::*``) so a ``torch.compile`` graph calls them
as they are. Output rows are padded to a multiple of 16 (the FP8 product's requirement) with zero rows whose
scale is the minimum, as the reference's zero padding gives.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .fp8 import E4M3_MAX, MIN_SCALE, ROW_MULTIPLE

KINDS = {"plain": 0, "rms_norm": 1, "add_rms_norm": 2, "silu_mul": 3}
_E4M3_MAX: tl.constexpr = tl.constexpr(E4M3_MAX)
# torch on CUDA divides by a scalar as a multiplication by its float32 reciprocal: the scale is amax * (1 / 448)
# to the last bit (seen on an H200, bench/logs/device_2026-12-06h_h200/gpu_tests.log)
_INV_E4M3_MAX: tl.constexpr = tl.constexpr(1.0 / E4M3_MAX)
_MIN_SCALE: tl.constexpr = tl.constexpr(MIN_SCALE)
MAX_PERSISTENT = 16384  # elements of a program's rows held in registers at once


def _configs():
    """Launch shapes the autotuner picks from per (width, kind): whole rows in registers (1, 2 or 4 rows a
    program) or, for the element-wise producers, chunks of a row read twice (the second time from L2)."""
    out = [triton.Config({"ROWS": r, "CHUNK": 0}, num_warps=w) for r in (1, 2, 4) for w in (4, 8, 16)
           if not (r > 1 and w == 16)]
    return out + [triton.Config({"ROWS": 1, "CHUNK": c}, num_warps=w) for c in (2048, 4096) for w in (4, 8)]


def _prune(configs, named_args, **kwargs):
    block, kind = kwargs["BLOCK"], kwargs["KIND"]
    keep = []
    for c in configs:
        rows, chunk = c.kwargs["ROWS"], c.kwargs["CHUNK"]
        if chunk == 0 and rows * block <= MAX_PERSISTENT:
            keep.append(c)
        elif chunk and kind in (0, 3) and chunk < block:  # RMSNorm needs its whole row: no chunks
            keep.append(c)
    return keep


@triton.jit
def _elementwise(A, B, rows, offs, live, stride_a, stride_b, KIND: tl.constexpr):
    """float32 (ROWS, len(offs)) of the element-wise producers: ``a`` as it is, or SiLU(a) * b rounded as eager."""
    a = tl.load(A + rows[:, None] * stride_a + offs[None, :], mask=live, other=0.0).to(tl.float32)
    if KIND == 3:  # SiLU(gate) * up, each rounded to the activations' dtype as the eager ops are
        b = tl.load(B + rows[:, None] * stride_b + offs[None, :], mask=live, other=0.0).to(tl.float32)
        # an approximate quotient (two instructions, not the ~8 of IEEE division): the bfloat16 rounding that
        # follows absorbs its last-bit error except at rare ties (tests: at most 0.2% of codes, one step)
        s = tl.fdiv(a, 1.0 + tl.exp(-a)).to(A.dtype.element_ty).to(tl.float32)
        a = (s * b).to(A.dtype.element_ty).to(tl.float32)
    return a


@triton.jit
def _store(y, inv_scale, rows, offs, inside, Out, stride_out):
    # y * (1 / scale), the reciprocal exact once per row: y / scale within a last bit, which moves an e4m3
    # rounding only where the quotient lies within that bit of a tie
    q = tl.minimum(tl.maximum(y * inv_scale[:, None], -_E4M3_MAX), _E4M3_MAX)
    tl.store(Out + rows[:, None] * stride_out + offs[None, :], q.to(tl.float8e4nv), mask=inside[None, :])


@triton.autotune(configs=_configs(), key=["n", "KIND"], prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _rows_quant_kernel(A, B, W, Res, Out, Scale, m, n, stride_a, stride_b, stride_res, stride_out, eps,
                       KIND: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr):
    # rows x 12,288 passes 2**31 on long passes: int64 offsets. The grid covers the rows padded to 16, a
    # multiple of ROWS; rows past m are the padding: read as zeros, stored as zeros with the minimum scale.
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    real = rows < m
    if CHUNK == 0:
        offs = tl.arange(0, BLOCK)
        inside = offs < n
        live = real[:, None] & inside[None, :]
        if KIND == 1 or KIND == 2:  # RMSNorm (after the residual add for KIND 2), as transformers computes it
            a = tl.load(A + rows[:, None] * stride_a + offs[None, :], mask=live, other=0.0).to(tl.float32)
            if KIND == 2:
                b = tl.load(B + rows[:, None] * stride_b + offs[None, :], mask=live, other=0.0).to(tl.float32)
                a = (a + b).to(A.dtype.element_ty)
                tl.store(Res + rows[:, None] * stride_res + offs[None, :], a, mask=live)
                a = a.to(tl.float32)
            var = tl.sum(a * a, axis=1) / n
            h = (a * tl.math.rsqrt(var + eps)[:, None]).to(A.dtype.element_ty).to(tl.float32)
            w = tl.load(W + offs, mask=inside, other=0.0).to(tl.float32)
            y = (w[None, :] * h).to(A.dtype.element_ty).to(tl.float32)
        else:
            y = _elementwise(A, B, rows, offs, live, stride_a, stride_b, KIND)
        amax = tl.max(tl.where(inside[None, :], tl.abs(y), 0.0), axis=1)
        scale = tl.maximum(amax * _INV_E4M3_MAX, _MIN_SCALE)
        _store(y, tl.math.div_rn(1.0, scale), rows, offs, inside, Out, stride_out)
    else:  # the element-wise producers in chunks: the amax pass, then the cast pass (re-reading from L2)
        amax = tl.zeros([ROWS], dtype=tl.float32)
        for start in range(0, n, CHUNK):
            offs = start + tl.arange(0, CHUNK)
            inside = offs < n
            y = _elementwise(A, B, rows, offs, real[:, None] & inside[None, :], stride_a, stride_b, KIND)
            amax = tl.maximum(amax, tl.max(tl.where(inside[None, :], tl.abs(y), 0.0), axis=1))
        scale = tl.maximum(amax * _INV_E4M3_MAX, _MIN_SCALE)
        inv_scale = tl.math.div_rn(1.0, scale)
        for start in range(0, n, CHUNK):
            offs = start + tl.arange(0, CHUNK)
            inside = offs < n
            y = _elementwise(A, B, rows, offs, real[:, None] & inside[None, :], stride_a, stride_b, KIND)
            _store(y, inv_scale, rows, offs, inside, Out, stride_out)
    tl.store(Scale + rows, scale)


def _launch(kind: str, a, b=None, w=None, eps: float = 0.0, *, config: dict | None = None):
    """Run the kernel over ``a`` (M, N) (and ``b``, ``w`` as ``kind`` needs): (e4m3 (M16, N), scale (M16, 1)[, sum]).

    ``config`` (``ROWS``, ``CHUNK``, ``num_warps``) launches one shape instead of the autotuned one; Triton's
    interpreter, which cannot time candidates, takes whole rows one at a time unless told otherwise.
    """
    m, n = a.shape
    rows = -(-m // ROW_MULTIPLE) * ROW_MULTIPLE
    out = torch.empty((rows, n), dtype=torch.float8_e4m3fn, device=a.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=a.device)
    res = torch.empty_like(a) if kind == "add_rms_norm" else None
    if config is None and os.environ.get("TRITON_INTERPRET") == "1":
        config = {"ROWS": 1, "CHUNK": 0}
    kernel = _rows_quant_kernel if config is None else _rows_quant_kernel.fn
    if rows:
        kernel[lambda meta: (rows // meta["ROWS"],)](
            a, a if b is None else b, a if w is None else w, a if res is None else res, out, scale, m, n,
            a.stride(0), 0 if b is None else b.stride(0), 0 if res is None else res.stride(0), out.stride(0),
            float(eps), KIND=KINDS[kind], BLOCK=triton.next_power_of_2(n), **(config or {}))
    return (out, scale) if res is None else (out, scale, res)


def tune(widths: dict, device, dtype, rows: int = 8192) -> dict:
    """Pick each kernel's launch shape now (the autotuner times its candidates on ``rows`` rows of zeros), so no
    tuning runs later inside a captured CUDA graph or a timed pass. ``widths``: kind -> row width.
    Returns kind -> the chosen config (as text)."""
    chosen = {}
    for kind, n in widths.items():
        if _tuned(kind, n) is None:  # every FP8 stack of these widths after the first finds its shapes here
            a = torch.zeros((rows, n), dtype=dtype, device=device)
            w = torch.ones(n, dtype=dtype, device=device)
            _launch(kind, a, a if kind in ("silu_mul", "add_rms_norm") else None, w, 1e-6)
        chosen[kind] = f"{n} wide: {_tuned(kind, n) or 'not tuned'}"
    return chosen


def _tuned(kind: str, n: int):
    """The autotuner's choice for rows of ``n`` and ``kind``, or None before it has timed them."""
    return next((c for key, c in _rows_quant_kernel.cache.items() if tuple(key[:2]) == (n, KINDS[kind])), None)


def _check(name: str, t) -> None:
    if t.dim() != 2 or t.stride(-1) != 1:
        raise ValueError(f"{name} must be 2-D with unit stride on its rows, got {tuple(t.shape)} {t.stride()}")


@torch.library.custom_op("qrank::fp8_quantize_rows", mutates_args=())
def fused_quantize_rows(a: torch.Tensor, kind: str, b: torch.Tensor | None = None, w: torch.Tensor | None = None,
                        eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token e4m3 of ``producer(a[, b])``: 'plain' a, 'rms_norm' RMSNorm(a) * w, 'silu_mul' SiLU(a) * b.

    Returns (e4m3 (M16, N), scale (M16, 1) float32), rows padded to a multiple of 16.
    """
    _check("a", a)
    if b is not None:
        _check("b", b)
    return _launch(kind, a, b, w, eps)


@fused_quantize_rows.register_fake
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
