"""qrank: two-stage retrieval — a fast embedder finds candidates, a reranker orders them.

A user with internet passes a hub id (``Qwen/Qwen3-Reranker-0.6B``); the shared local model runs offline:

>>> from qrank import Reranker
>>> rr = Reranker.from_pretrained("../shared/models/scifact-minilm-ce")
>>> rr.rerank("what is bm25?", ["Cats purr.", "BM25 ranks documents by term statistics."], top_n=1)[0].index
1
"""

from __future__ import annotations

from importlib import import_module

from .embedder import Embedder, QwenEmbedding
from .errors import InvalidInput, ModelNotFound, Overloaded, QrankError, TooLarge, UnsupportedModel
from .reranker import QwenReranker, Reranker
from .settings import Settings
from .types import ModelInfo, RerankResult

__version__ = "0.1.0"

# heavier parts (index, server, remote clients) load on first use
_LAZY = {
    "Pipeline": "qrank.pipeline",
    "RemoteReranker": "qrank.models.remote",
    "RemoteEmbedder": "qrank.models.remote",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qrank' has no attribute {name!r}")


__all__ = [
    "Embedder",
    "InvalidInput",
    "ModelInfo",
    "ModelNotFound",
    "Overloaded",
    "QrankError",
    "QwenEmbedding",
    "QwenReranker",
    "RerankResult",
    "Reranker",
    "Settings",
    "TooLarge",
    "UnsupportedModel",
    "__version__",
]
