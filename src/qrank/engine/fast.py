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
   so one compilation serves every pass size), and a small model's passes replay as CUDA graphs.

Every choice is made once, at load, into :attr:`FastEngine.config` (:mod:`qrank.engine.config`).
It runs on the CPU as well (fp32, SDPA attention), which is how CI proves its numerics.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Sequence

from ..errors import InvalidInput
from . import attention as _attention
from .attention import (
    ATTENTION_KINDS,
    TritonAttention,
    attention_works,
    has_long_rows,
    make_attention,
)
from .config import (
    SMALL_MODEL_FLOPS,
    EngineConfig,
    check_choice,
    compile_errors,
    first_chunk_tokens,
    graphs_by_default,
    resolve_attention,
)
from .graphs import GraphCaptureError, GraphRunner
from .packing import build_layout, plan_passes
from .prefix import PrefixGroup, find_prefix_groups
from .qwen3_forward import Qwen3Stack, layer_segments
from .transfer import to_device

log = logging.getLogger(__name__)

# the load-time check pass is shaped like a real first chunk: a shared prefix and member rows (as in a
# reranker request), token ids any vocabulary has. Its size matters: torch.compile takes the first pass's
# sizes as the hints its element-wise kernels are tuned for, and an 18-token check pass made the 0.6B
# rerank-1x100 workload 11% slower (bench/logs/r100_ab_h200)
_CHECK_PREFIX, _CHECK_MEMBER = 64, 192


