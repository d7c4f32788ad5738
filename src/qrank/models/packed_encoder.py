"""BERT cross-encoders without padding: the dense layers run on every pair's tokens packed together.

A padded batch computes its longest pair's length for every pair; on SciFact abstracts that is 15-25%
more tokens in the matrix products and 25-45% more in attention. Here the projections, feed-forward
layers and LayerNorms see one ``(tokens, hidden)`` run of the real tokens only, and attention runs per
pair (no mask needed). The math is ``transformers``' BERT layer op for op, so scores equal the padded
path to float32 rounding.

Only plain BERT sequence classifiers qualify (:func:`supports`); others keep the padded path.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def supports(model) -> bool:
    """Whether ``model`` is a BERT sequence classifier this module reproduces exactly."""
    cfg = getattr(model, "config", None)
    bert = getattr(model, "bert", None)
    return (
        cfg is not None
        and bert is not None
        and getattr(cfg, "model_type", None) == "bert"
        and getattr(cfg, "position_embedding_type", "absolute") == "absolute"
        and getattr(cfg, "hidden_act", None) in ("gelu", "relu")
        and not getattr(cfg, "is_decoder", False)
        and getattr(bert, "pooler", None) is not None
        and hasattr(model, "classifier")
    )


class PackedBert:
    """A BERT sequence classifier run on packed pairs; holds each layer's stacked q/k/v weights.

    >>> from transformers import AutoModelForSequenceClassification, AutoTokenizer
    >>> path = "../shared/models/scifact-minilm-ce"
    >>> model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    >>> features = AutoTokenizer.from_pretrained(path)(["what is bm25?"] * 2, ["BM25 ranks documents.", "Cats purr."])
    >>> logits = PackedBert(model).scores(features, max_tokens=16384)
    >>> len(logits), bool(logits[0] > logits[1])
    (2, True)
    """

    def __init__(self, model) -> None:
        import torch

        if not supports(model):
            raise ValueError(f"{type(model).__name__} is not a plain BERT sequence classifier")
        self.model = model
        with torch.no_grad():  # one matrix product for q, k and v instead of three (a small copy)
            self.qkv = [
                (torch.cat([m.weight for m in (sa.query, sa.key, sa.value)]),
                 torch.cat([m.bias for m in (sa.query, sa.key, sa.value)]))
                for sa in (layer.attention.self for layer in model.bert.encoder.layer)
            ]

    def logits(self, input_ids, token_type_ids, lengths: list[int]):
        """Logits (n, num_labels) for ``n`` pairs whose tokens are concatenated in ``input_ids`` (1-D)."""
        import torch
        import torch.nn.functional as F

        model = self.model
        bert, cfg = model.bert, model.config
        emb = bert.embeddings
        positions = torch.cat([torch.arange(n) for n in lengths]).to(input_ids.device)
        h = emb.word_embeddings(input_ids) + emb.token_type_embeddings(token_type_ids)
        h = emb.LayerNorm(h + emb.position_embeddings(positions))
        heads = cfg.num_attention_heads
        dim = cfg.hidden_size // heads
        act = F.gelu if cfg.hidden_act == "gelu" else F.relu
        bounds = [0]
        for n in lengths:
            bounds.append(bounds[-1] + n)
        for layer, (w_qkv, b_qkv) in zip(bert.encoder.layer, self.qkv):
            q, k, v = F.linear(h, w_qkv, b_qkv).view(-1, 3 * heads, dim).split(heads, dim=1)
            ctx = torch.empty_like(h).view(-1, heads, dim)
            for a, b in zip(bounds[:-1], bounds[1:]):
                # 4-D (1, heads, length, dim) views: the CPU's fused attention kernel takes them as they are
                qa, ka, va = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))
                ctx[a:b] = F.scaled_dot_product_attention(qa, ka, va)[0].transpose(0, 1)
            out = layer.attention.output
            h = out.LayerNorm(out.dense(ctx.view(-1, cfg.hidden_size)) + h)
            ffn = layer.output
            h = ffn.LayerNorm(ffn.dense(act(layer.intermediate.dense(h))) + h)
        cls = h[torch.as_tensor(bounds[:-1], device=h.device)]
        return model.classifier(torch.tanh(bert.pooler.dense(cls)))

    def scores(self, features: dict, max_tokens: int) -> list:
        """First logit per pair for tokenizer ``features`` (unpadded), in chunks of at most ``max_tokens`` tokens."""
        import torch

        ids = features["input_ids"]
        types = features.get("token_type_ids") or [[0] * len(x) for x in ids]
        device = self.model.device
        out = []
        start = 0
        with torch.inference_mode():
            while start < len(ids):
                end, used = start, 0
                while end < len(ids) and (end == start or used + len(ids[end]) <= max_tokens):
                    used += len(ids[end])
                    end += 1
                flat_ids = torch.tensor([t for x in ids[start:end] for t in x], dtype=torch.long, device=device)
                flat_types = torch.tensor([t for x in types[start:end] for t in x], dtype=torch.long, device=device)
                logits = self.logits(flat_ids, flat_types, [len(x) for x in ids[start:end]])
                out.extend(logits[:, 0].float().cpu())
                start = end
        return out
