"""The UI's handler functions: widget values in, plain views out (see :mod:`qrank.ui.views`).

They hold no model logic (they call a :class:`~qrank.ui.backend.UIBackend`) and no Gradio code (the
layout binds them to widgets), so tests call them with a real backend and read the views. Every error a
user can cause (no documents, unknown model, server down) comes back as ``view.error``, a sentence for
the page; unexpected failures are logged with their traceback and shown as one line.

>>> import tempfile
>>> from qrank.settings import Settings
>>> from qrank.ui.backend import LocalBackend
>>> backend = LocalBackend(Settings(home=tempfile.mkdtemp()), rerankers={"ce": "../shared/models/scifact-minilm-ce"})
>>> view = playground(backend, query="vitamin d", documents="a\\nb", model="ce")
>>> view.rows[0].rank, view.latency_ms > 0
(1, True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import InvalidInput, QrankError
from ..long_documents import scored_part
from .agreement import agreement
from .backend import Hit, UIBackend
from .views import CompareView, EvalView, PlaygroundView, RankedRow, SearchRow, SearchView

log = logging.getLogger(__name__)

V = TypeVar("V")


def parse_documents(text: str | None, upload: str | Path | None = None, *, max_documents: int = 1000) -> list[str]:
    """Documents from the text box (one per line, blank lines skipped) followed by those of an uploaded
    file (``.txt`` one per line, ``.jsonl`` with a ``text`` field, as ``qrank rerank --documents``).

    >>> parse_documents("first\\n\\n  second  \\n")
    ['first', '  second  ']
    """
    docs = [line for line in (text or "").splitlines() if line.strip()]
    if upload:
        from ..cli.core import read_documents

        # the trailing "" keeps read_documents from answering with its CLI wording when both are empty
        docs = [d for d in read_documents(str(upload), [*docs, ""]) if d.strip()]
    if not docs:
        raise InvalidInput("documents", "paste at least one document (one per line) or upload a .txt / .jsonl file")
    if len(docs) > max_documents:
        raise InvalidInput("documents", f"{len(docs)} documents; this UI takes at most {max_documents} per request")
    return docs


def parse_top_n(value, n: int) -> int | None:
    """``None`` (all) for an empty or zero box; else a positive whole number.

    >>> parse_top_n(3.0, 10), parse_top_n(None, 10), parse_top_n(0, 10)
    (3, None, None)
    """
    if value is None or value == "" or value == 0:
        return None
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise InvalidInput("top_n", f"must be a whole number, got {value!r}") from None
    if as_float != int(as_float) or as_float < 0:
        raise InvalidInput("top_n", f"must be a positive whole number (0 = all), got {value!r}")
    return min(int(as_float), n)


def _report(r) -> dict:
    """A result's long-document fields for the raw JSON (none when the model gave no layout)."""
    if getattr(r, "span", None) is None:
        return {}
    return {"span": r.span._asdict(), "chunks": r.chunks, "tokens": r.tokens, "truncated": r.truncated}


def playground(
    backend: UIBackend,
    *,
    query: str,
    documents: str | None,
    model: str | None,
    instruction: str | None = None,
    top_n=None,
    upload: str | Path | None = None,
    max_documents: int = 1000,
    long_documents: str | None = None,
) -> PlaygroundView:
    """Rerank pasted (or uploaded) documents with one model; rows best first with their original place.

    ``long_documents`` ("chunk", "truncate", "error"; None or "default" = the model's policy) is what the
    reranker does with a document longer than its window; rows and payload say what was scored."""

    def run() -> PlaygroundView:
        _need_query(query)
        docs = parse_documents(documents, upload, max_documents=max_documents)
        n = parse_top_n(top_n, len(docs))
        start = time.perf_counter()
        policy = {"long_documents": long_documents} if long_documents and long_documents != "default" else {}
        results = backend.rerank(model or "", query, docs, top_n=n, instruction=(instruction or "").strip() or None,
                                 **policy)
        latency = (time.perf_counter() - start) * 1000
        rows = [RankedRow(rank=i + 1, index=r.index, score=float(r.score), document=docs[r.index],
                          scored=scored_part(r) if r.chunks and (r.chunks > 1 or r.truncated) else "")
                for i, r in enumerate(results)]
        payload = {
            "model": model,
            "query": query,
            "instruction": (instruction or "").strip() or None,
            "top_n": n,
            "latency_ms": round(latency, 2),
            "long_documents": policy.get("long_documents"),
            "results": [{"index": r.index, "score": r.score, "document": r.document, **_report(res)}
                        for r, res in zip(rows, results)],
        }
        return PlaygroundView(rows=rows, payload=payload, latency_ms=latency, model=model or "")

    return _guarded(run, PlaygroundView)


