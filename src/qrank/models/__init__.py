"""Model backends, one per kind, behind two small contracts (:mod:`qrank.models.base`)."""

from .base import EmbeddingModel, Encoded, PairEncoder, ScoringModel, TextEncoder, resolve_model
from .registry import KINDS, detect_kind, load_model

__all__ = [
    "EmbeddingModel",
    "Encoded",
    "PairEncoder",
    "ScoringModel",
    "TextEncoder",
    "KINDS",
    "detect_kind",
    "load_model",
    "resolve_model",
]
