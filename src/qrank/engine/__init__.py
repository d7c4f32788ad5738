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
    # deterministic mode: one row per pass and no shared prefix, so a row's pass has the same shapes (and
    # kernels) whatever else was asked for; backends also hand the engine one input at a time
    batch_size = 1 if settings.deterministic else settings.max_batch_size
    if settings.deterministic:
        deterministic_kernels(device)
    if choice == "fast":
        from .fast import FastEngine  # imported lazily: only the GPU path needs it

        return FastEngine(
            body,
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_size=batch_size,
            prefix_sharing=settings.prefix_sharing and not settings.deterministic,
            attention=settings.attention,
            compile=settings.compile,
            cuda_graphs=settings.cuda_graphs,
            long_row_attention=settings.long_row_attention,
        )
    return ReferenceEngine(body, pad_id=pad_id, max_batch_tokens=settings.max_batch_tokens, max_batch_size=batch_size)


def deterministic_kernels(device) -> None:
    """Process-wide switches for deterministic mode on CUDA (nothing to do on the CPU).

    cuBLAS gives the same bits for the same shapes on one stream; its workspace setting keeps that true when
    streams share it. Inductor's ``deterministic`` option turns off benchmark-driven kernel choices (autotuning
    can pick another kernel in another process, and a score cache outlives processes). torch's deterministic
    algorithms are asked for with ``warn_only``: an op without a deterministic form warns instead of failing a
    request. They apply to every model of the process, the way ``engine.num_threads`` does.

    >>> deterministic_kernels("cpu")  # a no-op
    """
    if not str(device).startswith("cuda"):
        return
    import os

    import torch

    # read when cuBLAS makes its first handle (the first matrix product), so loading the weights is not too late
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    import torch._inductor.config as inductor_config

    inductor_config.deterministic = True
    log.info("deterministic mode: CUBLAS_WORKSPACE_CONFIG=%s, deterministic algorithms and inductor kernels",
             os.environ["CUBLAS_WORKSPACE_CONFIG"])
