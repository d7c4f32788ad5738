"""The fast engine: packed, prefix-shared forward passes that return only what a score needs.

Same contract as :class:`~qrank.engine.reference.ReferenceEngine` — ``last_hidden(sequences)`` gives
each sequence's final-normed last hidden state, float32, on the CPU, in the caller's order — but:

1. sequences that share a token prefix (a query's template + instruction + query) are grouped
   (:mod:`qrank.engine.prefix`) and the prefix is computed once per pass; members attend to its keys;
2. passes are packed without padding under ``max_batch_tokens`` *computed* tokens
   (:mod:`qrank.engine.packing`), so memory is bounded for any mix and big requests split;
3. attention runs on the packed rows (:mod:`qrank.engine.attention`), everything else on the flat
   token run (:mod:`qrank.engine.qwen3_forward`), the last layer only for the returned rows;
4. on CUDA the element-wise work of each layer half is fused by ``torch.compile`` (dynamic shapes,
   so one compilation serves every pass size).

It runs on the CPU as well (fp32, SDPA attention), which is how CI proves its numerics.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from ..errors import InvalidInput
from .attention import ATTENTION_KINDS, TritonAttention, make_attention, triton_works, varlen_works
from .graphs import GraphCaptureError, GraphRunner
from .packing import build_layout, plan_passes
from .prefix import PrefixGroup, find_prefix_groups
from .qwen3_forward import Qwen3Stack, attn_inputs, attn_output_mlp

log = logging.getLogger(__name__)

_COMPILED: dict[str, tuple] = {}
# matrix-product FLOPs per token below which a model counts as small (Qwen3 0.6B: ~0.9e9, 4B: ~7e9, 8B: ~14e9)
SMALL_MODEL_FLOPS = 3e9


def compiled_segments():
    """The two layer halves under ``torch.compile`` (built once per process, shared by engines)."""
    if "segments" not in _COMPILED:
        import torch

        _COMPILED["segments"] = (
            torch.compile(attn_inputs, dynamic=True, fullgraph=True),
            torch.compile(attn_output_mlp, dynamic=True, fullgraph=True),
        )
    return _COMPILED["segments"]


class FastEngine:
    """Packed, prefix-sharing engine for Qwen3 decoder bodies (rerankers and embedders).

    >>> # engine = FastEngine(model.model, pad_id=151643, max_batch_tokens=16384, max_batch_size=256,
    >>> #                     prefix_sharing=True)
    >>> # engine.last_hidden([[1, 2, 3], [1, 2, 4]]).shape -> (2, hidden_size)

    ``attention``: 'auto' (on CUDA in fp16/bf16 qrank's Triton kernel, or FlashAttention varlen where
    Triton is missing; bucketed SDPA elsewhere), 'triton', 'varlen', 'sdpa' or 'sdpa-cudnn'.
    ``compile``: 'auto' (on CUDA), 'on' or 'off'. ``cuda_graphs``: 'on' replays triton/varlen passes as
    CUDA graphs (:mod:`qrank.engine.graphs`), 'off' launches them, 'auto' replays them for small models
    only (``SMALL_MODEL_FLOPS``).
    ``fuse_projections`` stacks q/k/v and gate/up weights (a copy: measured no faster, off by default).
    ``max_batch_tokens`` counts computed tokens (a shared prefix once per pass), not padded ones.
    """

    name = "fast"

    def __init__(
        self,
        body,
        *,
        pad_id: int,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 256,
        prefix_sharing: bool = True,
        attention: str = "auto",
        compile: str = "auto",
        cuda_graphs: str = "auto",
        fuse_projections: bool = False,
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be >= 1")
        self.stack = Qwen3Stack(body, fuse_projections=fuse_projections)
        self.body = body
        self.pad_id = int(pad_id)  # kept for the shared contract; packing never pads
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_batch_size = int(max_batch_size)
        self.prefix_sharing = bool(prefix_sharing)
        on_cuda = self.device.type == "cuda"
        half = self.stack.dtype in _half_dtypes()
        st = self.stack
        if attention == "auto":
            shape = (self.device, st.dtype, st.heads, st.kv_heads, st.head_dim)
            if on_cuda and half and varlen_works(*shape):
                attention = "triton" if triton_works(*shape) else "varlen"
            else:
                attention = "sdpa"
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be 'auto' or one of {ATTENTION_KINDS}, got {attention!r}")
        if attention == "triton" and not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("attention='triton' needs a CUDA device (or TRITON_INTERPRET=1, Triton's CPU interpreter)")
        self.attention = attention  # 'varlen' off CUDA runs a row-by-row stand-in (tests only)
        self.block_t = TritonAttention.block_tokens(st.heads, st.kv_heads)
        for name, value in (("compile", compile), ("cuda_graphs", cuda_graphs)):
            if value not in ("auto", "on", "off"):
                raise ValueError(f"{name} must be 'auto', 'on' or 'off', got {value!r}")
        self.compile = compile == "on" or (compile == "auto" and on_cuda)
        # Measured on an H200 (BENCHMARKS.md): graphs made the 0.6B shape 1.6x faster (its GPU waited on
        # kernel launches) but the 8B shape 7% slower (compute-bound; a static shape pads a pass by up to 12.5%).
        # A small model also gains from a small first chunk (the GPU starts sooner); a big one loses more
        # to the smaller passes than the tokenizing of a full first chunk costs.
        self.small = self.stack.flops_per_token < SMALL_MODEL_FLOPS
        self.cuda_graphs = on_cuda and attention in ("varlen", "triton") and (
            cuda_graphs == "on" or (cuda_graphs == "auto" and self.small))
        self.first_chunk_tokens = None if self.small else self.max_batch_tokens
        self._segments = None
        self._graphs = None
        self._lock = threading.Lock()

    @property
    def device(self):
        return self.stack.device

    def groups(self, sequences: Sequence[Sequence[int]]) -> list[PrefixGroup]:
        """The prefix groups this engine will use (all sequences unshared when sharing is off)."""
        if self.prefix_sharing:
            return find_prefix_groups(sequences)
        return [PrefixGroup(0, tuple(range(len(sequences))))]

    def computed_tokens(self, sequences: Sequence[Sequence[int]]) -> int:
        """Tokens the engine actually runs through the model for ``sequences`` (prefixes once per pass)."""
        lengths = [len(s) for s in sequences]
        passes = plan_passes(self.groups(sequences), lengths, self.max_batch_tokens, self.max_batch_size)
        return sum(p + sum(lengths[i] - p for i in members) for plan in passes for p, members in plan)

    def last_hidden(self, sequences: Sequence[Sequence[int]]):
        """float32 tensor (len(sequences), hidden) on the CPU, in the caller's order."""
        return self.submit(sequences).result()

    def submit(self, sequences: Sequence[Sequence[int]]) -> Pending:
        """Queue the passes for ``sequences`` on the device and return without waiting for them.

        The caller can prepare (tokenize) the next inputs while the GPU works; ``result()`` waits.
        """
        import torch

        n = len(sequences)
        if n == 0:
            return Pending([], [], self.stack.hidden, 0)
        lengths = [len(s) for s in sequences]
        if min(lengths) < 1:
            raise InvalidInput("sequences", f"sequence {lengths.index(0)} is empty; every input needs a token")
        passes = plan_passes(self.groups(sequences), lengths, self.max_batch_tokens, self.max_batch_size)
        hidden, members, computed = [], [], 0
        # one submitter at a time: graph capture and the graphs' static input buffers are shared state
        # (the work itself queues on one CUDA stream, so replays of different calls never overlap)
        with self._lock, torch.inference_mode():
            for plan in passes:
                # nothing here waits for the GPU, so the next pass is planned while this one runs
                layout = build_layout(sequences, plan)
                hidden.append(self._run(layout))
                members.extend(layout.members)
                computed += layout.num_tokens
        return Pending(hidden, members, self.stack.hidden, computed)

    def _run(self, layout):
        if self.compile and self._segments is None:
            # the first compiled pass is also the check that compilation works here
            self._segments = compiled_segments()
            try:
                return self._dispatch(layout)
            except _compile_errors() as exc:  # inductor/triton missing or failing: run eager, say so once
                log.warning("torch.compile failed (%s: %s); the fast engine runs uncompiled", type(exc).__name__, exc)
                self.compile, self._segments, self._graphs = False, None, None
        return self._dispatch(layout)

    def _dispatch(self, layout):
        if self.cuda_graphs:
            if self._graphs is None:
                self._graphs = GraphRunner(self.stack, self._segments, attention=self.attention)
            try:
                return self._graphs.run(layout)
            except GraphCaptureError as exc:
                log.warning("CUDA graph capture failed (%s); the fast engine runs without graphs", exc)
                self.cuda_graphs, self._graphs = False, None
        dev = self.device
        ids = torch_from(layout.input_ids, dev)
        pos = torch_from(layout.positions, dev)
        last = torch_from(layout.last_index, dev)
        attend = make_attention(self.attention, layout, dev, self.stack.scale, bucket_tokens=self.max_batch_tokens,
                                block_t=self.block_t)
        return self.stack.forward(ids, pos, attend, last, segments=self._segments)


