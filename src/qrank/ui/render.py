"""HTML for the UI's result tables: ranked documents with a score bar, search columns, error boxes.

Plain functions from view data to strings, so that they are tested without a browser. Every piece of
user text goes through :func:`html.escape`: documents are pasted by users and must never become markup.

>>> "<b>" in ranked_table([])
False
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from .backend import CollectionEntry
from .views import RankedRow, SearchRow

CSS = """
.qrank-table { width: 100%; border-collapse: collapse; font-size: 0.92em; border: none !important; }
.qrank-table tr, .qrank-table thead, .qrank-table tbody { border: none !important; }
.qrank-table th, .qrank-table td { border: none !important; padding: 4px 6px; }
.qrank-table th { text-align: left; border-bottom: 2px solid var(--border-color-primary) !important; }
.qrank-table td { border-bottom: 1px solid var(--border-color-primary) !important; vertical-align: top; }
.qrank-num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.qrank-bar { background: var(--neutral-200); border-radius: 3px; height: 10px; width: 110px; }
.qrank-bar > div { background: var(--color-accent); border-radius: 3px; height: 10px; }
.qrank-up { color: #15803d; font-weight: 600; }
.qrank-down { color: #b91c1c; }
.qrank-same { color: var(--body-text-color-subdued); }
.qrank-new { background: #fef9c3; color: #713f12; border-radius: 3px; padding: 0 4px; font-size: 0.8em; }
.qrank-error { border: 1px solid #fca5a5; background: #fef2f2; color: #991b1b; border-radius: 6px; padding: 8px 12px; }
.qrank-empty { color: var(--body-text-color-subdued); font-style: italic; }
.qrank-note { border: 1px solid #fcd34d; background: #fffbeb; color: #78350f; border-radius: 6px; padding: 6px 12px; }
.qrank-doc { word-break: break-word; }
.qrank-search { table-layout: fixed; font-size: 0.85em; }
.qrank-search .qrank-w-rank { width: 2.2em; }
.qrank-search .qrank-w-score { width: 5.2em; }
.qrank-search .qrank-w-moved { width: 4.4em; }
.qrank-mini { width: 100%; height: 5px; margin-top: 3px; }
.qrank-mini > div { height: 5px; }
.qrank-snippet { color: var(--body-text-color-subdued); }
"""


def bar_widths(scores: Sequence[float], *, relative: bool = False) -> list[float]:
    """Bar length in [0, 1] per score.

    Probabilities (every score in [0, 1], as Qwen3 rerankers and sigmoid cross-encoders give) are shown as
    they are, so that bars compare across queries; raw logits are scaled between the lowest and the
    highest score shown. ``relative`` scales non-negative scores by the highest one instead (BM25,
    cosine and fusion scores have no fixed top, so only their ratios mean something).

    >>> bar_widths([0.25, 1.0])
    [0.25, 1.0]
    >>> bar_widths([-2.0, 0.0, 2.0])
    [0.0, 0.5, 1.0]
    >>> bar_widths([0.01, 0.02], relative=True)
    [0.5, 1.0]
    """
    if not scores:
        return []
    if relative and min(scores) >= 0 and max(scores) > 0:
        top = max(scores)
        return [float(s) / top for s in scores]
    if not relative and all(0.0 <= s <= 1.0 for s in scores):
        return [float(s) for s in scores]
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return [1.0 for _ in scores]
    return [(s - lo) / (hi - lo) for s in scores]


def moved_cell(moved: int | None) -> str:
    """``▲ 3`` (moved up three places), ``▼ 2``, ``=``, or a *new* badge for a document the first stage did not show."""
    if moved is None:
        return '<span class="qrank-new">new</span>'
    if moved > 0:
        return f'<span class="qrank-up">▲ {moved}</span>'
    if moved < 0:
        return f'<span class="qrank-down">▼ {-moved}</span>'
    return '<span class="qrank-same">=</span>'


def _scored_note(scored: str) -> str:
    # a cut or chunked document is never silent
    return f' <small class="qrank-scored">[{html.escape(scored)}]</small>' if scored else ""


def ranked_table(rows: Sequence[RankedRow], *, table_id: str = "ranked") -> str:
    """The playground's result: rank, score with its bar, original position, movement, document."""
    if not rows:
        return '<p class="qrank-empty">No results yet.</p>'
    widths = bar_widths([r.score for r in rows])
    body = []
    for r, w in zip(rows, widths):
        body.append(
            f'<tr data-index="{r.index}"><td class="qrank-num">{r.rank}</td>'
            f'<td class="qrank-num">{r.score:.4f}</td>{_bar(w)}'
            f'<td class="qrank-num">{r.index + 1}</td><td class="qrank-num">{moved_cell(r.moved)}</td>'
            f'<td class="qrank-doc">{html.escape(r.document)}{_scored_note(r.scored)}</td></tr>'
        )
    head = "<tr><th>rank</th><th>score</th><th></th><th>was</th><th>moved</th><th>document</th></tr>"
    return (f'<table class="qrank-table" id="{html.escape(table_id)}"><thead>{head}</thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def search_table(rows: Sequence[SearchRow], *, table_id: str, title: str, note: str = "") -> str:
    """One column of the search tab, compact enough for three side by side: rank, score over its bar,
    movement (reranked column only), then id, title and the start of the text (all of it on hover)."""
    head_html = f"<h4>{html.escape(title)}</h4>"
    if note:
        head_html += f'<p class="qrank-empty">{html.escape(note)}</p>'
    if not rows:
        return head_html + '<p class="qrank-empty">No hits.</p>'
    show_moved = rows[0].reranked
    widths = bar_widths([r.score for r in rows], relative=True)
    body = []
    for r, w in zip(rows, widths):
        moved = f'<td class="qrank-num">{moved_cell(r.moved)}</td>' if show_moved else ""
        title_html = f"<b>{html.escape(_clip(r.title, 110))}</b><br>" if r.title else ""
        pct = max(0.0, min(1.0, w)) * 100
        body.append(
            f'<tr data-id="{html.escape(r.doc_id)}"><td class="qrank-num">{r.rank}</td>'
            f'<td class="qrank-num">{r.score:.4f}<div class="qrank-bar qrank-mini"><div '
            f'style="width:{pct:.1f}%"></div></div></td>{moved}'
            f'<td class="qrank-doc" title="{html.escape(r.text)}"><code>{html.escape(r.doc_id)}</code> {title_html}'
            f'<span class="qrank-snippet">{html.escape(_clip(r.text, 160))}</span></td></tr>'
        )
    moved_head = '<th class="qrank-w-moved">moved</th>' if show_moved else ""
    head = f'<tr><th class="qrank-w-rank">#</th><th class="qrank-w-score">score</th>{moved_head}<th>document</th></tr>'
    return (
        f'{head_html}<table class="qrank-table qrank-search" id="{html.escape(table_id)}"><thead>{head}</thead>'
        f'<tbody>{"".join(body)}</tbody></table>'
    )


def error_box(message: str) -> str:
    """A readable error for the page (escaped; never a traceback)."""
    return f'<div class="qrank-error" role="alert"><b>Error:</b> {html.escape(message)}</div>'


def unopened_collections(entries: Sequence[CollectionEntry]) -> str:
    """A line naming the collections that cannot be opened, each with its status and reason (escaped), or ""
    when there are none: the picker leaves them out, and this says so rather than hiding them silently.

    >>> note = unopened_collections([CollectionEntry("notes", "corrupt", "store.sqlite is <empty>")])
    >>> "1 collection could not be opened" in note, "<b>notes</b> (corrupt: store.sqlite is &lt;empty&gt;)" in note
    (True, True)
    """
    if not entries:
        return ""
    items = "; ".join(f"<b>{html.escape(c.name)}</b> ({html.escape(c.status)}: "
                      f"{html.escape(c.reason or 'no reason given')})" for c in entries)
    n = len(entries)
    return (f'<div class="qrank-note" role="status">{n} collection{"" if n == 1 else "s"} could not be opened: '
            f"{items}. See <code>qrank index check NAME</code>.</div>")


def _bar(width: float) -> str:
    pct = max(0.0, min(1.0, width)) * 100
    return f'<td><div class="qrank-bar"><div style="width:{pct:.1f}%"></div></div></td>'


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
