"""The cases and the reference of the fused FP8 quantization kernels (:mod:`qrank.engine.fp8_kernels`), shared by
the interpreter's tests on the CPU (tests/numerics/interpreted_fp8_kernels.py) and the GPU's (tests/gpu).

The reference is independent of the kernels: the eager ops the layer runs without them (``rms_norm``,
``F.silu(g) * u``, the residual add), then :func:`qrank.engine.fp8.fp8_rows`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6
KINDS = ("plain", "rms_norm", "silu_mul", "add_rms_norm")


def inputs(m: int, n: int, seed: int, strided: bool, device="cpu"):
    """bfloat16 ``a``, ``b`` (M, N) and a norm weight ``w``; ``strided``: rows of a wider tensor."""
    g = torch.Generator().manual_seed(seed)
    wide = n + 24 if strided else n

    def act(spread):
        return (torch.randn(m, wide, generator=g) * spread).to(torch.bfloat16).to(device)[:, :n]

    a, b = act(3.0), act(1.0)
    if m > 2:
        a[1] = 0  # an all-zero row: the minimum scale, zeros, no division by zero
        a[2, : n // 2] *= 40  # an outlier half-row
    w = (torch.rand(n, generator=g) + 0.5).to(torch.bfloat16).to(device)
    return a, b, w


def reference(kind: str, a, b, w):
    """(:class:`~qrank.engine.fp8.Fp8Rows` of the eager producer, padded to 16 rows; the residual or None)."""
    from qrank.engine.fp8 import fp8_rows
    from qrank.engine.qwen3_forward import rms_norm

    if kind == "add_rms_norm":
        x = a + b
        return fp8_rows(rms_norm(x, w, EPS), pad=True), x
    producer = {"plain": lambda: a, "rms_norm": lambda: rms_norm(a, w, EPS), "silu_mul": lambda: F.silu(a) * b}
    return fp8_rows(producer[kind](), pad=True), None


def run_kernel(kernels, kind: str, a, b, w, config=None):
    """(e4m3 rows, scales, residual or None) from the kernels' ops, or from one launch shape (``config``)."""
    if config is not None:
        got = kernels._launch(kind, a, b if kind in ("silu_mul", "add_rms_norm") else None, w, EPS, config=config)
        return got if kind == "add_rms_norm" else (*got, None)
    if kind == "add_rms_norm":
        return kernels.add_rms_norm_quantize(a, b, w, EPS)
    b, w = (b if kind == "silu_mul" else None), (w if kind == "rms_norm" else None)
    data, scale = kernels.fused_quantize_rows(a, kind, b, w, EPS)
    return data, scale, None


def check(kernels, kind: str, m: int, n: int, *, strided: bool = False, device="cpu", max_differ: float = 2e-3,
          scale_rtol: float = 1e-5, config: dict | None = None) -> float:
    """Assert the kernel equals the reference; returns the fraction of e4m3 codes that differ (by one step).

    Codes may differ where float32 math in another order (RMSNorm's sum, another ``exp``) rounds a bfloat16
    intermediate across a tie: one e4m3 step, in at most ``max_differ`` of them.
    """
    a, b, w = inputs(m, n, seed=m * 7 + n, strided=strided, device=device)
    data, scale, x = run_kernel(kernels, kind, a, b, w, config)
    want, residual = reference(kind, a, b, w)
    rows = -(-m // 16) * 16
    assert data.shape == (rows, n) and data.dtype == torch.float8_e4m3fn
    assert scale.shape == (rows, 1) and scale.dtype == torch.float32
    # the kernels multiply amax by float32 1/448 as torch does on CUDA; torch on the CPU divides (a last bit)
    tol = scale_rtol if kind != "plain" else 0.0 if data.is_cuda else 2.5e-7
    torch.testing.assert_close(scale, want.scale, rtol=tol, atol=0.0)
    got_codes, want_codes = data.view(torch.uint8).to(torch.int16), want.data.view(torch.uint8).to(torch.int16)
    differ = got_codes != want_codes
    fraction = differ.float().mean().item()
    label = f"{kind} {m}x{n} {config or ''}"
    assert fraction <= max_differ, f"{label}: {int(differ.sum())} of {differ.numel()} codes differ"
    assert ((got_codes - want_codes).abs()[differ] <= 1).all(), f"{label}: a code more than one step off"
    assert (data[m:].float() == 0).all() and (scale[m:] == want.scale[m:]).all()  # the padding rows
    if residual is not None:
        assert torch.equal(x, residual) and x.stride() == (n, 1)
    if m > 2 and kind == "plain":
        assert abs(scale[1].item() - 1e-12) < 1e-18
        assert (data[1].float() == 0).all()
    return fraction
