"""A Triton attention kernel for packed passes whose rows share a prefix, reading every key in place.

FlashAttention-2 varlen (the ``varlen`` kind) needs each row's keys contiguous, so a row's shared query
prefix is gathered again for every document, and torch's bundled kernel is the sm80 one. This kernel
takes the pass's rows as they are packed: a program owns a tile of one row's queries and one key/value
head, and walks first the row's prefix keys (all visible, read from where the prefix row computed them)
and then its own keys up to the tile's last query (causal). The query heads that share a key/value head
(GQA) are stacked into the tile's rows, so each key block is loaded once for all of them.

:func:`prefix_attention_fp8` is the same kernel with e4m3 q and k (``q k^T`` on FP8 tensor cores; the scales of
:mod:`qrank.engine.fp8_attention`), and optionally an e4m3 v for ``p v`` as well (measured slower in Triton on
an H100, so the engine's opt-in uses q and k only: docs/quantization.md).

Imported only when the ``triton`` attention kind is asked for (Triton ships with CUDA builds of torch);
with ``TRITON_INTERPRET=1`` set before the import it runs on the CPU (how CI checks its indexing).
"""

from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)): the kernel uses the cheaper exp2


@triton.jit
def _attend_block(acc, l_i, m_i, q, K, V, kt, kh, tok, stride_kt, stride_kh, stride_vt, stride_vh, stride_vd, qk_scale,
                  key_end, offs_d, CAUSAL: tl.constexpr, BOUNDED: tl.constexpr, PV_FP8: tl.constexpr):
    """Online-softmax update of one tile with the key block ``kt`` (packed key indices).

    The key block is loaded as (D, keys), ready for ``q @ k`` (measured no slower than loading rows and
    transposing them: bench/logs/attn_run3_h200). With ``PV_FP8`` (v in e4m3) the probabilities are scaled by
    2^8 (the scale cancels in ``acc / l``) and cast to e4m3 for the ``p @ v`` product: small ones stay normal
    numbers instead of flushing to zero.
    """
    kptr = K + kt[None, :] * stride_kt + kh * stride_kh + offs_d[:, None]
    vptr = V + kt[:, None] * stride_vt + kh * stride_vh + offs_d[None, :] * stride_vd
    if BOUNDED:
        inside = kt < key_end
        k = tl.load(kptr, mask=inside[None, :], other=0.0)
        v = tl.load(vptr, mask=inside[:, None], other=0.0)
    else:
        k = tl.load(kptr)
        v = tl.load(vptr)
    s = tl.dot(q, k) * qk_scale
    if CAUSAL:
        visible = (kt[None, :] <= tok[:, None]) & (kt[None, :] < key_end)
    elif BOUNDED:
        visible = (kt < key_end)[None, :] & (tok >= 0)[:, None]
    if CAUSAL or BOUNDED:
        s = tl.where(visible, s, -1.0e30)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.math.exp2(m_i - m_new)
    if PV_FP8:
        p = tl.math.exp2(s - m_new[:, None] + 8.0)
    else:
        p = tl.math.exp2(s - m_new[:, None])
    if CAUSAL or BOUNDED:
        p = tl.where(visible, p, 0.0)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, l_i, m_new


