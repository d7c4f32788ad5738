"""The UI's handlers with real models: rankings checked against the facades' own scores, agreement
against brute-force statistics, errors as readable sentences."""

from __future__ import annotations

import itertools
import json
import socket

import numpy as np
import pytest

from qrank import Settings
from qrank.ui import handlers
from qrank.ui.backend import LocalBackend

QUERY = "Vitamin D deficiency raises the risk of respiratory infections."
PLANTED = "Low serum vitamin D levels were associated with more frequent upper respiratory tract infections in adults."
DOCS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Regular exercise improves cardiovascular health and lowers blood pressure.",
    PLANTED,
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Glaciers in the Alps have been retreating for over a century.",
]


@pytest.fixture(scope="module")
def backend(ce, ce_dir, random_ce_dir):
    # "ce" is already loaded (the session fixture); "random" loads on first use through the backend
    return LocalBackend(Settings(), rerankers={"ce": ce, "random": str(random_ce_dir)})


def test_playground_ranks_like_the_reranker_and_reports_movement(backend, ce):
    view = handlers.playground(backend, query=QUERY, documents="\n".join(DOCS), model="ce")
    assert view.error is None
    expected = np.argsort(-np.asarray(ce.score(QUERY, DOCS)), kind="stable")
    assert [r.index for r in view.rows] == expected.tolist()
    assert view.rows[0].document == PLANTED
    for rank, row in enumerate(view.rows, 1):
        assert row.rank == rank
        assert row.document == DOCS[row.index]
        assert row.moved == row.index - (rank - 1)
    assert view.rows[0].moved == 2  # third in, first out
    assert view.latency_ms > 0
    payload = json.loads(json.dumps(view.payload))  # the raw JSON panel must be plain JSON
    assert [r["index"] for r in payload["results"]] == [r.index for r in view.rows]
    assert payload["results"][0]["score"] == pytest.approx(max(ce.score(QUERY, DOCS)), abs=1e-6)


def test_playground_top_n_blank_lines_and_upload(backend, tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"title": "Vitamin D", "text": t}) for t in DOCS[:2]) + "\n", encoding="utf-8"
    )
    view = handlers.playground(
        backend, query=QUERY, documents="\n\n" + PLANTED + "\n   \n", upload=str(jsonl), model="ce", top_n=2.0
    )
    assert view.error is None
    assert len(view.rows) == 2
    # file documents come first, then the pasted one: the planted document was input #3
    assert view.rows[0].index == 2 and view.rows[0].document == PLANTED
    assert view.payload["top_n"] == 2


def test_playground_instruction_reaches_the_model(qwen3_reranker):
    backend = LocalBackend(Settings(), rerankers={"qwen": qwen3_reranker})
    instruction = "Judge whether the document is about geography"
    with_instr = handlers.playground(
        backend, query=QUERY, documents="\n".join(DOCS), model="qwen", instruction=instruction
    )
    plain = handlers.playground(backend, query=QUERY, documents="\n".join(DOCS), model="qwen", instruction="  ")
    ref = qwen3_reranker.score(QUERY, DOCS, instruction=instruction)
    got = {r.index: r.score for r in with_instr.rows}
    assert [got[i] for i in range(len(DOCS))] == pytest.approx(ref, abs=1e-6)
    ref_plain = qwen3_reranker.score(QUERY, DOCS)
    assert {r.index: r.score for r in plain.rows} == pytest.approx(dict(enumerate(ref_plain)), abs=1e-6)
    assert with_instr.payload["instruction"] == instruction and plain.payload["instruction"] is None


@pytest.mark.parametrize(
    ("kwargs", "field_words"),
    [
        ({"documents": "  \n \n"}, "documents"),
        ({"query": "   "}, "query"),
        ({"top_n": -1}, "top_n"),
        ({"top_n": 2.5}, "top_n"),
        ({"model": "nope"}, "choose one of: ce, random"),
    ],
)
def test_playground_errors_are_sentences(backend, kwargs, field_words):
    args = {"query": QUERY, "documents": "\n".join(DOCS), "model": "ce", **kwargs}
    view = handlers.playground(backend, **args)
    assert view.rows == [] and view.error
    assert field_words in view.error
    assert "Traceback" not in view.error


def test_playground_limits_documents_and_reads_bad_uploads(backend, tmp_path):
    view = handlers.playground(backend, query=QUERY, documents="\n".join(DOCS), model="ce", max_documents=3)
    assert "at most 3" in view.error
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    view = handlers.playground(backend, query=QUERY, documents="", upload=str(bad), model="ce")
    assert view.error.startswith("documents:") and "bad.jsonl:2" in view.error


def test_no_reranker_configured_says_how_to_start():
    view = handlers.playground(LocalBackend(Settings()), query=QUERY, documents="a", model=None)
    assert "--reranker" in view.error


def test_server_down_is_a_readable_error():
    from qrank.ui.remote import RemoteBackend

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = RemoteBackend(f"http://127.0.0.1:{port}", timeout=5)
    assert backend.reranker_names() == []
    view = handlers.playground(backend, query=QUERY, documents="\n".join(DOCS), model="any")
    assert view.rows == []
    assert "cannot reach the server" in view.error and str(port) in view.error


def _kendall_tau_b(a, b):
    """Kendall's tau-b by counting pairs (independent of scipy)."""
    conc = disc = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif da == db:
            conc += 1
        else:
            disc += 1
    return (conc - disc) / np.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))


def _spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def test_compare_agreement_matches_brute_force(backend, ce):
    view = handlers.compare(backend, query=QUERY, documents="\n".join(DOCS), model_a="ce", model_b="random", top_n=3)
    assert view.error is None
    a = ce.score(QUERY, DOCS)
    b = backend.model("reranker", "random").score(QUERY, DOCS)
    assert view.agreement["kendall_tau"] == pytest.approx(_kendall_tau_b(a, b), abs=1e-9)
    assert view.agreement["spearman_rho"] == pytest.approx(_spearman(a, b), abs=1e-9)
    top_a = set(np.argsort(-np.asarray(a))[:3].tolist())
    top_b = set(np.argsort(-np.asarray(b))[:3].tolist())
    assert view.agreement["top_k_overlap"] == pytest.approx(len(top_a & top_b) / 3)
    assert [r.index for r in view.rows_a] == np.argsort(-np.asarray(a))[:3].tolist()
    assert [r.index for r in view.rows_b] == np.argsort(-np.asarray(b))[:3].tolist()
    assert view.latency_a_ms > 0 and view.latency_b_ms > 0


def test_compare_a_model_with_itself_agrees_fully(backend):
    view = handlers.compare(backend, query=QUERY, documents="\n".join(DOCS), model_a="ce", model_b="ce", top_n=None)
    assert view.agreement["kendall_tau"] == pytest.approx(1.0)
    assert view.agreement["spearman_rho"] == pytest.approx(1.0)
    assert view.agreement["top_k_overlap"] == 1.0 and view.agreement["top1_same"]
    assert view.agreement["k"] == 5  # default shown when top_n is empty
    assert view.rows_a == view.rows_b


def test_compare_needs_two_models(backend):
    view = handlers.compare(backend, query=QUERY, documents="a\nb", model_a="ce", model_b=None)
    assert "two rerankers" in view.error
