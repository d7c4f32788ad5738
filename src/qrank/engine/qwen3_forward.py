"""The Qwen3 decoder stack run over packed tokens, reading the weights of a Hugging Face ``Qwen3Model``.

The math follows ``transformers``' Qwen3 layer op for op (RMSNorm in float32 then cast, q/k norm on
the head dimension, RoPE by rotate-half, SiLU-gated MLP), so in float32 it agrees with the reference
to rounding. Two things differ on purpose:

* tokens are one flat ``(T, hidden)`` run with per-token positions, and attention is done by a
  pluggable ``attend(q, k, v)`` that knows the rows (see :mod:`qrank.engine.attention`);
* the last layer's output projection and MLP run only on the rows whose hidden state is returned,
  since nothing reads the others.

The two halves of a layer (``attn_inputs`` and ``attn_output_mlp``) are plain functions of tensors, so
``torch.compile`` can fuse their element-wise work around the matrix products once for every layer.
:func:`layer_segments` gives each kind of stack (:attr:`Qwen3Stack.compile_key`) its own copies of them.

With FP8 weights each product's input is quantized once, by the op that produces it (:func:`norm_input`,
:func:`add_norm_input`, :func:`gated_input`, :func:`plain_input`; on CUDA fused kernels,
:mod:`qrank.engine.fp8_kernels`), and with those kernels the MLP's residual add is left to the next layer's
norm kernel: the halves carry it as ``r``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import types
from dataclasses import dataclass

from ..errors import UnsupportedModel
from .fp8 import Fp8Rows, Fp8Weight, fp8_rows, linear, projection_weight
from .fp8_attention import fp8_attention_marked, quantize_attention_inputs
from .fp8_attention import qk_scales as static_qk_scales

log = logging.getLogger(__name__)


def rms_norm(x, weight, eps: float):
    """RMSNorm as ``transformers`` computes it: normalise in float32, cast back, then scale."""
    import torch

    xf = x.to(torch.float32)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rotate_half(x):
    import torch

    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _fp8(*weights) -> bool:
    return all(isinstance(w, Fp8Weight) for w in weights)


def _rows(data_scale, like) -> Fp8Rows:
    return Fp8Rows(data_scale[0], data_scale[1], like.shape[0], like.dtype)


def norm_input(x, ln, eps: float, weights, kernels: bool):
    """RMSNorm(x) as the projections by ``weights`` take it: a tensor, or :class:`Fp8Rows` shared by FP8 ones.

    ``kernels``: the FP8 rows come from one fused kernel (:mod:`qrank.engine.fp8_kernels`, CUDA) instead of
    the reference ops.
    """
    import torch

    if not _fp8(*weights):
        return rms_norm(x, ln, eps)
    if kernels:
        return _rows(torch.ops.qrank.fp8_quantize_rows(x, "rms_norm", None, ln, eps), x)
    return fp8_rows(rms_norm(x, ln, eps))


def add_norm_input(x, r, ln, eps: float, weights, kernels: bool):
    """The residual stream ``x + r`` and its RMSNorm as :func:`norm_input` gives it: (x + r, normed)."""
    import torch

    if _fp8(*weights) and kernels:
        data, scale, x = torch.ops.qrank.fp8_add_rms_norm_quantize(x, r, ln, eps)
        return x, _rows((data, scale), x)
    x = x + r
    return x, norm_input(x, ln, eps, weights, False)


def gated_input(g, u, weight, kernels: bool):
    """SiLU(g) * u as the down projection takes it (a tensor, or :class:`Fp8Rows` for an FP8 weight)."""
    import torch
    import torch.nn.functional as F

    if _fp8(weight) and kernels:
        return _rows(torch.ops.qrank.fp8_quantize_rows(g, "silu_mul", u), g)
    y = F.silu(g) * u
    return fp8_rows(y) if _fp8(weight) else y


def plain_input(a, weight, kernels: bool):
    """``a`` as the projection by ``weight`` takes it (a tensor, or :class:`Fp8Rows` for an FP8 weight)."""
    import torch

    if _fp8(weight) and kernels:
        return _rows(torch.ops.qrank.fp8_quantize_rows(a, "plain"), a)
    return a


def attn_inputs(x, r, ln, wq, wk, wv, bq, bk, bv, q_norm, k_norm, cos, sin, eps: float, heads: int, kv_heads: int,
                head_dim: int, kernels: bool = False, fp8_attention: str = "", qk_scales=None):
    """Residual add (``r``: the previous layer's MLP output not yet added, or None), input norm, q/k/v projections,
    per-head q/k norm and RoPE: (T, hidden) -> q, k, v (T, heads, dim) and the residual stream x (+ r).

    ``fp8_attention`` ('all', or 'qk' for q and k only; '' off): q, k and v come out as the FP8 kernel takes them
    (q8, k8, :class:`Fp8Values`), quantized here so that ``torch.compile`` fuses the casts into the norm and RoPE;
    ``qk_scales``: q's and k's static scales (:func:`~qrank.engine.fp8_attention.qk_scales`; None measures them).
    """
    if r is None:
        h = norm_input(x, ln, eps, (wq, wk, wv), kernels)
    else:
        x, h = add_norm_input(x, r, ln, eps, (wq, wk, wv), kernels)
    q, k, v = linear(h, wq, bq), linear(h, wk, bk), linear(h, wv, bv)
    q = q.reshape(-1, heads, head_dim)
    k = k.reshape(-1, kv_heads, head_dim)
    v = v.reshape(-1, kv_heads, head_dim)
    if q_norm is not None:
        q = rms_norm(q, q_norm, eps)
        k = rms_norm(k, k_norm, eps)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    if fp8_attention:
        return (*quantize_attention_inputs(q, k, v, qk_scales, values=fp8_attention == "all"), x)
    return q, k, v, x


def attn_output_mlp(a, x, wo, bo, ln, w_gate, w_up, w_down, eps: float, kernels: bool = False):
    """Output projection + residual, post-attention norm, SiLU-gated MLP: (x, r), the residual stream and the MLP's
    output. With the fused FP8 kernels ``r`` is left for the next layer's norm kernel to add (one pass over the
    stream instead of two); otherwise it is added here and ``r`` is None.

    With FP8 weights each product's input is quantized once, by its producer (``kernels``: fused kernels).
    """
    x, h = add_norm_input(x, linear(plain_input(a, wo, kernels), wo, bo), ln, eps, (w_gate, w_up), kernels)
    r = linear(gated_input(linear(h, w_gate), linear(h, w_up), w_down, kernels), w_down)
    return (x, r) if kernels and _fp8(w_down) else (x + r, None)


def copy_function(fn, tag: str):
    """``fn`` with a code object of its own (renamed ``<name>__<tag>``), same globals, defaults and behaviour."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}__{tag}", co_qualname=f"{fn.__qualname__}__{tag}")
    copy = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__, copy.__doc__, copy.__qualname__ = fn.__kwdefaults__, fn.__doc__, code.co_qualname
    return copy


