"""BERT and XLM-RoBERTa encoders without padding: the dense layers run on every input's tokens packed together.

A padded batch computes its longest input's length for every input; on SciFact abstracts that is 15-25%
more tokens in the matrix products and 25-45% more in attention. Here the projections, feed-forward
layers and LayerNorms see one ``(tokens, hidden)`` run of the real tokens only, and attention runs per
input: on the CPU one SDPA call per input (no mask needed), on CUDA one bidirectional FlashAttention
varlen call for the whole run (``torch.nn.attention.varlen``), per-input SDPA where that kernel is missing.
The math is ``transformers``' BERT / XLM-R layer op for op, so results equal the padded path to float32
rounding.

Two heads: :meth:`PackedEncoder.logits` (BERT pooler + classifier, or the RoBERTa classification head)
for cross-encoders, :meth:`PackedEncoder.pooled` (CLS / mean / last-token pooling of the last hidden
state) for sentence-transformers embedders. ModernBERT is packed by :mod:`.packed_modernbert`; other
encoders (DeBERTa, DistilBERT…) keep the padded path (:func:`packed_or_none` logs why).

``quantize_int8()`` swaps the Linear layers (q/k/v stacked included; not the feed-forward outputs nor the
head) for torch's dynamic int8 Linear: CPU only, opt-in (``ModelSettings.quantization="int8"``), not exact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from .packed_runs import _flat, single_thread, to_device

log = logging.getLogger(__name__)

BERT_TYPES = ("bert",)
ROBERTA_TYPES = ("roberta", "xlm-roberta")  # positions start at padding_idx + 1; one token type
POOLING = ("cls", "mean", "lasttoken")
_VARLEN: dict[str, bool] = {}


def _backbone(model):
    """(kind, the BertModel/XLMRobertaModel inside ``model``) or (None, None)."""
    cfg = getattr(model, "config", None)
    mtype = getattr(cfg, "model_type", None)
    if mtype in BERT_TYPES:
        return "bert", getattr(model, "bert", model)
    if mtype in ROBERTA_TYPES:
        return "roberta", getattr(model, "roberta", model)
    return None, None


def why_not(model, head: str = "classifier") -> str | None:
    """None when ``model`` is packed exactly, else the reason (for the fallback log line)."""
    cfg = getattr(model, "config", None)
    kind, base = _backbone(model)
    if kind is None:
        return f"model_type {getattr(cfg, 'model_type', None)!r} is not BERT or XLM-RoBERTa"
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return f"position_embedding_type {cfg.position_embedding_type!r}"
    if getattr(cfg, "hidden_act", None) not in ("gelu", "relu"):
        return f"hidden_act {getattr(cfg, 'hidden_act', None)!r}"
    if getattr(cfg, "is_decoder", False) or not hasattr(base, "encoder"):
        return "not a plain encoder"
    if head == "classifier":
        cls = getattr(model, "classifier", None)
        if kind == "bert" and (getattr(base, "pooler", None) is None or cls is None):
            return "no pooler/classifier"
        if kind == "roberta" and not (hasattr(cls, "dense") and hasattr(cls, "out_proj")):
            return "no RoBERTa classification head"
    return None


def supports(model, head: str = "classifier") -> bool:
    """Whether ``model`` is a BERT / XLM-R sequence classifier (or, ``head="hidden"``, encoder) packed exactly."""
    return why_not(model, head) is None


def varlen_attention():
    """Bidirectional FlashAttention varlen ``f(q, k, v, cu_q, cu_k, max_q, max_k, window_size=(-1, -1))``:
    ``torch.nn.attention.varlen.varlen_attn`` when this torch has it, else the aten op behind it, else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn
    except ImportError:
        import torch

    op = getattr(torch.ops.aten, "_flash_attention_forward", None)
    if op is None:
        return None

    def attend(q, k, v, cu_q, cu_k, max_q, max_k, window_size=(-1, -1)):
        window = {} if window_size == (-1, -1) else {"window_size_left": window_size[0],
                                                     "window_size_right": window_size[1]}
        return op(q, k, v, cu_q, cu_k, max_q, max_k, 0.0, False, False, **window)[0]

    return attend


