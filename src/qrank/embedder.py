"""The public embedding API: validation, single-vs-batch shapes and dimensions above ``embed_batch``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InvalidInput
from .models.base import EmbeddingModel, check_finite, check_vectors
from .reranker import _with_overrides
from .settings import Settings
from .types import ModelInfo


class Embedder:
    """Embed texts with any embedding model qrank can load; rows are L2-normalised float32.

    >>> em = Embedder.from_pretrained("../shared/models/all-MiniLM-L6-v2")   # doctest: +SKIP
    >>> em.embed(["first text", "second text"]).shape                      # doctest: +SKIP
    (2, 384)
    >>> em.embed("a question", is_query=True, dim=128).shape                # doctest: +SKIP
    (128,)
    """

    # a remote embedder leaves the upper bound of ``dim`` to its server, which names its own field
    _local_dim_bound = True

    def __init__(self, model: EmbeddingModel) -> None:
        self.model = model

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        settings: Settings | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        instruction: str | None = None,
        engine: str | None = None,
    ) -> Embedder:
        """Load a Qwen3-Embedding or sentence-transformers model from a local folder or a hub id."""
        from .models.registry import load_model

        settings = _with_overrides(settings, device=device, dtype=dtype, max_length=max_length, instruction=instruction, engine=engine)
        return cls(load_model(name, "embedder", settings.models, settings.engine))

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def dim(self) -> int:
        return int(self.info.dim or 0)

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        is_query: bool = False,
        instruction: str | None = None,
        dim: int | None = None,
    ) -> np.ndarray:
        """One vector for a string, an ``(n, dim)`` matrix for a list.

        ``is_query`` applies the model's query instruction (Qwen3-Embedding) or query prompt;
        ``dim`` truncates Matryoshka-style and renormalises.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else texts
        if not isinstance(batch, Sequence) or isinstance(batch, (bytes, bytearray)):
            raise InvalidInput("texts", f"must be a string or a list of strings, got {type(texts).__name__}")
        if len(batch) == 0:
            raise InvalidInput("texts", "must not be empty")
        for i, t in enumerate(batch):
            if not isinstance(t, str):
                raise InvalidInput(f"texts[{i}]", f"must be a string, got {type(t).__name__}")
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidInput("instruction", "must be a string")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1
                                or (self._local_dim_bound and dim > self.dim)):
            bound = f"between 1 and {self.dim}" if self._local_dim_bound else "a positive integer"
            raise InvalidInput("dim", f"must be an integer {bound}, got {dim!r}")
        raw = self.model.embed_batch(list(batch), is_query=is_query, instruction=instruction, dim=dim)
        vectors = check_finite(check_vectors(raw, len(batch)))
        return vectors[0] if single else vectors

    def embed_query(self, text: str, *, dim: int | None = None) -> np.ndarray:
        """``embed(text, is_query=True)``."""
        return self.embed(text, is_query=True, dim=dim)

    def embed_documents(self, texts: Sequence[str], *, dim: int | None = None) -> np.ndarray:
        """``embed(texts, is_query=False)``."""
        return self.embed(list(texts), is_query=False, dim=dim)

    def __repr__(self) -> str:
        return f"Embedder({self.info.id!r}, kind={self.info.kind!r}, dim={self.dim})"


class QwenEmbedding(Embedder):
    """The name used in the Qwen3 getting-started guides: ``QwenEmbedding(model_name=...).embed(text)``.

    >>> QwenEmbedding(model_name="Qwen/Qwen3-Embedding-0.6B").embed("hello").shape  # doctest: +SKIP
    (1024,)
    """

    def __init__(self, model_name: str = "Qwen/Qwen3-Embedding-0.6B", **kwargs) -> None:
        loaded = Embedder.from_pretrained(model_name, **kwargs)
        super().__init__(loaded.model)
