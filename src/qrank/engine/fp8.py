"""FP8 (e4m3) matrix products for the projections of a Qwen3 decoder body.

The recipe (what vLLM and torchao call "FP8 dynamic, per channel"):

* weights are quantized once, at load, with one scale per output channel (row ``n`` of the ``(N, K)``
  weight): ``s_w[n] = max_k |W[n, k]| / 448`` and ``W8 = e4m3(W / s_w)``;
* activations are quantized at every call with one scale per token (row ``m``):
  ``s_x[m] = max_k |x[m, k]| / 448``;
* ``y[m, n] = s_x[m] * s_w[n] * sum_k x8[m, k] * W8[n, k]``, accumulated in float32, returned in bfloat16.

On CUDA devices with FP8 matrix units (compute capability 8.9 and up) that product is
``torch._scaled_mm`` with row-wise scales; elsewhere :func:`fp8_linear` runs an emulation (both operands
dequantized to float32 and multiplied in float32), which is how CI checks the numerics on a CPU.
Only the seven projections of each layer (q/k/v/o, gate/up/down) are quantized: embeddings, norms, the
score direction and attention stay in bfloat16/float32.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> w = torch.randn(32, 16)
>>> q = quantize_weight(w)
>>> q.data.dtype, tuple(q.scale.shape)
(torch.float8_e4m3fn, (32,))
>>> x = torch.randn(3, 16)
>>> exact = x @ w.t()  # e4m3 keeps 3 mantissa bits: a few per cent of the largest output
>>> float((fp8_linear(x, q) - exact).abs().max() / exact.abs().max()) < 0.1
True
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import torch  # this module is imported only where torch is (the engines, the FP8 loader)

log = logging.getLogger(__name__)

E4M3_MAX = 448.0  # largest finite float8_e4m3fn value
MIN_SCALE = 1e-12  # an all-zero row (padding) would otherwise divide by zero
ROW_MULTIPLE = 16  # FP8 matrix products want every dimension a multiple of 16: the token rows are padded
MIN_CAPABILITY = (8, 9)  # FP8 matrix units: Ada (sm89) and Hopper (sm90) onwards
# the projections quantized in each Qwen3 layer, by sub-module
PROJECTIONS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


class Fp8Weight(NamedTuple):
    """A quantized weight: ``data`` (N, K) float8_e4m3fn row-major, ``scale`` (N,) float32 per output channel.

    ``fast_accum`` lets Hopper's FP8 units skip the periodic promotion of partial sums to float32
    (faster, less exact over long K); off unless a measurement asks for it.
    """

    data: Any
    scale: Any
    fast_accum: bool = False

    def numel(self) -> int:
        return self.data.numel()

    def dequantize(self):
        """The float32 weight this stands for: ``data * scale`` per row."""
        return self.data.to(torch.float32) * self.scale[:, None]


def quantize_weight(weight, *, fast_accum: bool = False) -> Fp8Weight:
    """One scale per output channel (row): the row's largest magnitude maps to 448."""
    with torch.no_grad():
        w = weight.detach().to(torch.float32)
        scale = (w.abs().amax(dim=1) / E4M3_MAX).clamp(min=MIN_SCALE)
        data = (w / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return Fp8Weight(data.contiguous(), scale.contiguous(), fast_accum)


def quantize_rows(x):
    """Per-row (per-token) dynamic quantization of a 2-D activation: (x8 float8_e4m3fn, scale (M, 1) float32)."""
    xf = x.to(torch.float32)
    scale = (xf.abs().amax(dim=-1, keepdim=True) / E4M3_MAX).clamp(min=MIN_SCALE)
    return (xf / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


class Fp8Rows(NamedTuple):
    """Activations quantized per token, ready for :func:`fp8_linear`; several products may share them.

    ``data`` (R, K) float8_e4m3fn and ``scale`` (R, 1) float32 hold ``rows`` real rows, then zero padding
    (R is a multiple of 16 on CUDA); ``dtype`` is what the products return.
    """

    data: Any
    scale: Any
    rows: Any
    dtype: Any


def fp8_rows(x, *, pad: bool | None = None) -> Fp8Rows:
    """The per-token quantization of a 2-D ``x`` (:func:`quantize_rows`), padded to 16 rows on CUDA.

    >>> r = fp8_rows(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    >>> r.data.float().tolist(), r.scale.flatten().tolist(), r.rows
    ([[224.0, -448.0], [448.0, 224.0]], [0.004464285913854837, 0.0011160714784637094], 2)
    """
    import torch.nn.functional as F

    m = x.shape[0]
    if x.is_cuda if pad is None else pad:
        # zero rows quantize to zeros (their scale is MIN_SCALE); unconditional so a compiled graph with a
        # dynamic row count never specialises on m % 16
        x = F.pad(x, (0, 0, 0, (-m) % ROW_MULTIPLE))
    x8, scale = quantize_rows(x)
    return Fp8Rows(x8, scale, m, x.dtype)


def fp8_linear(x, weight: Fp8Weight, bias=None, *, emulate: bool | None = None):
    """``x @ W.T (+ bias)`` with ``W`` in FP8 and ``x`` quantized per token; output in ``x.dtype``.

    ``x`` is a tensor (quantized here) or :class:`Fp8Rows` already quantized. ``emulate``: None =
    ``torch._scaled_mm`` on CUDA, the float32 emulation elsewhere.
    """
    if isinstance(x, Fp8Rows):
        rows, shape = x, (x.rows, x.data.shape[1])
        on_cuda = x.data.is_cuda
    else:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        on_cuda = x2.is_cuda
        rows = fp8_rows(x2, pad=on_cuda and not emulate)
    emulate = not on_cuda if emulate is None else emulate
    m = rows.rows
    if emulate:
        xf = rows.data[:m].to(torch.float32) * rows.scale[:m]
        y = (xf @ weight.dequantize().t()).to(rows.dtype)
    else:
        # mat2 must be column-major: the transpose of the row-major (N, K) weight is exactly that
        y = torch._scaled_mm(rows.data, weight.data.t(), scale_a=rows.scale, scale_b=weight.scale[None, :],
                             out_dtype=torch.bfloat16, use_fast_accum=weight.fast_accum)[:m].to(rows.dtype)
    if bias is not None:
        y = y + bias
    return y.reshape(*shape[:-1], y.shape[-1])


def linear(x, weight, bias=None):
    """``F.linear`` for either weight form: a tensor, or an :class:`Fp8Weight`."""
    if isinstance(weight, Fp8Weight):
        return fp8_linear(x, weight, bias)
    import torch.nn.functional as F

    return F.linear(x, weight, bias)


class Fp8Linear(torch.nn.Module):
    """Drop-in replacement of an ``nn.Linear`` whose weight is held in FP8 (see the module docstring).

    ``fp8`` is what the fast engine reads (:mod:`qrank.engine.qwen3_forward`); ``forward`` serves the
    transformers modules (the reference engine).
    """

    def __init__(self, weight: Fp8Weight, bias=None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.data.shape
        self.fast_accum = weight.fast_accum
        self.register_buffer("weight_fp8", weight.data)
        self.register_buffer("weight_scale", weight.scale)
        self.bias = bias

    @classmethod
    def from_linear(cls, linear_module, *, fast_accum: bool = False) -> Fp8Linear:
        return cls(quantize_weight(linear_module.weight, fast_accum=fast_accum), linear_module.bias)

    @property
    def fp8(self) -> Fp8Weight:
        return Fp8Weight(self.weight_fp8, self.weight_scale, self.fast_accum)

    def _apply(self, fn, recurse=True):
        # model.float() / .half() / .to(dtype) cast every floating buffer, float8 included: the matrix would
        # arrive unscaled in float32 and the kernels would reject it. Only the device may change here.
        kept = {"weight_fp8": self.weight_fp8, "weight_scale": self.weight_scale}
        out = super()._apply(fn, recurse)
        for name, old in kept.items():
            new = self._buffers[name]
            if new.dtype != old.dtype:
                self._buffers[name] = old.to(new.device)
        return out

    def forward(self, x):
        return fp8_linear(x, self.fp8, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 e4m3 per-channel"


def quantize_body(body, *, fast_accum: bool = False) -> int:
    """Replace the q/k/v/o/gate/up/down projections of every layer of a Qwen3 body by :class:`Fp8Linear`, in place.

    Returns how many were replaced (already quantized ones are left alone). The bfloat16 weights are
    released as each is replaced, so the peak is the bfloat16 model plus one FP8 matrix; an engine that
    still holds views of the old weights keeps them alive, so drop it first.
    """
    replaced = 0
    for layer in body.layers:
        for parent_name, names in PROJECTIONS.items():
            parent = getattr(layer, parent_name)
            for name in names:
                module = getattr(parent, name)
                if isinstance(module, Fp8Linear):
                    continue
                setattr(parent, name, Fp8Linear.from_linear(module, fast_accum=fast_accum))
                replaced += 1
    return replaced


def set_fast_accumulation(model, on: bool) -> int:
    """Turn fast accumulation on or off for every :class:`Fp8Linear` of ``model``; returns how many.

    Engines read the flag when they are built (it is part of their compile key), so build them after.

    >>> body = torch.nn.Sequential(Fp8Linear.from_linear(torch.nn.Linear(4, 2)), torch.nn.ReLU())
    >>> set_fast_accumulation(body, True), body[0].fp8.fast_accum
    (1, True)
    """
    modules = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    for m in modules:
        m.fast_accum = bool(on)
    return len(modules)


def projection_weight(module):
    """What the fast engine multiplies by: the FP8 weight of an :class:`Fp8Linear`, else ``module.weight``.

    FP8 weights come with their shapes marked static (:func:`static_shapes`).
    """
    return static_shapes(module.fp8) if isinstance(module, Fp8Linear) else module.weight


def static_shapes(weight: Fp8Weight) -> Fp8Weight:
    """``weight`` with both tensors' sizes marked static for ``torch.compile`` (in place; returns it).

    The engine compiles its layer halves with ``dynamic=True`` because token counts vary, and that made the
    weights' sizes symbolic too: inductor then split each per-token quantization into an amax pass and a
    cast pass. With the weights' sizes fixed they became one kernel, the compiled element-wise work of an
    8B-shape layer stack fell from 29 to 21 ms and the pass from 102 to 96 ms (one H100,
    bench/logs/fp8_fused_2026-12-06_h100.md, run 3). A weight's shape never changes after load, so no guard
    can fail on it.

    >>> w = static_shapes(quantize_weight(torch.ones(4, 2)))
    >>> sorted(w.data._dynamo_static_indices), sorted(w.scale._dynamo_static_indices)
    ([0, 1], [0])
    """
    import torch._dynamo

    torch._dynamo.mark_static(weight.data)
    torch._dynamo.mark_static(weight.scale)
    return weight


def fp8_supported(device) -> tuple[bool, str]:
    """Whether ``device`` has FP8 matrix units, and why not when it has none."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return False, f"device {str(dev)!r} is not a CUDA GPU"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible"
    cap = torch.cuda.get_device_capability(dev)
    if cap < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(dev)
        return False, (f"{name} has compute capability {cap[0]}.{cap[1]}; FP8 matrix units need "
                       f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer (Ada, Hopper, Blackwell)")
    # the row-wise kernels depend on the torch build as well as the chip: one tiny product says whether they run
    try:
        x = torch.ones(ROW_MULTIPLE, ROW_MULTIPLE, device=dev)
        fp8_linear(x.to(torch.bfloat16), quantize_weight(x))
        torch.cuda.synchronize(dev)
    except RuntimeError as exc:
        return False, f"torch {torch.__version__} runs no row-wise FP8 product here ({str(exc)[:200]})"
    return True, ""
