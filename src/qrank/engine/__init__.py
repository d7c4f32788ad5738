"""Engines run token sequences through a decoder body and return each sequence's last hidden state.

Two implementations share one contract, ``last_hidden(sequences) -> (n, hidden) float32``:
:class:`~qrank.engine.reference.ReferenceEngine` (padded batches, the yardstick) and the fast GPU engine
in :mod:`qrank.engine.fast` (packed, prefix-shared). :func:`make_engine` picks one from settings.
"""

from __future__ import annotations

import logging

from ..settings import EngineSettings
from .batching import plan_batches, restore_order
from .reference import ReferenceEngine

log = logging.getLogger(__name__)

__all__ = ["ReferenceEngine", "make_engine", "pipelined_last_hidden", "plan_batches", "restore_order"]


def pipelined_last_hidden(engine, items, encode, *, chunk_tokens: int | None = None, chars_per_token: float = 3.0):
    """``engine.last_hidden(encode(items))``, but on a GPU the tokenizing of one chunk of ``items``
    overlaps the forward passes of the previous one.

    Chunks hold about ``chunk_tokens`` tokens (estimated from characters; default: the engine's pass
    budget). Engines without ``submit`` (the reference path) and CPU runs take everything at once.

    >>> import torch
    >>> class Echo:  # an engine whose "hidden state" is the sequence length
    ...     def last_hidden(self, seqs): return torch.tensor([[float(len(s))] for s in seqs])
    >>> pipelined_last_hidden(Echo(), ["ab", "c"], lambda xs: [list(x) for x in xs]).flatten().tolist()
    [2.0, 1.0]
    """
    import torch

    submit = getattr(engine, "submit", None)
    device = getattr(engine, "device", None)
    if submit is None or getattr(device, "type", "cpu") != "cuda" or len(items) < 2:
        return engine.last_hidden(encode(items))
    budget = (chunk_tokens or engine.max_batch_tokens) * chars_per_token
    chunks, current, size = [], [], 0.0
    for item in items:
        chars = sum(len(x) for x in item) if isinstance(item, tuple) else len(item)
        if current and size + chars > budget:
            chunks.append(current)
            current, size = [], 0.0
        current.append(item)
        size += chars
    chunks.append(current)
    pending = [submit(encode(chunk)) for chunk in chunks]  # encode(next) runs while the GPU works
    return torch.cat([p.result() for p in pending])


def make_engine(body, *, pad_id: int, device: str, settings: EngineSettings):
    """Choose the engine: 'auto' takes the fast engine on CUDA, the reference path elsewhere.

    >>> from qrank.settings import EngineSettings
    >>> # make_engine(model.model, pad_id=0, device="cpu", settings=EngineSettings()).name -> 'reference'
    """
    choice = settings.engine
    if choice == "auto":
        choice = "fast" if str(device).startswith("cuda") else "reference"
    if choice == "fast":
        from .fast import FastEngine  # imported lazily: only the GPU path needs it

        return FastEngine(
            body,
            pad_id=pad_id,
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_size=settings.max_batch_size,
            prefix_sharing=settings.prefix_sharing,
            attention=settings.attention,
            compile=settings.compile,
            cuda_graphs=settings.cuda_graphs,
        )
    return ReferenceEngine(
        body, pad_id=pad_id, max_batch_tokens=settings.max_batch_tokens, max_batch_size=settings.max_batch_size
    )
