"""Independent attention references for the engine's tests (no qrank inside).

``varlen_reference`` is FlashAttention varlen's semantics written row by row with PyTorch's own
``scaled_dot_product_attention`` and an explicit mask: the stand-in for the CUDA-only kernel on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def varlen_reference(q, k, v, cu_q, cu_k, max_q, max_k, scale):
    """Bottom-right causal attention of each row's queries over its keys (GQA); signature of
    ``qrank.engine.attention._flash_varlen``. Query tokens outside every row are left as zeros."""
    cu_q, cu_k = [int(x) for x in cu_q], [int(x) for x in cu_k]
    out = torch.zeros_like(q)
    heads, kv_heads = q.shape[1], k.shape[1]
    for r in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[r], cu_q[r + 1], cu_k[r], cu_k[r + 1]
        if q1 == q0:
            continue
        nq, nk = q1 - q0, k1 - k0
        mask = torch.ones(nq, nk, dtype=torch.bool, device=q.device).tril(diagonal=nk - nq)
        o = F.scaled_dot_product_attention(
            q[q0:q1].transpose(0, 1), k[k0:k1].transpose(0, 1), v[k0:k1].transpose(0, 1),
            attn_mask=mask, scale=scale, enable_gqa=kv_heads != heads,
        )
        out[q0:q1] = o.transpose(0, 1)
    return out