@triton.jit
def _prefix_attention_kernel(
    Q, K, V, Out, Tiles, Scales, n_tiles, stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_vd,
    stride_ot, stride_oh, qk_scale,
    G: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr, FP8: tl.constexpr,
    PV_FP8: tl.constexpr,
):
    tile = tl.program_id(0)
    kh = tl.program_id(1)
    # a tile: first query token, end of its queries, the row's first own key, prefix start, prefix length
    q0 = tl.load(Tiles + tile)
    q1 = tl.load(Tiles + n_tiles + tile)
    k0 = tl.load(Tiles + 2 * n_tiles + tile)
    p0 = tl.load(Tiles + 3 * n_tiles + tile)
    pl = tl.load(Tiles + 4 * n_tiles + tile)
    if q1 > q0:  # padded tiles (CUDA-graph shapes) are empty
        BLOCK_M: tl.constexpr = BLOCK_T * G
        offs_m = tl.arange(0, BLOCK_M)
        tok = q0 + offs_m // G
        head = kh * G + offs_m % G
        offs_d = tl.arange(0, D)
        offs_n = tl.arange(0, BLOCK_N)
        q_in = tok < q1
        q = tl.load(Q + tok[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
                    mask=q_in[:, None], other=0.0)
        m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        if FP8:  # q and k carry a scale each: fold both into the softmax's
            qk_scale = qk_scale * tl.load(Scales) * tl.load(Scales + 1)
        # the shared prefix: every key visible; whole blocks first, then the ragged end
        p_full = p0 + (pl // BLOCK_N) * BLOCK_N
        for start in range(p0, p_full, BLOCK_N):
            acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, start + offs_n, kh, tok, stride_kt, stride_kh,
                                          stride_vt, stride_vh, stride_vd, qk_scale, p0 + pl, offs_d, False, False,
                                          PV_FP8)
        if p_full < p0 + pl:
            acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, p_full + offs_n, kh, tok, stride_kt, stride_kh,
                                          stride_vt, stride_vh, stride_vd, qk_scale, p0 + pl, offs_d, False, True,
                                          PV_FP8)
        # the row's own keys: blocks wholly before the tile's first query need no mask
        o_full = k0 + ((q0 - k0 + 1) // BLOCK_N) * BLOCK_N
        for start in range(k0, o_full, BLOCK_N):
            acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, start + offs_n, kh, tok, stride_kt, stride_kh,
                                          stride_vt, stride_vh, stride_vd, qk_scale, q1, offs_d, False, False,
                                          PV_FP8)
        for start in range(o_full, q1, BLOCK_N):
            acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, start + offs_n, kh, tok, stride_kt, stride_kh,
                                          stride_vt, stride_vh, stride_vd, qk_scale, q1, offs_d, True, True,
                                          PV_FP8)
        out = acc / l_i[:, None]
        if FP8:
            out = out * tl.load(Scales + 2)
        tl.store(Out + tok[:, None] * stride_ot + head[:, None] * stride_oh + offs_d[None, :],
                 out.to(Out.dtype.element_ty), mask=q_in[:, None])


