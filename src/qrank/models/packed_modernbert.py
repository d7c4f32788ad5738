"""ModernBERT without padding: rotary positions per input, GeGLU, alternating local (sliding window) and
global attention, on every input's tokens packed together.

Op for op ``transformers``' ModernBERT (pre-norm layers, the first without its attention norm, a final
norm; the classifier pools CLS or the mean of the sequence, then its head and the classifier). Attention:
on the CPU one SDPA call per input (a band mask on the local layers), on CUDA one FlashAttention varlen
call per layer with ``window_size=(w, w)`` on the local layers (``|i - j| <= w``, the transformers mask).
"""

from __future__ import annotations

from .packed_encoder import (
    PackedEncoder,
    _positions,
    _varlen_works,
    segment_mean,
    varlen_attention,
)
from .packed_runs import single_thread, to_device


def why_not_modernbert(model, head: str) -> str | None:
    cfg = model.config
    if getattr(cfg, "model_type", None) != "modernbert":
        return "not ModernBERT"
    if head == "classifier" and getattr(cfg, "classifier_pooling", "cls") not in ("cls", "mean"):
        return f"classifier_pooling {cfg.classifier_pooling!r}"
    return None


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class PackedModernBert(PackedEncoder):
    """A ModernBERT classifier or encoder on packed inputs (same ``run`` / ``logits`` / ``pooled`` as BERT's).

    Used like :class:`PackedEncoder` (``run(ids, None, max_tokens, packed.logits)``); tested against
    sentence-transformers on random ModernBERT weights in tests/numerics/test_packed_encoders.py.
    """

    def __init__(self, model, head: str = "classifier") -> None:
        import torch

        reason = why_not_modernbert(model, head)
        if reason is not None:
            raise ValueError(f"{type(model).__name__} cannot be packed: {reason}")
        self.model, self.head, self.kind = model, head, "modernbert"
        self.base = getattr(model, "model", model)
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.dim = cfg.hidden_size // self.heads
        self.window = cfg.sliding_window  # half window: |i - j| <= window on "sliding_attention" layers
        self.qkv = torch.nn.ModuleList(layer.attn.Wqkv for layer in self.base.layers)

    def quantize_int8(self):
        raise ValueError("int8 is not offered for ModernBERT (not measured)")

    def _rotary(self, positions, layer_type: str, dtype):
        import torch

        rot = self.base.rotary_emb
        inv_freq = getattr(rot, f"{layer_type}_inv_freq")
        scaling = getattr(rot, f"{layer_type}_attention_scaling")
        freqs = positions[:, None].float() * inv_freq.to(device=positions.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * scaling).to(dtype)[:, None], (emb.sin() * scaling).to(dtype)[:, None]

    def _attend(self, q, k, v, bounds, cu, local: bool):
        import torch
        import torch.nn.functional as F

        w = self.window if local else -1
        if cu is not None:
            longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
            return varlen_attention()(q, k, v, cu, cu, longest, longest, window_size=(w, w))
        ctx = torch.empty_like(q)
        with single_thread():  # many small kernels: see packed_runs.single_thread
            for a, b in zip(bounds[:-1], bounds[1:]):
                mask = None
                if local:
                    idx = torch.arange(b - a, device=q.device)
                    mask = (idx[:, None] - idx[None, :]).abs() <= w
                qa, ka, va = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))
                ctx[a:b] = F.scaled_dot_product_attention(qa, ka, va, attn_mask=mask)[0].transpose(0, 1)
        return ctx

    def hidden(self, input_ids, token_type_ids, lengths: list[int]):
        import torch

        base, cfg = self.base, self.model.config
        device = input_ids.device
        h = base.embeddings.norm(base.embeddings.tok_embeddings(input_ids))
        positions = to_device(_positions(lengths, 0), device)
        rope = {t: self._rotary(positions, t, h.dtype) for t in set(cfg.layer_types)}
        bounds = [0]
        for n in lengths:
            bounds.append(bounds[-1] + n)
        cu = None
        if device.type == "cuda" and _varlen_works(device, h.dtype, self.heads, self.dim):
            cu = to_device(torch.tensor(bounds, dtype=torch.int32), device)
        for layer, layer_type in zip(base.layers, cfg.layer_types):
            x = layer.attn_norm(h)
            q, k, v = layer.attn.Wqkv(x).view(-1, 3, self.heads, self.dim).unbind(1)
            cos, sin = rope[layer_type]
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            ctx = self._attend(q, k, v, bounds, cu, layer_type == "sliding_attention")
            h = h + layer.attn.Wo(ctx.reshape(-1, cfg.hidden_size))
            up, gate = layer.mlp.Wi(layer.mlp_norm(h)).chunk(2, dim=-1)
            h = h + layer.mlp.Wo(layer.mlp.act(up) * gate)
        return base.final_norm(h), bounds

    def logits(self, input_ids, token_type_ids, lengths: list[int]):
        import torch

        h, bounds = self.hidden(input_ids, token_type_ids, lengths)
        if self.model.config.classifier_pooling == "cls":
            pooled = h[to_device(torch.tensor(bounds[:-1]), h.device)]
        else:
            pooled = segment_mean(h, bounds)
        return self.model.classifier(self.model.head(pooled))
