"""CUDA graphs for the fast engine's varlen passes, over a ladder of static shapes.

A small model's pass is ~30 ms of GPU work but ~600 kernel launches, and launching them from Python
(eager ops, compiled-graph guards and wrappers) takes longer than running them: the GPU waits on the
host. Capturing the pass as a CUDA graph replaces those launches by one replay.

A graph needs static shapes, so every size of a pass is rounded up a ladder (token counts to
``m * 2**k`` with m in 8..15, i.e. at most 12.5% over; rows, outputs and maximum lengths to powers of
two). Padding is harmless by construction: padded tokens belong to no attention row (they are
computed, never read), padded rows have zero length, padded outputs are dropped. One graph is kept per
static shape (least recently used beyond ``max_graphs``), all sharing one memory pool; each replay's
output is copied out at once, so a later replay may reuse the pool.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .attention import VarlenAttention
from .packing import PassLayout, varlen_plan

log = logging.getLogger(__name__)


class GraphCaptureError(RuntimeError):
    """Capturing a pass failed; the engine then runs without graphs."""


def ladder(x: int, floor: int = 256) -> int:
    """Smallest m * 2**k >= x with 8 <= m <= 15 (and >= floor).

    >>> [ladder(n) for n in (1, 300, 1025, 16250, 16384)]
    [256, 320, 1152, 16384, 16384]
    """
    x = max(int(x), floor)
    k = max(x.bit_length() - 4, 0)
    m = -(-x // (1 << k))
    return m << k


def pow2(x: int) -> int:
    """
    >>> [pow2(n) for n in (1, 3, 64, 65)]
    [1, 4, 64, 128]
    """
    return 1 << max(int(x) - 1, 0).bit_length()


@dataclass(frozen=True)
class StaticShape:
    tokens: int
    rows: int
    keys: int  # 0 when the keys are the tokens themselves (no shared prefix in the pass)
    max_q: int
    max_k: int
    outputs: int

    @property
    def sizes(self) -> list[int]:
        """Lengths of the flat int64 input buffer's parts: ids, positions, cu_q, cu_k, keys, outputs."""
        return [self.tokens, self.tokens, self.rows + 1, self.rows + 1, self.keys, self.outputs]


def static_inputs(layout: PassLayout) -> tuple[StaticShape, np.ndarray]:
    """The pass's static shape and its inputs, padded and flattened into one int64 array."""
    plan = varlen_plan(layout)
    t, r, n = layout.num_tokens, len(layout.q_len), len(layout.members)
    keys = 0 if plan.k_index is None else ladder(len(plan.k_index))
    shape = StaticShape(ladder(t), pow2(r), keys, pow2(plan.max_q), pow2(plan.max_k), pow2(n))

    def pad(a, size, fill):
        out = np.full(size, fill, dtype=np.int64)
        out[: len(a)] = a
        return out

    parts = [
        pad(layout.input_ids, shape.tokens, 0),
        pad(layout.positions, shape.tokens, 0),
        pad(plan.cu_q, shape.rows + 1, plan.cu_q[-1]),  # padded rows are empty
        pad(plan.cu_k, shape.rows + 1, plan.cu_k[-1]),
        pad(plan.k_index if plan.k_index is not None else [], shape.keys, 0),
        pad(layout.last_index, shape.outputs, 0),
    ]
    return shape, np.concatenate(parts)


class _Captured:
    def __init__(self, flat, graph, out) -> None:
        self.flat, self.graph, self.out = flat, graph, out


class GraphRunner:
    """Runs varlen passes of a :class:`~qrank.engine.qwen3_forward.Qwen3Stack` through CUDA graphs.

    ``capture=False`` runs the same padded static-shape forward without graphs (the CPU tests use it to
    check the padding).
    """

    def __init__(self, stack, segments=None, *, capture: bool = True, max_graphs: int = 32) -> None:
        self.stack = stack
        self.segments = segments
        self.capture = capture
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[StaticShape, _Captured] = OrderedDict()
        self.pool = None

    def run(self, layout: PassLayout):
        """Final hidden states (len(layout.members), hidden) of the pass, a fresh tensor."""
        import torch

        shape, host = static_inputs(layout)
        n = len(layout.members)
        if not self.capture:
            flat = torch.from_numpy(host).to(self.stack.device)
            return self._forward(flat, shape)[:n]
        entry = self.graphs.get(shape)
        if entry is None:
            entry = self._capture(shape, host)
        else:
            self.graphs.move_to_end(shape)
            entry.flat.copy_(torch.from_numpy(host).pin_memory(), non_blocking=True)
        entry.graph.replay()
        return entry.out[:n].clone()

    def _forward(self, flat, shape: StaticShape):
        import torch

        ids, pos, cu_q, cu_k, keys, last = torch.split(flat, shape.sizes)
        attend = VarlenAttention(
            cu_q.to(torch.int32), cu_k.to(torch.int32), keys if shape.keys else None, shape.max_q, shape.max_k,
            self.stack.scale,
        )
        return self.stack.forward(ids, pos, attend, last, segments=self.segments)

    def _capture(self, shape: StaticShape, host: np.ndarray) -> _Captured:
        import torch

        flat = torch.from_numpy(host).to(self.stack.device)
        # warm up off the capture: compilation, cuBLAS handles and lazy initialisation happen here
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._forward(flat, shape)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                out = self._forward(flat, shape)
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
