"""Plain result and description types shared by the core and its doors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple


class Span(NamedTuple):
    """Character offsets ``[start, end)`` into the caller's document: ``document[start:end]``."""

    start: int
    end: int


@dataclass(frozen=True)
class RerankResult:
    """One document's place in a ranking.

    ``index`` is the document's position in the caller's list, ``score`` the model's relevance
    (a probability for Qwen3 rerankers and sigmoid cross-encoders), ``document`` the text.
    When the model lays documents out in its window (:mod:`qrank.long_documents`), ``span`` is the part
    that decided the score, ``chunks`` and ``tokens`` how many chunks and document tokens were scored, and
    ``truncated`` whether any of the document was left unscored; they stay None otherwise.
    ``raw_score`` (on request) is the model's raw output: a calibrated reranker's uncalibrated score, else the
    logit behind a sigmoid score (a raw head's score as it is).

    >>> r = RerankResult(index=2, score=0.9, document="x", span=Span(0, 1), chunks=1, tokens=1, truncated=False)
    >>> r.to_dict()["span"]
    {'start': 0, 'end': 1}
    """

    index: int
    score: float
    document: str | None = None
    span: Span | None = None
    chunks: int | None = None
    tokens: int | None = None
    truncated: bool | None = None
    raw_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.span is not None:
            out["span"] = self.span._asdict()
        return out


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: enough for `/v1/models`, caches and the CLI.

    ``revision`` is a content fingerprint (hub commit, or a hash of a local folder's config and samples of its
    weight files' bytes) so that caches never mix answers of different weights under one name.
    ``score_activation`` tells doors how to read a reranker's scores (TEI's ``raw_scores`` needs the logit).
    """

    id: str
    kind: str
    role: str  # "reranker" | "embedder"
    max_length: int
    dtype: str
    device: str
    revision: str = ""
    dim: int | None = None
    supports_dims: bool = False
    default_instruction: str | None = None
    # what a reranker's scores are: "sigmoid" (probabilities), "identity" (raw logits), "tanh"; None for embedders
    score_activation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_key_name(model_id: str, revision: str | None) -> str:
    """How a model is named in cache keys (beside its ``revision``): a local folder's fingerprint is its content
    (models.base._local_revision), so a copy of the folder elsewhere is the same model and shares its answers;
    a hub model is its name at a commit. The evaluation's stage keys and the calibration maps'
    file names use the same rule.

    >>> model_key_name("/srv/models/ce", "local-1a2b3c"), model_key_name("org/ce", "4f0e1d")
    ('local', 'org/ce')
    """
    return "local" if (revision or "").startswith("local-") else model_id
