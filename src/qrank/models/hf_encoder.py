"""Shared plumbing for encoder models (BERT, XLM-R, ModernBERT…): tokenize once, batch by padded tokens.

pre: tokenize without padding → core: length-sorted batches padded per batch → post: caller's order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from ..engine.batching import plan_batches, restore_order
from ..errors import UnsupportedModel
from ..settings import EngineSettings
from .base import Encoded


def max_input_length(tokenizer, config: dict, wanted: int, st_max: int | None = None) -> int:
    """The usable input length: the smallest of what the user wants and what the model can take."""
    limits = [wanted]
    if st_max:
        limits.append(int(st_max))
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    pos = config.get("max_position_embeddings")
    if isinstance(pos, int) and pos > 0:
        # RoBERTa-style models reserve padding_idx + 1 positions
        offset = (
            (config.get("pad_token_id") or 0) + 1
            if config.get("model_type") in ("roberta", "xlm-roberta", "camembert")
            else 0
        )
        limits.append(pos - offset)
    return min(limits)


def check_quantization(quantization: str, device, name: str) -> str:
    """The encoder's quantization if it can run here: ``int8`` is a CPU path, ``fp8`` is for Qwen3 on GPUs.

    >>> check_quantization("none", "cuda", "m")
    'none'
    """
    if quantization == "fp8":
        raise UnsupportedModel(
            f"{name}: quantization 'fp8' is for Qwen3 models on GPUs; classic encoders take 'int8' (CPU) or 'none'"
        )
    if quantization == "int8" and str(device) != "cpu":
        raise UnsupportedModel(
            f"{name}: quantization 'int8' runs on the CPU only (torch dynamic int8 Linear); use device 'cpu' or 'none'"
        )
    return quantization


def _int8_spec(module) -> dict:
    """Which Linear layers go int8: all but each layer's feed-forward output and the head.

    Measured on the shared MiniLM cross-encoder: the feed-forward output (after GELU, with outlier
    activations) alone moved logits by up to 1.2, every other Linear by under 0.35; the head is tiny.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig

    def keep_float(name: str) -> bool:
        ffn_out = name.endswith("output.dense") and "attention" not in name
        return ffn_out or any(part in name for part in ("pooler", "classifier"))

    return {
        name: per_channel_dynamic_qconfig
        for name, mod in module.named_modules()
        if isinstance(mod, torch.nn.Linear) and not keep_float(name)
    }


def quantize_int8(module):
    """A copy of ``module`` with dynamic int8 Linear layers (CPU; see :func:`_int8_spec` for which).

    Activations use all 8 bits where the CPU multiplies with VNNI (:func:`full_range_int8`).
    """
    import types
    import warnings

    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notice: it still ships and works in this torch
        warnings.simplefilter("ignore")
        out = quantize_dynamic(module, _int8_spec(module), dtype=torch.qint8, inplace=False)
    if full_range_int8():
        for mod in out.modules():
            if isinstance(mod, DynamicLinear) and mod._packed_params.dtype == torch.qint8:
                mod.forward = types.MethodType(_full_range_forward, mod)
    return out


def _full_range_forward(self, x):
    import torch

    return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False).to(x.dtype)