class Pending:
    """Hidden states still being computed; ``result()`` waits and puts them in the caller's order.

    ``computed_tokens``: what the passes run through the model (each shared prefix once per pass).
    """

    def __init__(self, hidden: list, members: list[int], width: int, computed_tokens: int) -> None:
        self.hidden, self.members, self.width = hidden, members, width
        self.computed_tokens = computed_tokens

    def result(self):
        import torch

        if not self.hidden:
            return torch.zeros((0, self.width), dtype=torch.float32)
        with torch.inference_mode():
            stacked = torch.cat(self.hidden).float().cpu()  # the one synchronisation
        out = torch.empty_like(stacked)
        out[torch.as_tensor(self.members, dtype=torch.long)] = stacked
        return out


def torch_from(array, device):
    """A host int array on ``device`` without making the host wait (pinned, asynchronous copy)."""
    import torch

    t = torch.from_numpy(array)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _compile_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "compilation does not work here" (not a bug in the inputs or the kernels)."""
    from torch._dynamo.exc import TorchDynamoException

    errors: list[type[BaseException]] = [TorchDynamoException]
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:  # older torch: dynamo wraps inductor failures in BackendCompilerFailed
        log.debug("torch._inductor.exc.InductorError not available")
    return tuple(errors)


def _half_dtypes():
    import torch

    return (torch.float16, torch.bfloat16)
