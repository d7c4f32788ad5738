"""What the UI's handlers return: plain data, independent of Gradio, so that tests read it directly.

>>> RankedRow(rank=1, index=3, score=0.9, document="d").moved
3
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RankedRow:
    """One document in a reranked list; ``rank`` counts from 1, ``index`` is its 0-based input position."""

    rank: int
    index: int
    score: float
    document: str
    scored: str = ""  # what of a long document was scored ("chars 400-900 (best of 3 chunks)"); "" = all or unknown

    @property
    def moved(self) -> int:
        """Places gained by reranking (positive = moved up)."""
        return self.index - (self.rank - 1)


@dataclass(frozen=True)
class SearchRow:
    """One hit of one search column.

    ``first_stage_rank`` is where the reranked column's hit stood in the first stage's list (``None`` when
    it was beyond the part shown), which gives ``moved``.
    """

    rank: int
    doc_id: str
    score: float
    text: str
    title: str = ""
    reranked: bool = False
    first_stage_rank: int | None = None

    @property
    def moved(self) -> int | None:
        if not self.reranked or self.first_stage_rank is None:
            return None
        return self.first_stage_rank - self.rank


@dataclass
class PlaygroundView:
    """The playground's answer: rows best first, the raw JSON, the latency, or an error message."""

    rows: list[RankedRow] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None
    model: str = ""
    error: str | None = None


@dataclass
class CompareView:
    """Two rankings of the same documents and how much they agree."""

    model_a: str = ""
    model_b: str = ""
    rows_a: list[RankedRow] = field(default_factory=list)
    rows_b: list[RankedRow] = field(default_factory=list)
    agreement: dict[str, Any] = field(default_factory=dict)
    latency_a_ms: float | None = None
    latency_b_ms: float | None = None
    error: str | None = None


@dataclass
class SearchView:
    """The search tab's three columns (``bm25``, ``dense``, ``reranked``) with their timings."""

    columns: dict[str, list[SearchRow]] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    first_stage: str = "dense"
    error: str | None = None


@dataclass
class EvalView:
    """The evaluation tab: the report folders found (newest first), the one shown, or why none is."""

    choices: list[str] = field(default_factory=list)
    selected: str | None = None
    report: Any = None  # qrank.ui.reports.EvalReport
    message: str = ""
    error: str | None = None
