"""The table of search hits that ``qrank search`` and the SciFact demo print: one column per score the
pipeline produced (dense, BM25 and fusion for hybrid, rerank), each saying something distinct.

>>> from qrank.pipeline import SearchHit
>>> hit_columns([SearchHit(id="a", score=0.9, text="t", dense_score=0.5, rerank_score=0.9)])
['dense', 'rerank']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# (column, SearchHit field): a column appears when any hit carries that score
SCORE_COLUMNS = (("dense", "dense_score"), ("bm25", "bm25_score"), ("fusion", "fusion_score"),
                 ("rerank", "rerank_score"))


def hit_columns(hits: Sequence[Any]) -> list[str]:
    """The score columns worth showing for ``hits``: those some hit has a value for.

    ``score`` (what the ranking used) is never a column of its own: it is always one of these.
    """
    return [col for col, attr in SCORE_COLUMNS if any(getattr(h, attr, None) is not None for h in hits)]


def hits_table(
    hits: Sequence[Any],
    *,
    title: str = "",
    marks: Sequence[bool] | None = None,
    was: Mapping[str, int] | None = None,
    clip: int = 160,
):
    """A rich ``Table`` of ``hits`` (:class:`~qrank.pipeline.SearchHit`), best first.

    ``marks`` adds a ✓ column (e.g. judged relevant); ``was`` ``{doc_id: first-stage rank}`` adds the rank each
    hit had before reranking, so that what the reranker moved is visible.
    """
    from rich.markup import escape
    from rich.table import Table

    columns = hit_columns(hits)
    table = Table(title=escape(title) if title else None, title_justify="left")
    table.add_column("rank", justify="right")
    if marks is not None:
        table.add_column("✓", justify="center")
    if was is not None:
        table.add_column("was", justify="right")
    table.add_column("id")
    for col in columns:
        table.add_column(col, justify="right")
    table.add_column("document", overflow="fold")
    attrs = dict(SCORE_COLUMNS)
    for i, h in enumerate(hits):
        row = [str(h.rank or i + 1)]
        if marks is not None:
            row.append("✓" if marks[i] else "")
        if was is not None:
            row.append(str(was[h.id]) if h.id in was else "–")
        row.append(str(h.id))
        for col in columns:
            value = getattr(h, attrs[col], None)
            row.append(f"{value:.4f}" if value is not None else "–")
        text = ((h.title + " — ") if h.title else "") + (h.passage or h.text or "")
        table.add_row(*map(escape, row), escape(_clip(text, clip)))
    return table


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