@functools.cache
def layer_segments(key: tuple) -> tuple:
    """Copies of :func:`attn_inputs` and :func:`attn_output_mlp` for one ``key``, the same pair for the same key.

    Dynamo keeps its compiled graphs, their guards and its recompile count on the *code object*: with one
    code object for every engine, each new kind of stack (other shapes, dtype, FP8 or plain weights — the
    bf16 probe engine and the FP8 engine of one load are two kinds) added guards to the same entries until
    ``from_pretrained(..., quantization='fp8')`` hit dynamo's recompile limit (8) and fell back to eager.
    A code object per :attr:`Qwen3Stack.compile_key` gives each kind its own cache and its own limit.

    >>> a, b = layer_segments(("k", 1)), layer_segments(("k", 2))
    >>> a is layer_segments(("k", 1)), a[0].__code__ is b[0].__code__, a[0].__code__ is attn_inputs.__code__
    (True, False, False)
    """
    tag = hashlib.sha1(repr(key).encode()).hexdigest()[:10]
    return copy_function(attn_inputs, tag), copy_function(attn_output_mlp, tag)


@dataclass
class LayerWeights:
    ln1: object
    wq: object
    wk: object
    wv: object
    bq: object
    bk: object
    bv: object
    q_norm: object
    k_norm: object
    wo: object
    bo: object
    ln2: object
    w_gate: object
    w_up: object
    w_down: object