def _varlen_works(device, dtype, heads: int, dim: int) -> bool:
    """Whether the varlen kernel runs here for this shape (asked once; the answer is logged and cached)."""
    import torch

    key = f"{device}/{dtype}/{heads}/{dim}"
    if key not in _VARLEN:
        fn = varlen_attention()
        ok = False
        if fn is not None and torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16):
            try:
                q = torch.randn(5, heads, dim, device=device, dtype=dtype)
                cu = torch.tensor([0, 2, 5], device=device, dtype=torch.int32)
                ok = bool(torch.isfinite(fn(q, q, q, cu, cu, 3, 3)).all())
            except (RuntimeError, NotImplementedError, TypeError) as exc:
                log.info("FlashAttention varlen does not run here (%s); attention runs per input", exc)
        _VARLEN[key] = ok
        what = "FlashAttention varlen" if ok else "SDPA per input"
        log.info("packed encoder attention on %s %s: %s", device, dtype, what)
    return _VARLEN[key]


# tokens per packed run on a CPU: 2,048 x 1,536 fp32 feed-forward activations are 12 MiB (measured on 2 cores,
# MiniLM-L6 cross-encoder, 100 SciFact pairs: 16,384-token runs 5.26 s, 4,096 5.00 s, 2,048 4.73 s)
CPU_RUN_TOKENS = 2048
def _eager_add_norm(y, residual, ln):
    return ln(y + residual)


def _add_norm(y, residual, weight, bias, eps: float):
    """``LayerNorm(y + residual)``: compiled, one kernel reads both and writes the normed sum."""
    import torch.nn.functional as F

    return F.layer_norm(y + residual, (y.shape[-1],), weight, bias, eps)


def balanced_parts(spans: list, n: int) -> list[list]:
    """``spans`` (``(i, (start, end))``) dealt into at most ``n`` parts of about equal attention cost (the
    length squared), longest first; each part keeps the spans' order.

    >>> balanced_parts([(0, (0, 4)), (1, (4, 6)), (2, (6, 8))], 2)
    [[(0, (0, 4))], [(1, (4, 6)), (2, (6, 8))]]
    """
    n = max(1, min(n, len(spans)))
    parts: list[list] = [[] for _ in range(n)]
    load = [0] * n
    for span in sorted(spans, key=lambda s: s[1][0] - s[1][1]):
        j = load.index(min(load))
        parts[j].append(span)
        load[j] += (span[1][1] - span[1][0]) ** 2
    return [sorted(p) for p in parts if p]


