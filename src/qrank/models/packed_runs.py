"""Host-side plumbing of packed encoder runs: token ids to the device, one CPU thread, pipelined requests.

:mod:`.packed_encoder` and :mod:`.packed_modernbert` compute a packed run; this module feeds them. Token ids go
to a GPU as one flat tensor through pinned memory (:func:`to_device`), so queuing a run never waits on the
GPU; the CPU's per-input attention runs on one thread (:func:`single_thread`); and big GPU requests tokenize
their next chunk while the previous one runs (:class:`PackedRows`, :func:`overlapped_rows`, on top of
:func:`qrank.engine.pipelining.pipelined_last_hidden`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence

# requests of fewer inputs are tokenized first on a GPU too (PackedRows.worth_it); 32 x 100 pairs pipelined
# beat tokenizing first by 18% (XLM-R-large), 4% (MiniLM), 10% (ModernBERT, 2,048-token first chunk) on an H100
PIPELINE_MIN_ITEMS = 256

_THREADS = threading.Lock()
_SINGLE = {"active": 0, "saved": 1}


@contextlib.contextmanager
def single_thread():
    """torch on one CPU thread inside (process-wide; nested and concurrent uses restore the count once).

    Per-input attention is hundreds of small kernels: a parallel region each cost more than it saved on
    2 busy cores (measured: 30 SciFact pairs 14.8 s -> 8.7 s with the matrix products still on 2 threads).
    """
    import torch

    with _THREADS:
        if _SINGLE["active"] == 0:
            _SINGLE["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _SINGLE["active"] += 1
    try:
        yield
    finally:
        with _THREADS:
            _SINGLE["active"] -= 1
            if _SINGLE["active"] == 0:
                torch.set_num_threads(_SINGLE["saved"])


def to_device(t, device):
    """``t`` (a CPU tensor) on ``device``; to a GPU through pinned memory, queued without waiting.

    A copy from pageable memory makes the host wait for the GPU's queue, so every host-built index of a
    run (ids, positions, cumulative lengths) goes through a pinned buffer.

    >>> import torch
    >>> to_device(torch.arange(3), torch.device("cpu")).tolist()
    [0, 1, 2]
    """
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


class PackedRows:
    """A packed encoder seen as an engine of :func:`qrank.engine.pipelining.pipelined_last_hidden`: items are
    :class:`~qrank.models.base.Encoded`, a chunk's "hidden states" are ``forward``'s rows (logits, vectors).

    On a GPU the tokenizing of each chunk then overlaps the runs of the chunks before it: measured on an
    H100 (XLM-R-large shape, 1 x 100 SciFact pairs) the host's tokenizing and launching left the GPU idle
    for 23 of 62 ms when everything was tokenized first.

    >>> import torch
    >>> from qrank.models.base import Encoded
    >>> class Sum:  # a stand-in encoder: each input's row is the sum of its ids
    ...     device = torch.device("cpu")
    ...     def run_tokens(self, n): return n
    ...     def submit(self, ids, types, forward): return forward(ids)
    ...     def run(self, ids, types, max_tokens, forward): return list(forward(ids))
    >>> rows = PackedRows(Sum(), lambda ids: torch.tensor([[float(sum(x))] for x in ids]), 16384)
    >>> rows.last_hidden([Encoded((1, 2), None), Encoded((5,), None)]).flatten().tolist()
    [3.0, 5.0]
    """

    def __init__(self, packed, forward: Callable, max_tokens: int, first_tokens: int | None = None) -> None:
        from ..engine.config import first_chunk_tokens

        self.packed, self.forward = packed, forward
        self.device = packed.device
        self.max_batch_tokens = packed.run_tokens(max_tokens)
        # an eighth of the settings' pass, as for small decoders: best or within 3% of the best for 32 x 100
        # on an H100 (ModernBERT 1,181 ms vs 1,362 with a 16,384-token first chunk; bench/logs/device_2026-12-06c_h100)
        self.first_chunk_tokens = first_tokens or first_chunk_tokens(True, max_tokens)

    @staticmethod
    def worth_it(packed, n_items: int, deterministic: bool = False) -> bool:
        """Whether a request of ``n_items`` goes through the overlapped path: on a GPU, and big enough.

        Below :data:`PIPELINE_MIN_ITEMS` everything is tokenized first and runs as one packed run: each chunk
        is a few hundred kernel launches from Python, more than the tokenizing it would hide (H100, 1 x 100:
        XLM-R-large 47.9 ms tokenized first vs 52.9 / 61.0 ms pipelined from a 16,384 / 2,048-token first chunk;
        ModernBERT 48.4 vs 65.5 / 66.2; MiniLM 23.2 vs 25.5 / 36.9).

        >>> import torch
        >>> class Cpu: device = torch.device("cpu")
        >>> PackedRows.worth_it(Cpu(), 10_000)
        False
        """
        return packed.device.type == "cuda" and not deterministic and n_items >= PIPELINE_MIN_ITEMS

    @staticmethod
    def computed_tokens(seqs) -> int:
        return sum(len(s) for s in seqs)

    def submit(self, seqs) -> _Pending:
        import torch

        with torch.inference_mode():
            return _Pending(self.packed.submit(*_ids_and_types(seqs), self.forward))

    def last_hidden(self, seqs):
        import torch

        if not seqs:
            return torch.zeros((0, 0), dtype=torch.float32)
        return torch.stack(self.packed.run(*_ids_and_types(seqs), self.max_batch_tokens, self.forward))


def overlapped_rows(packed, forward: Callable, items: Sequence, encode: Callable, settings):
    """``forward``'s rows (CPU, float32) for ``items`` with their tokenizing overlapped with the GPU's runs, or
    None where :meth:`PackedRows.worth_it` says the caller's tokenize-first path is the faster one.

    ``settings``: the model's :class:`~qrank.settings.EngineSettings` (the pass budget, deterministic mode).

    >>> import torch
    >>> from qrank.settings import EngineSettings
    >>> class Cpu: device = torch.device("cpu")
    >>> overlapped_rows(Cpu(), None, ["a"] * 300, None, EngineSettings()) is None  # a CPU: tokenize first
    True
    """
    if packed is None or not PackedRows.worth_it(packed, len(items), settings.deterministic):
        return None
    from ..engine.pipelining import pipelined_last_hidden

    return pipelined_last_hidden(PackedRows(packed, forward, settings.max_batch_tokens), list(items), encode)


def _ids_and_types(seqs) -> tuple[list, list | None]:
    """Token ids and segment ids of :class:`~qrank.models.base.Encoded` items (None unless every item has them)."""
    types = None if any(s.type_ids is None for s in seqs) else [s.type_ids for s in seqs]
    return [s.ids for s in seqs], types


class _Pending:
    def __init__(self, rows) -> None:
        self.rows = rows

    def result(self):
        import torch

        with torch.inference_mode():
            return self.rows.float().cpu()


def _flat(rows: Sequence[Sequence[int]], total: int):
    """Rows of ints as one 1-D int64 tensor (through NumPy: a million tokens in milliseconds, not a list)."""
    import itertools

    import numpy as np
    import torch

    return torch.from_numpy(np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total))