def tile_table(q_start, q_len, p_start, p_len, block_t: int, size: int | None = None,
               heavy_first: bool = False) -> np.ndarray:
    """The kernel's tiles as one int64 array of 5 parts: q0, q1, first own key, prefix start, prefix length.

    Each row's queries are cut into tiles of ``block_t`` tokens; ``size`` pads with empty tiles.
    ``heavy_first`` orders the tiles by the keys they walk, most first (stable): the GPU starts programs
    in grid order, so the last to start are then the shortest and the kernel's tail is short on long rows.

    >>> tile_table([0, 3], [3, 5], [0, 0], [0, 3], block_t=4).reshape(5, -1).tolist()
    [[0, 3, 7], [3, 7, 8], [0, 3, 3], [0, 0, 0], [0, 3, 3]]
    >>> tile_table([0, 3], [3, 5], [0, 0], [0, 3], block_t=4, heavy_first=True).reshape(5, -1)[0].tolist()
    [7, 3, 0]
    """
    q_start, q_len = np.asarray(q_start, np.int64), np.asarray(q_len, np.int64)
    per_row = -(-q_len // block_t)
    row = np.repeat(np.arange(len(q_len)), per_row)
    first = np.concatenate([[0], np.cumsum(per_row)[:-1]]).astype(np.int64)
    within = np.arange(int(per_row.sum()), dtype=np.int64) - np.repeat(first, per_row)
    q0 = q_start[row] + within * block_t
    q1 = np.minimum(q0 + block_t, q_start[row] + q_len[row])
    parts = [q0, q1, q_start[row], np.asarray(p_start, np.int64)[row], np.asarray(p_len, np.int64)[row]]
    if heavy_first:
        order = np.argsort(-(parts[4] + q1 - parts[2]), kind="stable")  # keys walked: prefix + own up to q1
        parts = [part[order] for part in parts]
    n = len(q0) if size is None else int(size)
    if n < len(q0):
        raise ValueError(f"{len(q0)} tiles do not fit in {n}")
    table = np.zeros((5, n), dtype=np.int64)
    for i, part in enumerate(parts):
        table[i, : len(part)] = part
    return table.reshape(-1)


def prefix_attention(q, k, v, tiles, scale: float, *, block_t: int, block_n: int = 32, num_warps: int = 4,
                     num_stages: int = 2):
    """Attention of packed rows over their prefix and own keys (see the module docstring).

    q (T, heads, D), k and v (T, kv_heads, D) with unit stride on D; ``tiles`` from :func:`tile_table`
    (on q's device) with the same ``block_t``. Returns (T, heads, D); tokens in no tile are left undefined
    (CUDA-graph padding: computed, never read).
    """
    return _launch(q, k, v, _plain_v_strides(q, k, v), None, tiles, scale, q.dtype, block_t, block_n, num_warps,
                   num_stages)


def prefix_attention_fp8(q, k, v, scales, tiles, scale: float, *, out_dtype, block_t: int, block_n: int = 32,
                         num_warps: int = 4, num_stages: int = 2):
    """:func:`prefix_attention` with float8 e4m3 q and k: ``q @ k^T`` on FP8 tensor cores, and ``p @ v`` too when
    v is e4m3.

    q (T, heads, D) and k (T, kv_heads, D) with unit stride on D. ``v``: e4m3 and *transposed*, (kv_heads, D, T)
    with unit stride on T, since Hopper's FP8 products take their second operand along the reduced dimension
    (here the keys); or (T, kv_heads, D) in bf16/fp16 with unit stride on D (``p @ v`` then stays in that type).
    ``scales`` (3 float32 on q's device): the dequantization scales of q, k and v (real = stored x scale; v's is
    1 when v is not e4m3). The output (T, heads, D) is ``out_dtype``.
    """
    import torch

    if scales.numel() != 3 or scales.dtype != torch.float32:
        raise ValueError("scales must hold 3 float32 values (q, k, v)")
    if v.dtype != torch.float8_e4m3fn:
        return _launch(q, k, v, _plain_v_strides(q, k, v), scales, tiles, scale, out_dtype, block_t, block_n,
                       num_warps, num_stages)
    _check_shapes(q, k, v.shape[0])
    if v.stride(-1) != 1 or v.shape[1] != q.shape[2] or v.shape[2] != k.shape[0]:
        raise ValueError(f"an e4m3 v must be (kv_heads, D, T) with unit stride on T, got {tuple(v.shape)}")
    return _launch(q, k, v, (v.stride(2), v.stride(0), v.stride(1)), scales, tiles, scale, out_dtype, block_t,
                   block_n, num_warps, num_stages)


def _plain_v_strides(q, k, v) -> tuple[int, int, int]:
    """The kernel's (token, head, dim) strides of a (T, kv_heads, D) v, after checking the shapes."""
    _check_shapes(q, k, v.shape[1])
    if v.stride(-1) != 1:
        raise ValueError("v needs unit stride on the head dimension")
    return v.stride(0), v.stride(1), 1


def _check_shapes(q, k, kv_heads: int) -> None:
    T, heads, dim = q.shape
    if heads % kv_heads or k.shape[1] != kv_heads or dim & (dim - 1) or dim < 16:
        raise ValueError(f"unsupported attention shape: {heads} heads, {kv_heads} kv heads, head size {dim}")
    for name, t in (("q", q), ("k", k)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} needs unit stride on the head dimension")


def _launch(q, k, v, v_strides, scales, tiles, scale, out_dtype, block_t, block_n, num_warps, num_stages):
    import torch

    T, heads, dim = q.shape
    kv_heads = k.shape[1]
    out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    n_tiles = tiles.numel() // 5
    if n_tiles == 0 or T == 0:
        return out
    stride_vt, stride_vh, stride_vd = v_strides
    _prefix_attention_kernel[(n_tiles, kv_heads)](
        q, k, v, out, tiles, tiles if scales is None else scales, n_tiles, q.stride(0), q.stride(1), k.stride(0),
        k.stride(1), stride_vt, stride_vh, stride_vd, out.stride(0), out.stride(1), float(scale) * LOG2E,
        G=heads // kv_heads, BLOCK_T=block_t, BLOCK_N=block_n, D=dim, FP8=scales is not None,
        PV_FP8=v.dtype == torch.float8_e4m3fn,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
