"""Attention over a packed pass: every row sees its prefix, then its own tokens causally.

Three interchangeable kernels, chosen by measurement (see BENCHMARKS.md):

* ``triton`` — qrank's own Triton kernel (:mod:`qrank.engine.triton_attention`, CUDA): reads each row's
  prefix keys where the prefix row computed them (no gather) and serves the query heads of one
  key/value head (GQA) from one load of each key block.
* ``varlen`` — FlashAttention-2 variable-length (``aten._flash_attention_forward``, CUDA, fp16/bf16):
  queries stay packed, each row's keys are gathered as [prefix, own] and the kernel's bottom-right
  causal mask lines the row's queries up with the end of its keys. One launch per layer, no padding.
* ``sdpa`` — rows bucketed by length into right-padded equal-length batches for
  ``scaled_dot_product_attention`` with a plain causal mask (flash, cuDNN, efficient or math: runs
  on the CPU too). Queries sit in the slots of their own keys, so padding after a row's end is never
  attended to; only the attention is padded, the projections and MLP stay packed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .packing import PassLayout, bucket_plan, ladder, pow2, varlen_plan
from .transfer import to_device

log = logging.getLogger(__name__)

ATTENTION_KINDS = ("triton", "varlen", "sdpa", "sdpa-cudnn")
# a pass is "long" once one of its rows sees this many keys (prefix + own tokens): a document of ~1,000 tokens
# or more. The Triton kernel takes its long tile shape there and the engine its long-row attention kind
# (EngineSettings.long_row_attention: by default the same kind, which beat FA2 varlen and cuDNN on long rows on an
# H100, 2026-12-06, bench/gpu_notes.md)
LONG_ROW_KEYS = 1024


def has_long_rows(layout: PassLayout, keys: int | None = None) -> bool:
    """Whether a row of the pass sees at least ``keys`` keys (its prefix's plus its own; default
    :data:`LONG_ROW_KEYS`, read at call time).

    >>> has_long_rows(_probe_layout()), has_long_rows(_probe_layout(), keys=5)
    (False, True)
    """
    keys = LONG_ROW_KEYS if keys is None else keys
    return bool(len(layout.q_len)) and int((layout.q_len + layout.p_len).max()) >= keys


class VarlenAttention:
    """FlashAttention-2 varlen over one pass (GQA handled by the kernel).

    ``cu_q``/``cu_k`` are int32 device tensors, ``k_index`` the packed index of every key (None when
    the keys are the queries' own tokens); ``max_q``/``max_k`` may exceed the true maxima.
    """

    def __init__(self, cu_q, cu_k, k_index, max_q: int, max_k: int, scale: float) -> None:
        self.cu_q, self.cu_k, self.k_index = cu_q, cu_k, k_index
        self.max_q, self.max_k = int(max_q), int(max_k)
        self.scale = scale

    @classmethod
    def for_layout(cls, layout: PassLayout, device, scale: float) -> VarlenAttention:
        import torch

        plan = varlen_plan(layout)
        arrays = [plan.cu_q.astype(np.int64), plan.cu_k.astype(np.int64)]
        if plan.k_index is not None:
            arrays.append(plan.k_index)
        moved = to_device(arrays, device)
        k_index = moved[2] if plan.k_index is not None else None
        return cls(moved[0].to(torch.int32), moved[1].to(torch.int32), k_index, plan.max_q, plan.max_k, scale)

    @staticmethod
    def static_parts(layout: PassLayout) -> tuple[tuple[int, ...], list[tuple[np.ndarray, int, int]]]:
        """For CUDA graphs: static dims (rows, keys, max_q, max_k) and the padded int arrays behind them.

        Padded rows are empty (their cumulative lengths repeat the last one); ``keys`` is 0 when the
        keys are the tokens themselves.
        """
        plan = varlen_plan(layout)
        rows = pow2(len(layout.q_len))
        keys = 0 if plan.k_index is None else ladder(len(plan.k_index))
        dims = (rows, keys, pow2(plan.max_q), pow2(plan.max_k))
        parts = [(plan.cu_q, rows + 1, int(plan.cu_q[-1])), (plan.cu_k, rows + 1, int(plan.cu_k[-1]))]
        parts.append((plan.k_index if plan.k_index is not None else np.zeros(0, np.int64), keys, 0))
        return dims, parts

    @classmethod
    def from_static(cls, dims: tuple[int, ...], tensors: list, scale: float) -> VarlenAttention:
        import torch

        _, keys, max_q, max_k = dims
        cu_q, cu_k, k_index = tensors
        return cls(cu_q.to(torch.int32), cu_k.to(torch.int32), k_index if keys else None, max_q, max_k, scale)

    def __call__(self, q, k, v):
        if self.k_index is not None:
            k = k.index_select(0, self.k_index)
            v = v.index_select(0, self.k_index)
        return _flash_varlen(q, k, v, self.cu_q, self.cu_k, self.max_q, self.max_k, self.scale)


def _flash_varlen(q, k, v, cu_q, cu_k, max_q: int, max_k: int, scale: float):
    """torch's bundled FlashAttention-2 varlen kernel, bottom-right causal (CUDA, fp16/bf16 only)."""
    import torch

    return torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_k, max_q, max_k, 0.0, True, False, scale=scale)[0]