def _check_sequences(tokens: int) -> tuple[list[list[int]], list[tuple[int, list[int]]]]:
    """Sequences and their one-group pass plan for a check pass of about ``tokens`` computed tokens.

    >>> seqs, plan = _check_sequences(2048)
    >>> len(seqs), plan[0][0], sum(len(s) for s in seqs) - (len(seqs) - 1) * _CHECK_PREFIX
    (10, 64, 1984)
    """
    members = max(2, (tokens - _CHECK_PREFIX) // _CHECK_MEMBER)
    seqs = [[1] * _CHECK_PREFIX + [2 + (i % 7)] * _CHECK_MEMBER for i in range(members)]
    return seqs, [(_CHECK_PREFIX, list(range(members)))]


@functools.cache
def compiled_segments(key: tuple):
    """The two layer halves under ``torch.compile`` for one kind of stack (:attr:`Qwen3Stack.compile_key`).

    One wrapper per key, shared by every engine of that kind; each key compiles its own copies of the
    functions (:func:`~qrank.engine.qwen3_forward.layer_segments`), because dynamo caches and counts
    recompilations per code object: shared by every kind, the bf16 probe engine, the FP8 engine, one-row
    passes and other models' shapes piled guards onto one entry until dynamo's recompile limit was hit.
    """
    import torch

    seg_in, seg_out = layer_segments(key)
    return (torch.compile(seg_in, dynamic=True, fullgraph=True),
            torch.compile(seg_out, dynamic=True, fullgraph=True))


class FastEngine:
    """Packed, prefix-sharing engine for Qwen3 decoder bodies (rerankers and embedders).

    >>> from transformers import Qwen3Config, Qwen3Model
    >>> body = Qwen3Model(Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...                               num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    >>> engine = FastEngine(body)
    >>> engine.config.attention, engine.last_hidden([[1, 2, 3], [1, 2, 4]]).shape
    ('sdpa', torch.Size([2, 32]))

    ``attention``: 'auto' (on CUDA in fp16/bf16 qrank's Triton kernel, else FlashAttention varlen, else
    bucketed SDPA; bucketed SDPA elsewhere), 'triton', 'varlen', 'sdpa' or 'sdpa-cudnn'; a kind that cannot
    run here falls back along ``triton -> varlen -> sdpa`` at load (:mod:`qrank.engine.config`).
    ``long_row_attention``: the kind for passes where a row sees ``attention.LONG_ROW_KEYS`` keys or more ('same':
    ``attention``'s); with another kind such passes replay their own graphs (triton/varlen) or run eager.
    ``compile``: 'auto' (on CUDA), 'on' or 'off'. ``cuda_graphs``: 'on' replays triton/varlen passes as
    CUDA graphs (:mod:`qrank.engine.graphs`), 'off' launches them, 'auto' replays them for small models
    (``SMALL_MODEL_FLOPS``) and FP8 stacks (:func:`~qrank.engine.config.graphs_by_default`). Compilation
    and graph capture are checked by one pass at load; if it fails they are off for this engine, and a failure
    in a later pass raises.
    ``max_batch_tokens`` counts computed tokens (a shared prefix once per pass), not padded ones; the
    defaults are :class:`~qrank.settings.EngineSettings`'.
    """

    name = "fast"

    def __init__(
        self,
        body,
        *,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 256,
        prefix_sharing: bool = True,
        attention: str = "auto",
        compile: str = "auto",
        cuda_graphs: str = "auto",
        long_row_attention: str = "same",
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be >= 1")
        check_choice("attention", attention, ("auto", *ATTENTION_KINDS))
        check_choice("compile", compile, ("auto", "on", "off"))
        check_choice("cuda_graphs", cuda_graphs, ("auto", "on", "off"))
        check_choice("long_row_attention", long_row_attention, ("same", *ATTENTION_KINDS))
        self.stack = st = Qwen3Stack(body)
        on_cuda = st.device.type == "cuda"
        half = str(st.dtype) in ("torch.float16", "torch.bfloat16")
        shape = (st.device, st.dtype, st.heads, st.kv_heads, st.head_dim)
        kind, fallbacks = resolve_attention(attention, on_cuda, half, lambda k: attention_works(k, *shape))
        long_kind = kind
        if long_row_attention not in ("same", kind):
            long_kind, more = resolve_attention(long_row_attention, on_cuda, half,
                                                lambda k: attention_works(k, *shape), name="long_row_attention")
            fallbacks += more
        if st.fp8_attention and not (kind == "triton" and long_kind == "triton"):
            # the quantizer asked for FP8 attention (ModelSettings.quantization_fp8_attention): only the Triton kernel
            # has an FP8 form; the gate then checks the model as it runs
            used = kind if long_kind == kind else f"{kind}, long rows {long_kind}"
            fallbacks.append(f"fp8_attention: on -> off (only the triton attention has an FP8 form; this engine "
                             f"runs {used})")
            st.use_fp8_attention("")
        small = st.flops_per_token < SMALL_MODEL_FLOPS
        graphs = cuda_graphs == "on" or (cuda_graphs == "auto" and graphs_by_default(small, st.fp8))
        if graphs and not (on_cuda and kind in GraphRunner.KINDS):
            if cuda_graphs == "on":  # 'auto' asks for graphs only where they can run: no fallback to report
                why = "needs CUDA" if not on_cuda else f"the {kind} attention has no static-shape form"
                fallbacks.append(f"cuda_graphs: on -> off ({why})")
            graphs = False
        config = EngineConfig(
            attention=kind, compile=compile == "on" or (compile == "auto" and on_cuda), cuda_graphs=graphs,
            first_chunk_tokens=first_chunk_tokens(small, int(max_batch_tokens)),
            max_batch_tokens=int(max_batch_tokens), max_batch_size=int(max_batch_size),
            prefix_sharing=bool(prefix_sharing), triton_tiles=TritonAttention.describe() if kind == "triton" else "",
            small_model=small, flops_per_token=st.flops_per_token, device=str(st.device),
            dtype=str(st.dtype).replace("torch.", ""), fallbacks=tuple(fallbacks),
            long_row_attention=long_kind if long_kind != kind else "", fp8_attention=st.fp8_attention,
        )
        self._lock = threading.Lock()
        self.config = self._check_at_load(config)
        log.log(logging.WARNING if self.config.fallbacks else logging.INFO, "fast engine: %s", self.config.summary())

    def _check_at_load(self, config: EngineConfig) -> EngineConfig:
        """Run one pass with compilation and graphs as configured; turn off what fails (the last fallbacks).

        The check takes the path later passes take: with graphs on, the compiled code runs inside a captured
        graph only, so the eager path is never compiled (compiling it too left dynamo a second specialisation
        and made the 0.6B rerank-1x100 workload 11-17% slower on an H200: bench/logs/r100_ab_h200).
        """
        self.config = config  # the check pass runs with what is asked for
        self._segments = compiled_segments(self.stack.compile_key) if config.compile else None
        self._set_runners(config)
        if config.compile:
            try:
                self._check_passes()
            except compile_errors() as exc:  # inductor/triton missing or failing here
                why = f"{type(exc).__name__}: {str(exc)[:200]}"
                self.config = config = dataclasses.replace(
                    config, compile=False, fallbacks=(*config.fallbacks, f"compile: on -> off ({why})"))
                self._segments = None
                self._set_runners(config)
        if config.cuda_graphs:
            try:
                self._check_passes()  # replays if the compile check captured them already
            except GraphCaptureError as exc:
                self.config = config = dataclasses.replace(
                    config, cuda_graphs=False, fallbacks=(*config.fallbacks, f"cuda_graphs: on -> off ({exc})"))
                self._set_runners(config)
        return config

    def _set_runners(self, config: EngineConfig) -> None:
        """The graph runners: one for the attention kind, one for the long-row kind where that differs and has
        a static-shape form (otherwise long passes run eager)."""
        graphs = lambda kind: GraphRunner(self.stack, self._segments, attention=kind)  # noqa: E731
        self._graphs = graphs(config.attention) if config.cuda_graphs else None
        long_kind = config.long_row_attention
        self._long_graphs = (graphs(long_kind) if config.cuda_graphs and long_kind in GraphRunner.KINDS
                             else None)

    def _check_passes(self) -> None:
        """One pass as configured, and one long-row pass if long rows take another attention kind."""
        import torch

        layouts = [build_layout(*_check_sequences(min(self.config.first_chunk_tokens, self.config.max_batch_tokens)))]
        if self.config.long_row_attention:
            own = max(_attention.LONG_ROW_KEYS - _CHECK_PREFIX, 1)  # the row sees LONG_ROW_KEYS keys
            layouts.append(build_layout([[1] * _CHECK_PREFIX + [2] * own], [(_CHECK_PREFIX, [0])]))
        with torch.inference_mode():
            for layout in layouts:
                self._run(layout).float().cpu()  # waits: an asynchronous failure shows here, at load

    def _run(self, layout):
        """One pass: the long-row kind's runner for a pass with long rows (if that kind differs), else the
        attention kind's; a graph replay where the runner exists, else eager."""
        long_kind = self.config.long_row_attention
        if long_kind and has_long_rows(layout):
            return self._long_graphs.run(layout) if self._long_graphs is not None else self._eager(layout, long_kind)
        return self._graphs.run(layout) if self._graphs is not None else self._eager(layout, self.config.attention)

    @property
    def device(self):
        return self.stack.device

    @property
    def max_batch_tokens(self) -> int:
        return self.config.max_batch_tokens

    @property
    def max_batch_size(self) -> int:
        return self.config.max_batch_size

    @property
    def first_chunk_tokens(self) -> int:
        """Computed tokens of a request's first chunk (:func:`qrank.engine.pipelining.pipelined_last_hidden`)."""
        return self.config.first_chunk_tokens

    def describe(self) -> dict:
        """The resolved config as a plain dict (``ModelInfo.extra["engine"]``)."""
        return self.config.describe()

    def groups(self, sequences: Sequence[Sequence[int]]) -> list[PrefixGroup]:
        """The prefix groups this engine will use (all sequences unshared when sharing is off)."""
        if self.config.prefix_sharing:
            return find_prefix_groups(sequences)
        return [PrefixGroup(0, tuple(range(len(sequences))))]

    def _plan(self, sequences: Sequence[Sequence[int]], lengths: list[int]):
        return plan_passes(self.groups(sequences), lengths, self.config.max_batch_tokens, self.config.max_batch_size)

    def computed_tokens(self, sequences: Sequence[Sequence[int]]) -> int:
        """Tokens the engine actually runs through the model for ``sequences`` (prefixes once per pass)."""
        lengths = [len(s) for s in sequences]
        return sum(p + sum(lengths[i] - p for i in members) for plan in self._plan(sequences, lengths)
                   for p, members in plan)

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
        hidden, members, computed = [], [], 0
        # one submitter at a time: graph capture and the graphs' static input buffers are shared state
        # (the work itself queues on one CUDA stream, so replays of different calls never overlap)
        with self._lock, torch.inference_mode():
            for plan in self._plan(sequences, lengths):
                # nothing here waits for the GPU, so the next pass is planned while this one runs
                layout = build_layout(sequences, plan)
                hidden.append(self._run(layout))
                members.extend(layout.members)
                computed += layout.num_tokens
        return Pending(hidden, members, self.stack.hidden, computed)

    def _eager(self, layout, kind: str):
        ids, pos, last = to_device([layout.input_ids, layout.positions, layout.last_index], self.device)
        st = self.stack
        attend = make_attention(kind, layout, self.device, st.scale,
                                bucket_tokens=self.config.max_batch_tokens, group=st.heads // st.kv_heads)
        return st.forward(ids, pos, attend, last, segments=self._segments)


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