@functools.cache
def full_range_int8() -> bool:
    """Whether int8 activations may use all 8 bits: only where the CPU has AVX512-VNNI.

    torch's dynamic Linear keeps activations to 7 bits (``reduce_range=True``) because without VNNI fbgemm adds
    u8 x s8 products in saturating 16-bit pairs; VNNI adds them in 32 bits. On the shared MiniLM embedder (400
    SciFact abstracts, 100 claims, 2 cores, 2026-12-05) 8 bits raised the mean cosine to fp32 from 0.9925 to
    0.9977 and the top-10 overlap from 0.89 to 0.94, at the same speed.

    >>> isinstance(full_range_int8(), bool)
    True
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: keep torch's safe default
        return False
    return "avx512_vnni" in flags


# Goes into the cache keys of int8 answers: a changed recipe must never mix its scores with cached older ones.
# the packed run size is part of the recipe: a dynamic activation scale is one per run (packed_encoder.CPU_RUN_TOKENS)
INT8_RECIPE = ("int8-v3: dynamic per-channel int8 Linear; packed feed-forward outputs bf16; heads float; "
               f"activations {8 if full_range_int8() else 7}-bit; packed CPU runs of at most 2048 tokens")


def quantization_info(quantization: str) -> dict:
    """What ``ModelInfo.extra`` says of a classic encoder's quantization: nothing when it runs in float, else
    ``{"quantization": {...}}`` shaped like the FP8 gate's entry (``method`` first), for ``/v1/models``, the serve
    banner and the cache keys (:func:`qrank.cache.quantization_fields`).

    >>> quantization_info("none")
    {}
    >>> quantization_info("int8")["quantization"]["method"]
    'int8'
    """
    if quantization in (None, "none"):
        return {}
    return {"quantization": {"method": quantization, "weights": "int8 per output channel",
                             "activations": "int8, one dynamic scale per run", "recipe": INT8_RECIPE}}


class BFloat16Linear:
    """A Linear run in bfloat16 (weights stored bf16, input rounded to bf16, output back to float32).

    For the packed path's feed-forward outputs under int8: their GELU outputs have outliers that a per-tensor
    int8 activation scale flattens, while bf16 keeps 8 bits of mantissa at any scale; with AVX512-BF16 the
    product is about 2x float32 (measured 80 vs 169 ms for 8,000 x 1536 x 384 on 2 cores).

    >>> import torch
    >>> lin = torch.nn.Linear(4, 2)
    >>> x = torch.randn(3, 4)
    >>> bool(torch.allclose(BFloat16Linear.wrap(lin)(x), lin(x), atol=0.05))
    True
    """

    @staticmethod
    def wrap(linear):
        import torch

        class _Bf16(torch.nn.Module):
            def __init__(self, lin):
                super().__init__()
                self.weight = torch.nn.Parameter(lin.weight.detach().to(torch.bfloat16), requires_grad=False)
                bias = None if lin.bias is None else lin.bias.detach().to(torch.bfloat16)
                self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)

            def forward(self, x):
                return torch.nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias).float()

        return _Bf16(linear)


def bf16_is_fast() -> bool:
    """Whether this CPU has native bf16 products (AVX512-BF16 / AMX); without them bf16 is slower than float."""
    import torch

    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe is not None and probe())


def quantize_padded(model, quantization: str):
    """The padded path's model with dynamic int8 Linear layers when asked (CPU), else unchanged."""
    return quantize_int8(model) if quantization == "int8" else model


def run_encoder_batches(
    tokenizer,
    features: dict,
    forward: Callable,
    engine: EngineSettings,
    device: str,
) -> list:
    """Pad ``features`` (a tokenizer output without padding) in length-sorted batches under the token
    budget, call ``forward(batch_tensors)`` on each, and return per-row outputs in the caller's order."""
    import torch

    ids = features["input_ids"]
    lengths = [len(x) for x in ids]
    batches = plan_batches(lengths, engine.max_batch_tokens, engine.max_batch_size)
    results = []
    keys = [k for k in features.keys() if k in ("input_ids", "attention_mask", "token_type_ids")]
    with torch.inference_mode():
        for idx in batches:
            sub = {k: [features[k][i] for i in idx] for k in keys}
            padded = tokenizer.pad(sub, padding=True, return_tensors="pt")
            padded = {k: v.to(device) for k, v in padded.items()}
            out = forward(padded)
            results.append(list(out.float().cpu()))
    return restore_order(batches, results, len(ids))


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int) -> dict:
    return tokenizer(
        [q for q, _ in pairs],
        [d for _, d in pairs],
        padding=False,
        truncation="longest_first",
        max_length=max_length,
    )


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> dict:
    return tokenizer(list(texts), padding=False, truncation=True, max_length=max_length)


def to_encoded(features: dict) -> list[Encoded]:
    """A tokenizer output (no padding) as :class:`~qrank.models.base.Encoded` items."""
    types = features.get("token_type_ids")
    ids = features["input_ids"]
    return [Encoded(tuple(x), tuple(types[i]) if types is not None else None) for i, x in enumerate(ids)]


def to_features(encoded: Sequence[Encoded]) -> dict:
    """Encoded items back as the tokenizer output :func:`run_encoder_batches` pads.

    >>> to_features([Encoded((1, 2), (0, 1))])
    {'input_ids': [[1, 2]], 'attention_mask': [[1, 1]], 'token_type_ids': [[0, 1]]}
    """
    features = {"input_ids": [list(e.ids) for e in encoded], "attention_mask": [[1] * len(e) for e in encoded]}
    if encoded and all(e.type_ids is not None for e in encoded):
        features["token_type_ids"] = [list(e.type_ids) for e in encoded]
    return features
