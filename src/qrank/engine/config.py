"""What the fast engine decided at load: one frozen :class:`EngineConfig`, and the rules that make it.

Every choice (attention kernel, ``torch.compile``, CUDA graphs, the first chunk's size) and every fallback
is made here or in :meth:`qrank.engine.fast.FastEngine.__init__`'s load-time check, never at a later pass:
what the config says is what runs, and a failure after load is an error, not a silent switch.

Fallback chains (attention and long-row attention alike): ``triton`` -> ``varlen`` -> ``sdpa`` and
``sdpa-cudnn`` -> ``sdpa`` (a kind whose probe fails on this device, dtype and head shape is replaced by the
next); ``compile`` and ``cuda_graphs`` -> off when a load-time check pass fails. Each fallback is recorded with
its reason in :attr:`EngineConfig.fallbacks` and logged in the engine's one load line.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

# matrix-product FLOPs per token below which a model counts as small (Qwen3 0.6B: ~0.9e9, 4B: ~7e9, 8B: ~14e9).
# Measured on an H200 (BENCHMARKS.md): graphs made the 0.6B shape 1.6x faster (its GPU waited on kernel
# launches) but the 8B shape 7% slower (compute-bound; a static shape pads a pass by up to 12.5%). A small
# model also gains from a small first chunk (the GPU starts sooner); a big one loses more to the smaller
# passes than the tokenizing of a full first chunk costs.
SMALL_MODEL_FLOPS = 3e9
# a small model's first chunk: 1/8 of a pass (16384 -> 2048 tokens, ~20 reranker pairs: the GPU starts after
# ~1/8 of the tokenizing), never under 256 tokens (below that a pass is all launch overhead)
FIRST_CHUNK_FRACTION = 8
MIN_FIRST_CHUNK = 256

_NEXT_KIND = {"triton": "varlen", "varlen": "sdpa", "sdpa-cudnn": "sdpa"}


@dataclass(frozen=True)
class EngineConfig:
    """The fast engine's resolved choices (``engine.config``); :meth:`describe` is its plain-dict form.

    >>> c = EngineConfig(attention="sdpa", compile=False, cuda_graphs=False, first_chunk_tokens=2048,
    ...                  max_batch_tokens=16384, max_batch_size=256, prefix_sharing=True, triton_tiles="",
    ...                  small_model=True, flops_per_token=9e8, device="cpu", dtype="float32")
    >>> c.describe()["attention"], c.summary().split()[:3]
    ('sdpa', ['attention=sdpa', 'compile=off', 'cuda_graphs=off'])
    """

    attention: str  # 'triton' | 'varlen' | 'sdpa' | 'sdpa-cudnn'
    compile: bool  # the layer halves run under torch.compile
    cuda_graphs: bool  # passes replay as CUDA graphs (triton/varlen on CUDA only)
    first_chunk_tokens: int  # computed tokens of the first chunk a request is cut into (engine/pipelining.py)
    max_batch_tokens: int  # computed tokens per pass
    max_batch_size: int  # sequences per pass
    prefix_sharing: bool
    triton_tiles: str  # the triton kernel's tile shapes and when each is used ('' for other kinds)
    small_model: bool  # under SMALL_MODEL_FLOPS per token
    flops_per_token: float
    device: str
    dtype: str
    fallbacks: tuple[str, ...] = ()  # 'what: asked -> used (why)', one per fallback taken at load
    # the attention kind of passes with long rows (attention.LONG_ROW_KEYS keys or more); '' = ``attention``
    long_row_attention: str = ""
    # attention's products in FP8 (an FP8 model whose quantizer asked for it): 'all', 'qk' (q k^T only) or ''
    fp8_attention: str = ""

    def describe(self) -> dict:
        """A JSON-ready dict (``ModelInfo.extra["engine"]``, ``qrank models -v``, ``/v1/models``)."""
        return {"engine": "fast", **asdict(self), "fallbacks": list(self.fallbacks)}

    def summary(self) -> str:
        """One log line."""
        onoff = lambda b: "on" if b else "off"  # noqa: E731
        text = (f"attention={self.attention} compile={onoff(self.compile)} cuda_graphs={onoff(self.cuda_graphs)} "
                f"first_chunk_tokens={self.first_chunk_tokens} max_batch_tokens={self.max_batch_tokens} "
                f"max_batch_size={self.max_batch_size} prefix_sharing={onoff(self.prefix_sharing)} "
                f"small_model={self.small_model} device={self.device} dtype={self.dtype}"
                + (f" triton_tiles=[{self.triton_tiles}]" if self.triton_tiles else "")
                + (f" long_row_attention={self.long_row_attention}" if self.long_row_attention else "")
                + (f" fp8_attention={self.fp8_attention}" if self.fp8_attention else ""))
        return text + (f"; fallbacks: {'; '.join(self.fallbacks)}" if self.fallbacks else "")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def resolve_attention(asked: str, on_cuda: bool, half: bool, works, *,
                      name: str = "attention") -> tuple[str, list[str]]:
    """The attention kind to run and the fallbacks taken: ``works(kind) -> (ok, reason)`` probes a kind;
    ``name``: the setting the fallbacks are reported under.

    'auto' means triton (then varlen) on CUDA in fp16/bf16, where they were measured fastest, else sdpa.

    >>> resolve_attention("triton", False, False, lambda k: (False, "needs CUDA"))
    ('sdpa', ['attention: triton -> varlen (needs CUDA)', 'attention: varlen -> sdpa (needs CUDA)'])
    >>> resolve_attention("sdpa-cudnn", True, True, lambda k: (False, "no cuDNN"), name="long_row_attention")
    ('sdpa', ['long_row_attention: sdpa-cudnn -> sdpa (no cuDNN)'])
    """
    kind = "triton" if asked == "auto" and on_cuda and half else ("sdpa" if asked == "auto" else asked)
    fallbacks = []
    while kind != "sdpa":
        ok, reason = works(kind)
        if ok:
            break
        fallbacks.append(f"{name}: {kind} -> {_NEXT_KIND[kind]} ({reason})")
        kind = _NEXT_KIND[kind]
    return kind, fallbacks


def graphs_by_default(small: bool, fp8: bool) -> bool:
    """Whether ``cuda_graphs='auto'`` replays passes as CUDA graphs: for small models and for FP8 stacks.

    An FP8 stack is launch-bound where its bf16 twin is not: its products run at about twice the rate, and
    each adds a quantization kernel. Measured on an H100 (bench/logs/device_2026-12-07_h100.md, 100 documents
    of 50-450 tokens, graphs vs none in the same run): the 8B FP8 went from 1.44x to 1.51x bf16 (1.40x to 1.56x
    in a second run), the 4B from 1.23x to 1.57x (1.17x to 1.62x); on 20 documents of 2,000-4,000 tokens
    they cost 0-3% (4B: 708 vs 687 ms, then 699 vs 702 ms), and they lowered the peak memory (8B: 10.6 to
    9.0 GiB).

    >>> graphs_by_default(small=True, fp8=False), graphs_by_default(False, True), graphs_by_default(False, False)
    (True, True, False)
    """
    return small or fp8


def first_chunk_tokens(small: bool, max_batch_tokens: int) -> int:
    """Small models start the GPU after a small first chunk; big ones take a full pass (see SMALL_MODEL_FLOPS).

    >>> first_chunk_tokens(True, 16384), first_chunk_tokens(False, 16384), first_chunk_tokens(True, 100)
    (2048, 16384, 100)
    """
    if not small:
        return max_batch_tokens
    return min(max(max_batch_tokens // FIRST_CHUNK_FRACTION, MIN_FIRST_CHUNK), max_batch_tokens)


def compile_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "compilation does not work here" (not a bug in the inputs or the kernels): what the
    load-time checks of the fast engine and of the packed encoders turn into a fallback."""
    from torch._dynamo.exc import TorchDynamoException

    errors: list[type[BaseException]] = [TorchDynamoException]
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:  # older torch: dynamo wraps inductor failures in BackendCompilerFailed
        log.debug("torch._inductor.exc.InductorError not available")
    return tuple(errors)
