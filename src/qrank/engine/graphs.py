"""CUDA graphs for the fast engine's varlen passes, over a ladder of static shapes.

A small model's pass is ~30 ms of GPU work but ~600 kernel launches, and launching them from Python
(eager ops, compiled-graph guards and wrappers) takes longer than running them: the GPU waits on the
host. Capturing the pass as a CUDA graph replaces those launches by one replay.

A graph needs static shapes, so every size of a pass is rounded up a ladder (token counts to
``m * 2**k`` with m in 8..15, i.e. at most 12.5% over; rows, outputs and maximum lengths to powers of
two). Padding is harmless by construction: padded tokens belong to no attention row (they are
computed, never read), padded rows have zero length, padded outputs are dropped. One graph is kept per
static shape (least recently used beyond ``MAX_GRAPHS``), all sharing one memory pool; each replay's
output is copied out at once, so a later replay may reuse the pool.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import numpy as np

from .attention import TritonAttention, VarlenAttention
from .packing import PassLayout, ladder, pow2
from .transfer import to_device

log = logging.getLogger(__name__)

# graphs kept (least recently used dropped): the ladder gives ~8 token sizes per doubling, so 32 covers the
# pass sizes of a steady workload (e.g. 2k-16k tokens x a few row counts); the graphs share one memory pool,
# so each keeps only its input and output buffers, not its own activations
MAX_GRAPHS = 32


class GraphCaptureError(RuntimeError):
    """Capturing a pass failed; the engine then runs without graphs."""


@dataclass(frozen=True)
class StaticShape:
    tokens: int
    outputs: int
    attention: tuple[int, ...]  # the attention kind's own static dims
    part_sizes: tuple[int, ...]  # lengths of the attention kind's int arrays

    @property
    def sizes(self) -> list[int]:
        """Lengths of the flat int64 input buffer's parts: ids, positions, outputs, then the attention's."""
        return [self.tokens, self.tokens, self.outputs, *self.part_sizes]


def static_inputs(layout: PassLayout, attention=None) -> tuple[StaticShape, np.ndarray]:
    """The pass's static shape and its inputs, padded and flattened into one int64 array.

    ``attention``: a callable ``layout -> (dims, [(array, size, fill)])`` (an attention kind's
    ``static_parts``); FlashAttention varlen's by default.
    """
    dims, attn_parts = (attention or VarlenAttention.static_parts)(layout)
    tokens, outputs = ladder(layout.num_tokens), pow2(len(layout.members))

    def pad(a, size, fill):
        out = np.full(size, fill, dtype=np.int64)
        out[: len(a)] = a
        return out

    parts = [pad(layout.input_ids, tokens, 0), pad(layout.positions, tokens, 0), pad(layout.last_index, outputs, 0)]
    parts += [pad(a, size, fill) for a, size, fill in attn_parts]
    shape = StaticShape(tokens, outputs, tuple(dims), tuple(size for _, size, _ in attn_parts))
    return shape, np.concatenate(parts)


class _Captured:
    def __init__(self, flat, graph, out) -> None:
        self.flat, self.graph, self.out = flat, graph, out


class GraphRunner:
    """Runs varlen passes of a :class:`~qrank.engine.qwen3_forward.Qwen3Stack` through CUDA graphs.

    ``attention``: 'varlen' or 'triton'. A capture that fails raises :class:`GraphCaptureError` (the engine
    checks one capture at load and turns graphs off there if it fails).
    """

    KINDS = ("varlen", "triton")  # the attention kinds with a static-shape form

    def __init__(self, stack, segments=None, *, attention: str = "varlen", max_graphs: int = MAX_GRAPHS) -> None:
        if attention not in self.KINDS:
            raise ValueError(f"CUDA graphs replay the 'varlen' or 'triton' attention, not {attention!r}")
        self.stack = stack
        self.attention = attention
        if attention == "triton":
            group = stack.heads // stack.kv_heads
            self._static_parts = partial(TritonAttention.static_parts, group=group)
            self._from_static = partial(TritonAttention.from_static, group=group)
        else:
            self._static_parts, self._from_static = VarlenAttention.static_parts, VarlenAttention.from_static
        self.segments = segments
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[StaticShape, _Captured] = OrderedDict()
        self.pool = None

    def inputs(self, layout: PassLayout) -> tuple[StaticShape, np.ndarray]:
        """The pass's static shape and padded flat inputs (:func:`static_inputs` with this runner's attention)."""
        return static_inputs(layout, self._static_parts)

    def run(self, layout: PassLayout):
        """Final hidden states (len(layout.members), hidden) of the pass, a fresh tensor."""
        shape, host = self.inputs(layout)
        entry = self.graphs.get(shape)
        if entry is None:
            entry = self._capture(shape, host)
        else:
            self.graphs.move_to_end(shape)
            to_device([host], self.stack.device, out=entry.flat)
        entry.graph.replay()
        return entry.out[: len(layout.members)].clone()

    def forward_static(self, flat, shape: StaticShape):
        """The padded static-shape forward a graph records: hidden states of ``shape.outputs`` rows.

        ``flat``: the int64 inputs of :meth:`inputs` on the device (rows past the pass's members are padding).
        """
        ids, pos, last, *parts = flat.split(shape.sizes)
        attend = self._from_static(shape.attention, parts, self.stack.scale)
        return self.stack.forward(ids, pos, attend, last, segments=self.segments)

    def _capture(self, shape: StaticShape, host: np.ndarray) -> _Captured:
        import torch

        (flat,) = to_device([host], self.stack.device)
        # warm up off the capture: compilation, cuBLAS handles and lazy initialisation happen here
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.forward_static(flat, shape)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                out = self.forward_static(flat, shape)
        except RuntimeError as exc:
            raise GraphCaptureError(f"capturing a pass of shape {shape} failed: {exc}") from exc
        if self.pool is None:
            self.pool = graph.pool()
        entry = _Captured(flat, graph, out)
        self.graphs[shape] = entry
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        log.debug("captured a CUDA graph for %s (%d kept)", shape, len(self.graphs))
        return entry