class PackedEncoder:
    """A BERT / XLM-R classifier or encoder run on packed inputs; holds each layer's stacked q/k/v Linear.

    >>> from transformers import AutoModelForSequenceClassification, AutoTokenizer
    >>> path = "../shared/models/scifact-minilm-ce"
    >>> model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    >>> enc = AutoTokenizer.from_pretrained(path)(["what is bm25?"] * 2, ["BM25 ranks documents.", "Cats purr."])
    >>> rows = PackedEncoder(model).run(enc["input_ids"], enc["token_type_ids"], 16384, PackedEncoder(model).logits)
    >>> len(rows), bool(rows[0][0] > rows[1][0])
    (2, True)
    """

    def __init__(self, model, head: str = "classifier") -> None:
        import torch

        reason = why_not(model, head)
        if reason is not None:
            raise ValueError(f"{type(model).__name__} cannot be packed: {reason}")
        self.model = model
        self.head = head
        self.kind, self.base = _backbone(model)
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.dim = cfg.hidden_size // self.heads
        self.act = torch.nn.functional.gelu if cfg.hidden_act == "gelu" else torch.nn.functional.relu
        self.offset = (cfg.pad_token_id + 1) if self.kind == "roberta" else 0
        with torch.no_grad():  # one matrix product for q, k and v instead of three (a copy of those weights)
            qkv = []
            for layer in self.base.encoder.layer:
                sa = layer.attention.self
                lin = torch.nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, device=sa.query.weight.device,
                                      dtype=sa.query.weight.dtype)
                lin.weight.copy_(torch.cat([m.weight for m in (sa.query, sa.key, sa.value)]))
                lin.bias.copy_(torch.cat([m.bias for m in (sa.query, sa.key, sa.value)]))
                qkv.append(lin)
        self.qkv = torch.nn.ModuleList(qkv)
        self.add_norm = _eager_add_norm

    def compile_norms(self, what: str, compiler: Callable | None = None) -> bool:
        """Fuse each residual add with the LayerNorm after it (one kernel instead of two) under ``torch.compile``.

        For CUDA half-precision runs (the CPU path stays op for op ``transformers``'). A check pass runs at
        once; if compiling fails here the eager pair stays, with a warning. ``compiler``: what compiles the
        fused function (``torch.compile``, dynamic token count); tests pass others. Returns whether it is on.
        """
        import torch

        from ..engine.config import compile_errors
        from ..engine.qwen3_forward import copy_function

        compiler = compiler or (lambda fn: torch.compile(fn, dynamic=True, fullgraph=True))
        cfg = self.model.config
        # a code object per kind of encoder: dynamo counts recompilations per code object (engine/fast.py)
        fused = compiler(copy_function(_add_norm, f"{cfg.hidden_size}_{self.model.dtype}".replace(".", "_")))
        self.add_norm = lambda y, residual, ln: fused(y, residual, ln.weight, ln.bias, ln.eps)
        try:
            with torch.inference_mode():
                ids = [[5] * 7, [6] * 3]
                self.run(ids, None, 64, self.pooled("cls") if self.head == "hidden" else self.logits)
        except compile_errors() as exc:
            log.warning("%s: fused add + LayerNorm off (torch.compile failed here: %s: %s)", what,
                        type(exc).__name__, str(exc)[:200])
            self.add_norm = _eager_add_norm
            return False
        log.info("%s: residual add + LayerNorm fused by torch.compile", what)
        return True

    def quantize_int8(self) -> PackedEncoder:
        """Dynamic int8 Linear layers (CPU): weights int8 per row, activations quantized per call."""
        import torch

        from .hf_encoder import BFloat16Linear, bf16_is_fast, quantize_int8

        holder = quantize_int8(torch.nn.ModuleDict({"model": self.model, "qkv": self.qkv}))
        self.model, self.qkv = holder["model"], holder["qkv"]
        self.kind, self.base = _backbone(self.model)
        if bf16_is_fast():  # the float feed-forward outputs in bf16: a third of the products, 2x faster
            for layer in self.base.encoder.layer:
                layer.output.dense = BFloat16Linear.wrap(layer.output.dense)
        return self

    def _attention(self, q, k, v, bounds: list[int], cu, cls_only: bool = False):
        """Attention per input over its own tokens; ``cls_only``: ``q`` holds only each input's first row."""
        import torch
        import torch.nn.functional as F

        if cu is not None:  # one FlashAttention varlen call over the whole run, no mask, no padding
            longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
            if cls_only:
                cu_q = torch.arange(len(bounds), dtype=torch.int32, device=q.device)
                return varlen_attention()(q, k, v, cu_q, cu, 1, longest)
            return varlen_attention()(q, k, v, cu, cu, longest, longest)
        ctx = torch.empty_like(q)
        spans = list(enumerate(zip(bounds[:-1], bounds[1:])))
        inference = torch.is_inference_mode_enabled()

        def attend(part: list) -> None:
            with torch.inference_mode(inference):  # a mode is per thread: the workers take the caller's
                for i, (a, b) in part:
                    qa = q[i:i + 1] if cls_only else q[a:b]
                    # 4-D (1, heads, length, dim) views: the CPU's fused attention kernel takes them as they are
                    qa, ka, va = (t.transpose(0, 1)[None] for t in (qa, k[a:b], v[a:b]))
                    out = F.scaled_dot_product_attention(qa, ka, va)[0].transpose(0, 1)
                    if cls_only:
                        ctx[i:i + 1] = out
                    else:
                        ctx[a:b] = out

        # each input's attention on one thread, the inputs shared among the cores: the kernels release the GIL,
        # and one input's result does not depend on which thread ran it (measured on 2 cores, 100 SciFact
        # pairs: 5.3 s -> 4.7 s, scores bit-identical; bench/logs/history-cpu.md)
        parts = balanced_parts(spans, torch.get_num_threads())
        with single_thread():
            if len(parts) == 1:
                attend(parts[0])
            else:
                with ThreadPoolExecutor(len(parts), thread_name_prefix="qrank-attention") as pool:
                    list(pool.map(attend, parts))
        return ctx

    def hidden(self, input_ids, token_type_ids, lengths: list[int], cls_only: bool = False):
        """Last hidden states ``(tokens, hidden)`` of inputs concatenated in ``input_ids`` (1-D), and the bounds.

        ``cls_only``: the last layer's attention output and feed-forward run on each input's first token only
        (all a CLS head reads; keys and values still see every token), so ``(inputs, hidden)`` comes back.
        """
        import torch

        emb = self.base.embeddings
        hidden = self.model.config.hidden_size
        device = input_ids.device
        positions = to_device(_positions(lengths, self.offset), device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = emb.word_embeddings(input_ids) + emb.token_type_embeddings(token_type_ids)
        h = self.add_norm(h, emb.position_embeddings(positions), emb.LayerNorm)
        bounds = [0]
        for n in lengths:
            bounds.append(bounds[-1] + n)
        cu = None  # cumulative lengths on the device, copied once for all layers
        if device.type == "cuda" and _varlen_works(device, h.dtype, self.heads, self.dim):
            cu = to_device(torch.tensor(bounds, dtype=torch.int32), device)
        last = len(self.qkv) - 1
        for i, (layer, qkv) in enumerate(zip(self.base.encoder.layer, self.qkv)):
            q, k, v = qkv(h).view(-1, 3 * self.heads, self.dim).split(self.heads, dim=1)
            first_only = cls_only and i == last
            if first_only:  # a sixth of the work of a 6-layer model on SciFact pairs
                starts = to_device(torch.tensor(bounds[:-1]), device)
                q, h = q[starts], h[starts]
            ctx = self._attention(q, k, v, bounds, cu, first_only).reshape(-1, hidden)
            out = layer.attention.output
            h = self.add_norm(out.dense(ctx), h, out.LayerNorm)
            ffn = layer.output
            h = self.add_norm(ffn.dense(self.act(layer.intermediate.dense(h))), h, ffn.LayerNorm)
        return h, bounds

    def logits(self, input_ids, token_type_ids, lengths: list[int]):
        """Logits (n, num_labels) of the sequence classifier."""
        import torch

        cls, _ = self.hidden(input_ids, token_type_ids, lengths, cls_only=True)
        head = self.model.classifier
        if self.kind == "roberta":  # XLMRobertaClassificationHead: dense, tanh, out_proj on <s>
            return head.out_proj(torch.tanh(head.dense(cls)))
        return head(torch.tanh(self.base.pooler.dense(cls)))

    def pooled(self, mode: str) -> Callable:
        """A forward giving sentence-transformers pooling ``mode`` (one of :data:`POOLING`) per input."""
        import torch

        if mode not in POOLING:
            raise ValueError(f"pooling {mode!r} is not packed")

        def forward(input_ids, token_type_ids, lengths):
            if mode == "cls":
                return self.hidden(input_ids, token_type_ids, lengths, cls_only=True)[0]
            h, bounds = self.hidden(input_ids, token_type_ids, lengths)
            if mode == "lasttoken":
                return h[to_device(torch.tensor(bounds[1:]), h.device) - 1]
            return segment_mean(h, bounds)

        return forward

    @property
    def device(self):
        """Where the model's weights are (the CPU for a model without parameters)."""
        import torch

        return next((p.device for p in self.model.parameters()), torch.device("cpu"))

    def run_tokens(self, max_tokens: int) -> int:
        """Tokens of one packed run for a ``max_tokens`` (padded) batch budget, on this model's device.

        >>> import torch
        >>> enc = PackedEncoder.__new__(PackedEncoder); enc.model = torch.nn.Linear(2, 2)
        >>> enc.run_tokens(16384)
        2048
        """
        if self.device.type == "cuda":  # no padding and no per-input loop: bigger runs only keep the GPU busier
            return max_tokens * 4
        # a run's activations stay in the CPU's caches: the bias, GELU and LayerNorm passes are memory-bound
        return min(max_tokens, CPU_RUN_TOKENS)

    def submit(self, ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None, forward: Callable):
        """``forward`` on all of ``ids`` as ONE packed run; returns its rows on the device without waiting.

        On CUDA the token ids travel from pinned memory and nothing in the forward reads a device value
        back, so the call returns once the kernels are queued: the caller tokenizes the next chunk meanwhile.
        """
        used = sum(len(x) for x in ids)
        flat = to_device(_flat(ids, used), self.device)
        flat_types = None if types is None else to_device(_flat(types, used), self.device)
        return forward(flat, flat_types, [len(x) for x in ids])

    def run(self, ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None, max_tokens: int,
            forward: Callable) -> list:
        """``forward`` per chunk of at most ``run_tokens(max_tokens)`` tokens (one input may exceed it alone);
        rows in order, on the CPU, after one synchronisation."""
        import torch

        max_tokens = self.run_tokens(max_tokens)
        parts = []
        start = 0
        with torch.inference_mode():
            while start < len(ids):
                end, used = start, 0
                while end < len(ids) and (end == start or used + len(ids[end]) <= max_tokens):
                    used += len(ids[end])
                    end += 1
                parts.append(self.submit(ids[start:end], None if types is None else types[start:end], forward))
                start = end
            return list(torch.cat(parts).float().cpu()) if parts else []


def _positions(lengths: Sequence[int], offset: int):
    """Each input's positions ``offset, offset + 1, ...`` one after another, as one int64 CPU tensor.

    >>> _positions([2, 3], 2).tolist()
    [2, 3, 2, 3, 4]
    """
    import numpy as np
    import torch

    if not lengths:
        return torch.zeros(0, dtype=torch.int64)
    return torch.from_numpy(np.concatenate([np.arange(offset, offset + n, dtype=np.int64) for n in lengths]))


def segment_mean(h, bounds: list[int]):
    """The mean of each input's rows ``h[a:b]`` (``bounds`` as :meth:`PackedEncoder.hidden` gives them).

    On the CPU one sum per input, in ``h``'s dtype, like sentence-transformers' (sum of masked rows) / count;
    on a GPU one float32 scatter-add for all inputs (a kernel per input would be thousands of launches).

    >>> import torch
    >>> segment_mean(torch.tensor([[1.0], [3.0], [5.0]]), [0, 2, 3]).flatten().tolist()
    [2.0, 5.0]
    """
    import torch

    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    if h.device.type != "cuda":
        return torch.stack([h[a:a + n].sum(0) / n for a, n in zip(bounds, lengths)])
    seg = to_device(torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)), h.device)
    sums = torch.zeros(len(lengths), h.shape[-1], device=h.device, dtype=torch.float32).index_add_(0, seg, h.float())
    counts = to_device(torch.tensor(lengths, dtype=torch.float32), h.device)
    return (sums / counts[:, None]).to(h.dtype)


def packed_or_none(model, head: str, engine: str, what: str, quantization: str = "none", compile: str = "auto"):
    """The packed path for ``model`` if it applies (logs why not otherwise), int8-quantized when asked;
    ``compile`` ('auto' = on for CUDA half precision, 'on', 'off'): :meth:`PackedEncoder.compile_norms`."""
    if engine == "reference":
        return None
    from .packed_modernbert import PackedModernBert, why_not_modernbert

    modern = getattr(model.config, "model_type", None) == "modernbert"
    reason = why_not_modernbert(model, head) if modern else why_not(model, head)
    if modern and quantization == "int8":
        reason = "int8 is measured for BERT / XLM-R only"
    if reason is not None:
        log.info("%s: %s; using the padded transformers path", what, reason)
        return None
    packed = PackedModernBert(model, head) if modern else PackedEncoder(model, head)
    if quantization == "int8":
        packed.quantize_int8()
    import torch

    half = model.dtype in (torch.float16, torch.bfloat16) and packed.device.type == "cuda"
    if not modern and (compile == "on" or (compile == "auto" and half)):
        packed.compile_norms(what)
    return packed


# the old name, kept for callers of the BERT-only version
PackedBert = PackedEncoder