class Qwen3Stack:
    """Views of a ``Qwen3Model``'s weights (nothing is copied) and the forward over one packed pass.

    >>> from transformers import Qwen3Config, Qwen3Model
    >>> body = Qwen3Model(Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                               num_attention_heads=4, num_key_value_heads=2, head_dim=8)).eval()
    >>> stack = Qwen3Stack(body)
    >>> stack.heads, stack.kv_heads, stack.head_dim, len(stack.layers)
    (4, 2, 8, 2)

    The engines call :meth:`forward` with their attention; tests/numerics/test_fast_engine.py checks the
    result against :class:`~qrank.engine.reference.ReferenceEngine`.

    ``fp8_kernels`` (FP8 weights on CUDA): the products' inputs are quantized by the fused kernels of
    :mod:`qrank.engine.fp8_kernels`; off, by the reference ops (which ``torch.compile`` fuses as it can).
    The class attribute is the default, a knob for benchmarks (bench/fp8_bench.py ``--variants``).
    """

    fp8_kernels = True

    def __init__(self, body) -> None:
        cfg = getattr(body, "config", None)
        layers = getattr(body, "layers", None)
        if cfg is None or layers is None or not hasattr(body, "embed_tokens") or not hasattr(body, "rotary_emb"):
            raise UnsupportedModel(f"the fast engine needs a Qwen3-style decoder body, got {type(body).__name__}")
        layer_types = getattr(cfg, "layer_types", None) or []
        if getattr(cfg, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
            raise UnsupportedModel(
                "the fast engine does not implement sliding-window attention; use engine='reference'")
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise UnsupportedModel(f"the fast engine implements SiLU MLPs only, not {cfg.hidden_act!r}")
        self.body = body
        self.heads = int(cfg.num_attention_heads)
        self.kv_heads = int(cfg.num_key_value_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.hidden = int(cfg.hidden_size)
        self.eps = float(cfg.rms_norm_eps)
        self.scale = float(self.head_dim**-0.5)
        self.embed = body.embed_tokens.weight
        self.rotary = body.rotary_emb
        self.norm = body.norm.weight
        self.layers = [self._layer(layer) for layer in layers[: cfg.num_hidden_layers]]
        self.fp8_kernels = self._fp8_kernels_here()
        self.fp8_attention = ""
        self.qk_scales = [None] * len(self.layers)
        if self.fp8:
            self.use_fp8_attention(fp8_attention_marked(body))

    def use_fp8_attention(self, form: str) -> None:
        """Attention's inputs in FP8 for the FP8 form of the Triton kernel: 'all' (q, k and v), 'qk' (q and k) or
        '' (off); the engine turns it off where its attention kind has no FP8 form. Part of :attr:`compile_key`:
        set it before compiling."""
        self.fp8_attention = form
        self.qk_scales = [static_qk_scales(w.q_norm, w.k_norm, self.head_dim)
                          if form and w.q_norm is not None else None for w in self.layers]

    def _fp8_kernels_here(self) -> bool:
        """Whether this stack's FP8 inputs come from the fused kernels: asked for, FP8 weights, CUDA, Triton."""
        if not (type(self).fp8_kernels and self.fp8 and self.device.type == "cuda"):
            return False
        try:
            from . import fp8_kernels  # registers the qrank:: ops the layer halves call
        except ImportError as exc:  # a CUDA torch without Triton: the reference ops, said once
            log.warning("FP8 without the fused quantization kernels (%s); the reference ops quantize", exc)
            return False
        # tuned now, not in the first pass: that one may be captured into a CUDA graph
        widths = {"rms_norm": self.hidden, "add_rms_norm": self.hidden, "plain": self.heads * self.head_dim,
                  "silu_mul": int(self.layers[0].w_gate.data.shape[0])}
        log.info("FP8 quantization kernels, launch shapes: %s",
                 fp8_kernels.tune(widths, self.device, self.dtype))
        return True

    @property
    def fp8(self) -> bool:
        """Whether the projections hold FP8 weights (``quantize_body`` quantizes every layer or none)."""
        return bool(self.layers) and isinstance(self.layers[0].wq, Fp8Weight)

    @property
    def flops_per_token(self) -> float:
        """Matrix-product FLOPs one token costs (2 x the layers' weight parameters; attention not counted)."""
        total = 0
        for w in self.layers:
            total += sum(getattr(w, name).numel() for name in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"))
        return 2.0 * total

    @staticmethod
    def _layer(layer) -> LayerWeights:
        at, mlp = layer.self_attn, layer.mlp
        q_norm = getattr(at, "q_norm", None)
        k_norm = getattr(at, "k_norm", None)
        return LayerWeights(
            ln1=layer.input_layernorm.weight,
            wq=projection_weight(at.q_proj),
            wk=projection_weight(at.k_proj),
            wv=projection_weight(at.v_proj),
            bq=at.q_proj.bias,
            bk=at.k_proj.bias,
            bv=at.v_proj.bias,
            q_norm=q_norm.weight if q_norm is not None else None,
            k_norm=k_norm.weight if k_norm is not None else None,
            wo=projection_weight(at.o_proj),
            bo=at.o_proj.bias,
            ln2=layer.post_attention_layernorm.weight,
            w_gate=projection_weight(mlp.gate_proj),
            w_up=projection_weight(mlp.up_proj),
            w_down=projection_weight(mlp.down_proj),
        )

    @property
    def compile_key(self) -> tuple:
        """What makes this stack's traced layer graphs differ from another's (see :func:`layer_segments`).

        Device, dtype, the shapes (hidden, heads, kv heads, head dim, MLP width, layers), the weight form
        (plain, FP8, FP8 with fast accumulation; "+kernels" where the fused quantization kernels run) and
        which optional tensors exist (biases, q/k norms).

        >>> from transformers import Qwen3Config, Qwen3Model
        >>> body = Qwen3Model(Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                               num_attention_heads=2, num_key_value_heads=1, head_dim=16))
        >>> Qwen3Stack(body).compile_key
        ('cpu', 'torch.float32', 32, 2, 1, 16, 64, 1, 'plain', False, True)
        """
        w = self.layers[0] if self.layers else None
        if w is None:
            form, bias, qk_norm, mlp = "plain", False, False, 0
        else:
            form = ("fp8-fast" if w.wq.fast_accum else "fp8") if isinstance(w.wq, Fp8Weight) else "plain"
            bias, qk_norm = w.bq is not None or w.bo is not None, w.q_norm is not None
            mlp = int(w.w_gate.data.shape[0] if isinstance(w.w_gate, Fp8Weight) else w.w_gate.shape[0])
        if form != "plain" and self.fp8_kernels:
            form += "+kernels"
        if self.fp8_attention:
            form += "+attention" + ("" if self.fp8_attention == "all" else f"-{self.fp8_attention}")
        return (self.device.type, str(self.dtype), self.hidden, self.heads, self.kv_heads, self.head_dim, mlp,
                len(self.layers), form, bias, qk_norm)

    @property
    def device(self):
        return self.embed.device

    @property
    def dtype(self):
        return self.embed.dtype

    def forward(self, input_ids, positions, attend, last_index, *, segments=None):
        """Final-normed hidden states (len(last_index), hidden) of the tokens at ``last_index``.

        ``attend(q, k, v) -> (T, heads, head_dim)`` does the attention of the pass; ``segments`` is an
        optional pair of (compiled) replacements for :func:`attn_inputs` and :func:`attn_output_mlp`.
        """
        import torch.nn.functional as F

        seg_in, seg_out = segments or (attn_inputs, attn_output_mlp)
        x = F.embedding(input_ids, self.embed)
        cos, sin = self.rotary(x, positions[None])
        cos, sin = cos[0, :, None, :], sin[0, :, None, :]
        last, r = len(self.layers) - 1, None
        for i, w in enumerate(self.layers):
            q, k, v, x = seg_in(
                x, r, w.ln1, w.wq, w.wk, w.wv, w.bq, w.bk, w.bv, w.q_norm, w.k_norm, cos, sin,
                self.eps, self.heads, self.kv_heads, self.head_dim, self.fp8_kernels, self.fp8_attention,
                self.qk_scales[i],
            )
            a = attend(q, k, v).reshape(q.shape[0], self.heads * self.head_dim)
            if a.dtype != x.dtype:  # FP8 attention writes bfloat16 (a float32 stack: the interpreter's CPU tests)
                a = a.to(x.dtype)
            if i == last:  # only the returned rows need the rest of the last layer
                a, x = a[last_index], x[last_index]
            x, r = seg_out(a, x, w.wo, w.bo, w.ln2, w.w_gate, w.w_up, w.w_down, self.eps, self.fp8_kernels)
        return rms_norm(x if r is None else x + r, self.norm, self.eps)
