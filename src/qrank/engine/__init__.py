"""Engines run token sequences through a decoder body and return each sequence's last hidden state.

Two implementations share one contract, ``last_hidden(sequences) -> (n, hidden) float32``:
:class:`~qrank.engine.reference.ReferenceEngine` (padded batches, the yardstick) and the fast GPU engine
in :mod:`qrank.engine.fast` (packed, prefix-shared). :func:`make_engine` picks one from settings.
"""

from __future__ import annotations

import logging

from ..settings import EngineSettings
from .batching import plan_batches, restore_order
from .config import EngineConfig
from .pipelining import pipelined_last_hidden
from .reference import ReferenceEngine

log = logging.getLogger(__name__)

__all__ = ["EngineConfig", "ReferenceEngine", "make_engine", "pipelined_last_hidden", "plan_batches", "restore_order"]


def make_engine(body, *, pad_id: int, device: str, settings: EngineSettings):
    """Choose the engine: 'auto' takes the fast engine on CUDA, the reference path elsewhere.

    The fast engine resolves its choices at load (``engine.config``); either engine's ``describe()`` is the
    plain dict a backend puts into ``ModelInfo.extra["engine"]``. ``pad_id``: the reference path's padding.

    >>> from transformers import Qwen3Config, Qwen3Model
    >>> body = Qwen3Model(Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...                               num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    >>> make_engine(body, pad_id=0, device="cpu", settings=EngineSettings()).describe()["engine"]
    'reference'
    """
    choice = settings.engine
    if choice == "auto":
        choice = "fast" if str(device).startswith("cuda") else "reference"
    if choice == "fast":
        from .fast import FastEngine  # imported lazily: only the GPU path needs it

        return FastEngine(
            body,
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
