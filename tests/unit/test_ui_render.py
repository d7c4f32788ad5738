"""The UI's HTML: parsed back with the standard library's HTML parser, user text never becomes markup."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from qrank.ui import render
from qrank.ui.agreement import agreement, top_k
from qrank.ui.views import RankedRow, SearchRow


class _Table(HTMLParser):
    """Collects the rows of a table as lists of cell texts, plus every start tag seen."""

    def __init__(self):
        super().__init__()
        self.rows, self.tags, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td":
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> _Table:
    t = _Table()
    t.feed(html)
    return t


def test_ranked_table_rows_and_escaping():
    evil = '<script>alert("x")</script> & <b>bold</b>'
    rows = [RankedRow(1, 2, 0.9, "best"), RankedRow(2, 0, 0.5, evil), RankedRow(3, 1, 0.1, "worst")]
    t = _parse(render.ranked_table(rows))
    body = [r for r in t.rows if r]  # the header row has th cells only
    assert [r[0] for r in body] == ["1", "2", "3"]
    assert [r[3] for r in body] == ["3", "1", "2"]  # "was": 1-based input position
    assert body[0][4] == "▲ 2" and body[1][4] == "▼ 1" and body[2][4] == "▼ 1"
    assert body[1][5] == evil  # shown as text...
    assert not any(tag in ("script", "b") for tag, _ in t.tags)  # ...never as markup
    widths = [a["style"] for tag, a in t.tags if tag == "div" and "style" in a]
    assert widths == ["width:90.0%", "width:50.0%", "width:10.0%"]


def test_bar_widths_probabilities_kept_logits_scaled():
    assert render.bar_widths([0.2, 0.8]) == [0.2, 0.8]
    assert render.bar_widths([-1.0, 3.0, 1.0]) == [0.0, 1.0, 0.5]
    assert render.bar_widths([5.0, 5.0]) == [1.0, 1.0]
    assert render.bar_widths([]) == []
    assert render.bar_widths([0.0323, 0.0161], relative=True) == pytest.approx([1.0, 0.4984520123839009])
    assert render.bar_widths([-1.0, 1.0], relative=True) == [0.0, 1.0]  # logits: min-max either way


def test_search_table_marks_moves_and_new_hits():
    rows = [
        SearchRow(1, "d7", 0.95, "seven", reranked=True, first_stage_rank=4),
        SearchRow(2, "d1", 0.60, "one", reranked=True, first_stage_rank=1),
        SearchRow(3, "d9", 0.40, "nine", title="T9", reranked=True, first_stage_rank=None),
    ]
    t = _parse(render.search_table(rows, table_id="x", title="Embedding + rerank"))
    body = [r for r in t.rows if r]
    assert [r[2] for r in body] == ["▲ 3", "▼ 1", "new"]
    assert body[2][3] == "d9 T9nine" and body[0][1] == "0.9500"
    plain = _parse(render.search_table([SearchRow(1, "d1", 3.2, "one")], table_id="y", title="BM25"))
    assert [r for r in plain.rows if r][0][2] == "d1 one"  # no "moved" column outside the reranked list


def test_error_box_escapes():
    html = render.error_box("documents: <none>")
    assert "&lt;none&gt;" in html and 'role="alert"' in html


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_and_overlap(k):
    a, b = [0.1, 0.9, 0.5, 0.7], [0.9, 0.8, 0.1, 0.7]
    assert top_k(a, 4) == [1, 3, 2, 0]
    res = agreement(a, b, k)
    assert res["top_k_overlap"] == len(set(top_k(a, k)) & set(top_k(b, k))) / k


def test_agreement_of_constant_scores_is_undefined_not_nan():
    res = agreement([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], k=2)
    assert res["kendall_tau"] is None and res["spearman_rho"] is None
    assert agreement([1.0], [2.0], k=3)["k"] == 1
