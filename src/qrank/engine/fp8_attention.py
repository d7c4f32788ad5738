"""Attention's inputs in float8 e4m3 for the Triton kernel's FP8 form
(:func:`~qrank.engine.triton_attention.prefix_attention_fp8`).

The attention products then run on FP8 tensor cores. The scales, one per tensor and layer:

* q and k: a static bound where the model has q/k norms (Qwen3). RMSNorm makes a head's squared entries sum
  to ``D`` times at most ``max|w|^2``, and RoPE only rotates pairs of entries, so no entry exceeds
  ``sqrt(D) * max|w|``: that maps to 448 (with 1% room for bfloat16 rounding), nothing is measured per pass
  and nothing can overflow. e4m3 is floating point, so the loose bound costs range, not precision: a
  typical entry (about ``|w|``) lands near 40, far above the smallest normal number (2^-6).
* v (form 'all' only): dynamic, its largest magnitude in the pass maps to 448 (one reduction over v, fused by
  ``torch.compile`` with the cast and the transposition the kernel needs).

Opt-in, for FP8 models (``ModelSettings.quantization_fp8_attention``): the quantizer marks the decoder body
(:func:`set_fp8_attention`, form 'qk': ``q k^T`` in FP8, ``p @ v`` in bf16) and the fast engine, built after,
reads the mark. Both products in FP8 (form 'all') ran slower than bf16 attention in Triton on an H100 and is
kept for benchmarks only; docs/quantization.md has the measured speed and error, and the load-time gate checks
the model with it, as served.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .fp8 import E4M3_MAX, MIN_SCALE

BOUND_ROOM = 1.01  # bfloat16 rounding of the normed, rotated entries


MARK = "qrank_fp8_attention"  # the body attribute the fast engine reads


def set_fp8_attention(body, form: str) -> None:
    """Mark a decoder ``body`` whose attention should run in FP8 (read when an engine is built, so build it after):
    'qk' (``q k^T`` in FP8, ``p @ v`` in bf16: what ``quantization_fp8_attention`` asks for), 'all' (both
    products; slower on an H100, kept for benchmarks: docs/quantization.md) or '' (off).

    >>> import torch
    >>> body = torch.nn.Linear(2, 2)
    >>> fp8_attention_marked(body), (set_fp8_attention(body, "qk"), fp8_attention_marked(body))[1]
    ('', 'qk')
    """
    if form not in ("", "qk", "all"):
        raise ValueError(f"FP8 attention form must be '', 'qk' or 'all', got {form!r}")
    setattr(body, MARK, form)


def fp8_attention_marked(body) -> str:
    """How :func:`set_fp8_attention` marked ``body``: 'qk', 'all' or '' (not)."""
    return getattr(body, MARK, "") or ""


class Fp8Values(NamedTuple):
    """v transposed to (kv_heads, D, T) in e4m3 and the dequantization scales of q, k and v (3 float32)."""

    vt: object
    scales: object


def qk_scales(q_norm, k_norm, head_dim: int):
    """The static dequantization scales of q and k from the q/k norms' weights, and 1 for a v left in bf16: the
    float32 tensor of 3 the kernel's 'qk' form takes, built once per layer when the engine is built (rebuilding
    it in each pass cost a kernel launch per layer: device_2026-12-07n).

    >>> import torch
    >>> qk_scales(torch.full((4,), 2.0), torch.tensor([1.0, -3.0, 0.5, 0.0]), 4).tolist()  # bound / 448
    [0.00902, 0.01353, 1.0]
    """
    import torch

    bound = torch.stack([q_norm.detach().abs().max(), k_norm.detach().abs().max()]).float()
    qk = (bound * (math.sqrt(head_dim) * BOUND_ROOM / E4M3_MAX)).clamp(min=MIN_SCALE)
    return torch.cat([qk, qk.new_ones(1)])


def quantize_attention_inputs(q, k, v, scales=None, *, values: bool = True):
    """(q8, k8, :class:`Fp8Values`): q (T, heads, D), k and v (T, kv_heads, D) as the FP8 kernel takes them.

    ``scales``: q's, k's (and a v scale of 1) from :func:`qk_scales`; None measures them (models without q/k
    norms). With ``values=False`` v is passed on as it is (only ``q k^T`` runs in FP8) with a v scale of 1, and
    static ``scales`` go to the kernel as they are: nothing but the two casts runs per pass.

    >>> import torch
    >>> q, k, v = torch.randn(5, 4, 16), torch.randn(5, 2, 16), torch.randn(5, 2, 16)
    >>> q8, k8, fv = quantize_attention_inputs(q, k, v)
    >>> q8.dtype, tuple(fv.vt.shape), fv.vt.stride()[-1], tuple(fv.scales.shape)
    (torch.float8_e4m3fn, (2, 16, 5), 1, (3,))
    >>> bool(((fv.vt.float() * fv.scales[2]).permute(2, 0, 1) - v).abs().max() < 0.07 * v.abs().max())
    True
    """
    import torch

    e4m3 = torch.float8_e4m3fn
    if scales is None:
        one = q.new_ones((), dtype=torch.float32)
        scales = torch.stack([q.abs().amax().float().div(E4M3_MAX), k.abs().amax().float().div(E4M3_MAX), one])
        scales = scales.clamp(min=MIN_SCALE)
    q8 = (q.float() / scales[0]).clamp(-E4M3_MAX, E4M3_MAX).to(e4m3)
    k8 = (k.float() / scales[1]).clamp(-E4M3_MAX, E4M3_MAX).to(e4m3)
    if not values:
        return q8, k8, Fp8Values(v, scales)
    sv = (v.abs().amax().float() / E4M3_MAX).clamp(min=MIN_SCALE)
    vt = (v.float() / sv).clamp(-E4M3_MAX, E4M3_MAX).to(e4m3).permute(1, 2, 0).contiguous()
    return q8, k8, Fp8Values(vt, torch.cat([scales[:2], sv[None]]))