@dataclass(frozen=True)
class TileShape:
    """A launch shape of the Triton kernel: ``block_m`` query rows (tokens x GQA heads) per tile, ``block_n``
    keys per step, warps and pipeline stages.

    >>> TileShape(64, 32, 4, 2).block_tokens(group=2), TileShape(64, 32, 4, 2).block_tokens(group=8)
    (32, 16)
    """

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int

    def block_tokens(self, group: int) -> int:
        """Query tokens per tile: ``block_m`` rows shared by the ``group`` query heads of a key/value head, at
        least 16 (``tl.dot`` needs 16 rows)."""
        return max(self.block_m // group, 16)

    def __str__(self) -> str:
        return f"{self.block_m}x{self.block_n}/{self.num_warps}w{self.num_stages}s"


class TritonAttention:
    """qrank's Triton kernel over one pass (:mod:`qrank.engine.triton_attention`).

    A tile holds ``block_m`` query rows: ``block_m // G`` tokens of one attention row times the G query
    heads that share a key/value head. The tile shape is chosen per pass (:meth:`tile_shape`) by the
    longest row's keys, both shapes by measurement on an H200 (bench/attention_bench.py): ``short`` for
    the 50-450-token documents of a typical request (small tiles won there: 64 x 32 with 4 warps ~1.9x
    FlashAttention-2 varlen, 128 x 64 or 128 x 128 tiles 1.3-4x slower), ``long`` once a row's keys reach
    :data:`LONG_ROW_KEYS` (a tile then walks thousands of keys, and bigger tiles load each key block for more
    queries; bench/logs/longrow_h200).
    """

    short = TileShape(64, 32, 4, 2)
    long = TileShape(64, 32, 4, 2)
    # tile order (:func:`~qrank.engine.triton_attention.tile_table`): heaviest first was meant to shorten the
    # kernel's tail on long rows; measured no faster on an H100 (2026-12-06, bench/gpu_notes.md), so off
    heavy_first = False

    def __init__(self, tiles, scale: float, shape: TileShape, group: int) -> None:
        self.tiles, self.scale, self.shape, self.group = tiles, scale, shape, group

    @classmethod
    def tile_shape(cls, layout: PassLayout) -> TileShape:
        """The pass's tile shape: ``long`` if a row sees :data:`LONG_ROW_KEYS` keys (prefix + own), else ``short``."""
        if has_long_rows(layout):
            return cls.long
        return cls.short

    @classmethod
    def describe(cls) -> str:
        """The tile rule, for the engine's config line."""
        if cls.long == cls.short:
            return str(cls.short)
        return f"{cls.short}; rows >= {LONG_ROW_KEYS} keys: {cls.long}"

    @classmethod
    def for_layout(cls, layout: PassLayout, device, scale: float, group: int,
                   shape: TileShape | None = None) -> TritonAttention:
        """``group``: query heads per key/value head; ``shape``: a fixed tile shape (default :meth:`tile_shape`)."""
        from .triton_attention import tile_table

        shape = shape or cls.tile_shape(layout)
        table = tile_table(layout.q_start, layout.q_len, layout.p_start, layout.p_len, shape.block_tokens(group),
                           heavy_first=cls.heavy_first)
        return cls(to_device([table], device)[0], scale, shape, group)

    @classmethod
    def static_parts(cls, layout: PassLayout, group: int) -> tuple[tuple[int, ...], list[tuple[np.ndarray, int, int]]]:
        """For CUDA graphs: the tile count padded up the ladder (empty tiles do nothing), which tile shape,
        and the table."""
        from .triton_attention import tile_table

        shape = cls.tile_shape(layout)
        block_t = shape.block_tokens(group)
        n = int((-(-layout.q_len // block_t)).sum())
        size = ladder(n, floor=64)  # 64 tiles: a small pass's graph shape, so tiny requests share one graph
        table = tile_table(layout.q_start, layout.q_len, layout.p_start, layout.p_len, block_t, size=size,
                           heavy_first=cls.heavy_first)
        return (size, int(shape != cls.short)), [(table, 5 * size, 0)]  # 5 parts per tile (tile_table)

    @classmethod
    def from_static(cls, dims: tuple[int, ...], tensors: list, scale: float, group: int) -> TritonAttention:
        return cls(tensors[0], scale, cls.long if dims[1] else cls.short, group)

    def __call__(self, q, k, v):
        """bf16/fp16/fp32 q, k, v; or FP8 ones as :func:`~qrank.engine.fp8_attention.quantize_attention_inputs`
        gives them (``v`` an ``Fp8Values``), whose output is bfloat16."""
        from .triton_attention import prefix_attention, prefix_attention_fp8

        s = self.shape
        launch = dict(block_t=s.block_tokens(self.group), block_n=s.block_n, num_warps=s.num_warps,
                      num_stages=s.num_stages)
        if isinstance(v, tuple):  # Fp8Values
            import torch

            return prefix_attention_fp8(q, k, v.vt, v.scales, self.tiles, self.scale, out_dtype=torch.bfloat16,
                                        **launch)
        return prefix_attention(q, k, v, self.tiles, self.scale, **launch)


class BucketedAttention:
    """Length-bucketed, right-padded ``scaled_dot_product_attention``.

    ``cudnn=True`` repeats the k/v heads (cuDNN takes no GQA) and asks for the cuDNN kernel. ``max_tokens``:
    slots per padded batch (the engine passes its pass budget; 16384 is ``EngineSettings.max_batch_tokens``'s
    default).
    """

    def __init__(self, layout: PassLayout, device, scale: float, *, max_tokens: int = 16384,
                 cudnn: bool = False) -> None:
        self.buckets = []
        plans = bucket_plan(layout, max_tokens)
        arrays = []
        for b in plans:
            arrays += [b.kv_dst, b.kv_src, b.q_dst, b.q_src]
        moved = to_device(arrays, device)
        for i, b in enumerate(plans):
            self.buckets.append((b.b, b.length, *moved[4 * i : 4 * i + 4]))
        self.scale = scale
        self.cudnn = cudnn

    def __call__(self, q, k, v):
        import torch
        import torch.nn.functional as F

        heads, kv_heads, dim = q.shape[1], k.shape[1], q.shape[2]
        out = torch.empty_like(q)
        for b, length, kv_dst, kv_src, q_dst, q_src in self.buckets:
            n = b * length
            qp = q.new_zeros(n, heads, dim)
            kp = k.new_zeros(n, kv_heads, dim)
            vp = v.new_zeros(n, kv_heads, dim)
            qp[q_dst] = q[q_src]
            kp[kv_dst] = k[kv_src]
            vp[kv_dst] = v[kv_src]
            qp = qp.view(b, length, heads, dim).transpose(1, 2)
            kp = kp.view(b, length, kv_heads, dim).transpose(1, 2)
            vp = vp.view(b, length, kv_heads, dim).transpose(1, 2)
            if self.cudnn:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                rep = heads // kv_heads
                kp, vp = kp.repeat_interleave(rep, dim=1), vp.repeat_interleave(rep, dim=1)
                with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                    o = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=self.scale)
            else:
                o = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=self.scale,
                                                   enable_gqa=kv_heads != heads)
            out[q_src] = o.transpose(1, 2).reshape(n, heads, dim)[q_dst]
        return out


# Probe answers, one per (kind, device, dtype, head shape), kept for the process. A probe compiles and runs a
# kernel (Triton's JIT takes seconds) and its answer depends only on the device, the dtype, the head shape and
# the installed libraries, none of which change in a process; every engine loaded later (another model, a
# reloaded one) asks the same question. Only engine loading reads this (FastEngine.__init__), never a pass.
_PROBED: dict[tuple, tuple[bool, str]] = {}
# a probe's result may differ from bucketed SDPA's by rounding only: outputs are averages of N(0, 1) values
# (|o| < ~3, where one bf16 step is <= 2**-7 * 2 = 0.016), so 2e-2 allows one or two steps, while a wrong
# index or mask shows as an O(1) difference
PROBE_TOLERANCE = 2e-2


def _probe_layout() -> PassLayout:
    """Two rows: a 2-token prefix, then a 3-token member attending to it."""
    return PassLayout(
        input_ids=np.zeros(5, np.int64), positions=np.array([0, 1, 2, 2, 3]), q_start=np.array([0, 2]),
        q_len=np.array([2, 3]), p_start=np.array([0, 0]), p_len=np.array([0, 2]), last_index=np.array([4]), members=[0],
    )


def _probe_errors(kind: str) -> tuple[type[BaseException], ...]:
    """Errors that mean "this kernel does not run here" (not a bug in qrank's inputs)."""
    errors: tuple[type[BaseException], ...] = (RuntimeError, NotImplementedError)
    if kind == "triton":
        from triton.errors import TritonError  # compilation failures, out of shared memory or registers

        errors += (TritonError, ValueError)
    return errors


def _unavailable(kind: str, device) -> str | None:
    """Why ``kind`` cannot run on ``device`` at all, without trying it (None: try it)."""
    import os

    interpreted = kind == "triton" and os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter
    if device.type != "cuda" and not interpreted:
        return "needs a CUDA device" + (" (or TRITON_INTERPRET=1)" if kind == "triton" else "")
    if kind == "triton":
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            return f"Triton is not installed ({exc})"
    return None


def attention_works(kind: str, device, dtype, heads: int, kv_heads: int, head_dim: int) -> tuple[bool, str]:
    """Whether ``kind`` runs here and agrees with bucketed SDPA on a small problem: ``(ok, why not)``.

    Asked by the fast engine at load (see :mod:`qrank.engine.config`); the answer is cached per process.
    """
    import torch

    device = torch.device(device)
    key = (kind, str(device), str(dtype), heads, kv_heads, head_dim)
    if key in _PROBED:
        return _PROBED[key]
    why = _unavailable(kind, device)
    if why is None:
        lay, scale = _probe_layout(), head_dim**-0.5
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(5, h, head_dim, generator=gen).to(device, dtype) for h in (heads, kv_heads, kv_heads))
        try:
            got = make_attention(kind, lay, device, scale, group=heads // kv_heads)(q, k, v)
            want = BucketedAttention(lay, device, scale)(q, k, v)
            diff = (got.float() - want.float()).abs().max().item()
            why = None if diff < PROBE_TOLERANCE else f"wrong results on a small problem (max difference {diff:.3g})"
        except _probe_errors(kind) as exc:
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
    _PROBED[key] = (why is None, why or "")
    return _PROBED[key]

def make_attention(kind: str, layout: PassLayout, device, scale: float, *, bucket_tokens: int = 16384,
                   group: int = 1):
    """The attention callable of one pass for ``kind`` in :data:`ATTENTION_KINDS`.

    ``group``: query heads per key/value head (the ``triton`` kind's tiles stack them);
    ``bucket_tokens``: the ``sdpa`` kinds' padded batch size (the defaults: the pass budget's, ``block_m``).
    """
    if kind == "triton":
        return TritonAttention.for_layout(layout, device, scale, group)
    if kind == "varlen":
        return VarlenAttention.for_layout(layout, device, scale)
    if kind in ("sdpa", "sdpa-cudnn"):
        return BucketedAttention(layout, device, scale, max_tokens=bucket_tokens, cudnn=kind == "sdpa-cudnn")
    raise ValueError(f"unknown attention kind {kind!r}; expected one of {ATTENTION_KINDS}")
