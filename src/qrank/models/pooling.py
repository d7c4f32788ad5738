"""Pooling and the normalisation every embedder shares."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput


def finish_embeddings(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Truncate to ``dim`` (Matryoshka) and L2-normalise, as float32.

    >>> v = finish_embeddings(np.array([[3.0, 4.0, 12.0]]), dim=2)
    >>> v.round(2).tolist()
    [[0.6, 0.8]]
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if dim is not None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1 or dim > vectors.shape[1]:
            raise InvalidInput("dim", f"must be an integer between 1 and {vectors.shape[1]}, got {dim!r}")
        vectors = vectors[:, :dim]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def pool(token_embeddings, attention_mask, mode: str):
    """Sentence-transformers pooling modes over a padded batch (torch tensors).

    ``mode`` is one of ``mean``, ``cls``, ``max``, ``mean_sqrt_len``, ``lasttoken``.
    """
    import torch

    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    if mode == "cls":
        return token_embeddings[:, 0]
    if mode == "max":
        masked = token_embeddings.masked_fill(mask == 0, torch.finfo(token_embeddings.dtype).min)
        return masked.max(dim=1).values
    if mode in ("mean", "mean_sqrt_len"):
        summed = (token_embeddings * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return summed / (counts if mode == "mean" else counts.sqrt())
    if mode == "lasttoken":
        # works for left and right padding alike: the last position whose mask is 1
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (positions * attention_mask).argmax(dim=1)
        return token_embeddings[torch.arange(token_embeddings.shape[0]), last]
    raise ValueError(f"unknown pooling mode {mode!r}")