def compare(
    backend: UIBackend,
    *,
    query: str,
    documents: str | None,
    model_a: str | None,
    model_b: str | None,
    instruction: str | None = None,
    top_n=None,
    upload: str | Path | None = None,
    max_documents: int = 1000,
) -> CompareView:
    """The same query and documents through two rerankers, the top of each, and their rank agreement.

    Agreement is measured over *all* documents (each model scores every one); ``top_n`` (default 5) cuts
    only what is shown and sets k of the top-k overlap.
    """

    def run() -> CompareView:
        _need_query(query)
        if not model_a or not model_b:
            raise InvalidInput("model", "choose two rerankers to compare")
        docs = parse_documents(documents, upload, max_documents=max_documents)
        k = parse_top_n(top_n, len(docs)) or min(5, len(docs))
        instr = (instruction or "").strip() or None
        full, latency = {}, {}
        for name in (model_a, model_b):
            start = time.perf_counter()
            full[name] = backend.rerank(name, query, docs, top_n=None, instruction=instr)
            latency[name] = (time.perf_counter() - start) * 1000
        scores = {name: _scores_in_input_order(results, len(docs)) for name, results in full.items()}
        rows = {
            name: [
                RankedRow(rank=i + 1, index=r.index, score=float(r.score), document=docs[r.index])
                for i, r in enumerate(res[:k])
            ]
            for name, res in full.items()
        }
        return CompareView(
            model_a=model_a,
            model_b=model_b,
            rows_a=rows[model_a],
            rows_b=rows[model_b],
            agreement=agreement(scores[model_a], scores[model_b], k),
            latency_a_ms=latency[model_a],
            latency_b_ms=latency[model_b],
        )

    return _guarded(run, CompareView)


def search(
    backend: UIBackend,
    *,
    collection: str | None,
    query: str,
    k=10,
    candidates=None,
    hybrid: bool = False,
    reranker: str | None = None,
    embedder: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SearchView:
    """BM25, the first stage (dense, or dense+BM25 fused when ``hybrid``) and the reranked list, side by side.

    ``candidates`` is how many first-stage documents the reranker sees (empty or 0: the settings' default).

    The reranked column marks how far each hit moved from its place in the first stage's full candidate
    list (*new* only when the first stage did not return it at all). ``progress(text)`` hears what is being
    done while it runs (the first search opens the collection and loads models).
    """

    def run() -> SearchView:
        if not collection:
            raise InvalidInput("collection", "choose a collection (build one with `qrank index`)")
        _need_query(query)
        kk = _positive_or_none(k, "k") or 10
        depth = _positive_or_none(candidates, "candidates")
        extra = {"progress": progress} if progress is not None else {}
        res = backend.search(collection, query, k=kk, candidates=depth, hybrid=bool(hybrid), reranker=reranker or None,
                             embedder=embedder or None, **extra)
        first_rank = {h.doc_id: i + 1 for i, h in enumerate(res.first_stage)}
        columns = {
            "bm25": _search_rows(res.bm25),
            "first_stage": _search_rows(res.first_stage[:kk]),
            "reranked": [
                SearchRow(rank=i + 1, doc_id=h.doc_id, score=h.score, text=h.text, title=h.title, reranked=True,
                          first_stage_rank=first_rank.get(h.doc_id))
                for i, h in enumerate(res.reranked or [])
            ],
        }
        notes = dict(res.notes)
        if res.reranked is None:
            notes["reranked"] = "no reranker configured"
        return SearchView(
            columns=columns, latency_ms=dict(res.latency_ms), notes=notes, first_stage=res.first_stage_name
        )

    return _guarded(run, SearchView)


def evaluation(root: str | Path | None, selected: str | None = None) -> EvalView:
    """The newest ``qrank eval`` report under ``root`` (or the ``selected`` folder among those found).

    >>> evaluation("/nonexistent").message.startswith("No evaluation report")
    True
    """
    from .reports import find_reports, load_report

    def run() -> EvalView:
        found = [str(p) for p in find_reports(Path(root) if root else None)]
        if not found:
            where = f"under `{root}`" if root else "(no report folder configured)"
            return EvalView(
                message=f"No evaluation report {where} yet. Run `qrank eval --dataset ...` (it writes under "
                "QRANK_HOME/reports, where this tab looks; `qrank ui --report-dir DIR` looks elsewhere) "
                "and press *Refresh*."
            )
        chosen = selected if selected in found else found[0]
        try:
            report = load_report(Path(chosen))
        except (OSError, ValueError) as exc:
            raise InvalidInput("report", f"cannot read {chosen}: {exc}") from exc
        return EvalView(choices=found, selected=chosen, report=report)

    return _guarded(run, EvalView)


def _positive_or_none(value, field: str) -> int | None:
    if value is None or value == "" or value == 0:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(field, f"must be a whole number, got {value!r}") from None
    if number != int(number) or not 1 <= number <= 10_000:
        raise InvalidInput(field, f"must be a whole number between 1 and 10000 (0 = default), got {value!r}")
    return int(number)


def _search_rows(hits: list[Hit]) -> list[SearchRow]:
    return [
        SearchRow(rank=i + 1, doc_id=h.doc_id, score=h.score, text=h.text, title=h.title) for i, h in enumerate(hits)
    ]


def _scores_in_input_order(results, n: int) -> list[float]:
    scores = [float("nan")] * n
    for r in results:
        scores[r.index] = float(r.score)
    if any(s != s for s in scores):
        raise QrankError("the reranker did not score every document")
    return scores


def _need_query(query: str | None) -> None:
    if not query or not query.strip():
        raise InvalidInput("query", "type a query")


def _guarded(run: Callable[[], V], view_type: Callable[..., V]) -> V:
    """Run a handler body; a user-caused error becomes ``view.error``, anything else one logged line."""
    try:
        return run()
    except QrankError as exc:
        return view_type(error=str(exc))
    except Exception as exc:  # noqa: BLE001 — the page must show a sentence, the log keeps the traceback
        log.exception("UI handler failed")
        return view_type(error=f"unexpected error ({type(exc).__name__}): {exc}. The UI's log has the details.")
