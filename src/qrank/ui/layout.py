"""The Gradio page: four tabs bound to the handlers of :mod:`qrank.ui.handlers`.

:func:`build_ui` makes the ``gr.Blocks``; :func:`launch_ui` serves it alone (``qrank ui``);
:func:`mount_ui` adds it to an existing FastAPI app (``qrank serve --ui`` at ``/ui``).

>>> import tempfile
>>> settings = Settings(home=tempfile.mkdtemp())
>>> blocks = build_ui(LocalBackend.from_sources(settings, rerankers=["../shared/models/scifact-minilm-ce"]))

``launch_ui(blocks, settings)`` serves it until interrupted (tests/integration/test_ui_browser.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import require
from ..settings import Settings
from . import handlers, render
from .backend import LocalBackend, UIBackend, display_name

log = logging.getLogger(__name__)

EXAMPLE_QUERY = "Vitamin D deficiency raises the risk of respiratory infections."
EXAMPLE_DOCUMENTS = "\n".join(
    [
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        "Low serum vitamin D levels were associated with more frequent upper respiratory tract infections in adults.",
        "Regular exercise improves cardiovascular health and lowers blood pressure.",
        "Vitamin D supplementation reduced acute respiratory infections, most of all in deficient participants.",
        "Photosynthesis converts light energy into chemical energy in plants.",
    ]
)
_COLUMN_TITLES = {"bm25": "BM25", "dense": "Embedding only", "hybrid": "Hybrid (embedding + BM25, RRF)"}


def _gradio():
    return require("gradio", "ui")


def theme():
    """A theme on system fonts: the page loads nothing from outside the server."""
    gr = _gradio()
    return gr.themes.Soft(
        font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


class Bindings:
    """Widget values in, widget values out: each method calls one handler and formats its view."""

    def __init__(self, backend: UIBackend, *, report_dir: Path | None = None, max_documents: int = 1000) -> None:
        self.backend = backend
        self.report_dir = report_dir
        self.max_documents = max_documents

    def rerank(self, query, instruction, documents, upload, model, top_n, long_documents=None):
        view = handlers.playground(
            self.backend, query=query, instruction=instruction, documents=documents, upload=upload, model=model,
            top_n=top_n, max_documents=self.max_documents, long_documents=long_documents,
        )
        if view.error:
            return render.error_box(view.error), "", None
        status = f"**{len(view.rows)}** documents ranked by `{view.model}` in **{view.latency_ms:.1f} ms**"
        return render.ranked_table(view.rows, table_id="ranked"), status, view.payload

    def compare(self, query, instruction, documents, upload, model_a, model_b, top_n):
        view = handlers.compare(
            self.backend, query=query, instruction=instruction, documents=documents, upload=upload,
            model_a=model_a, model_b=model_b, top_n=top_n, max_documents=self.max_documents,
        )
        if view.error:
            return render.error_box(view.error), "", ""
        return (
            render.ranked_table(view.rows_a, table_id="compare-a"),
            render.ranked_table(view.rows_b, table_id="compare-b"),
            _agreement_markdown(view),
        )

    def search(self, collection, query, k, candidates, hybrid, reranker, embedder, progress=None):
        say = None if progress is None else (lambda text: progress(None, desc=text))  # gr.Progress: text, no bar
        view = handlers.search(self.backend, collection=collection, query=query, k=k, candidates=candidates,
                               hybrid=hybrid, reranker=reranker, embedder=embedder, progress=say)
        if view.error:
            box = render.error_box(view.error)
            return box, "", ""
        cols = []
        for key, title in (("bm25", "BM25"), ("first_stage", _COLUMN_TITLES[view.first_stage]),
                           ("reranked", f"{_COLUMN_TITLES[view.first_stage]} + rerank")):
            latency = view.latency_ms.get(key)
            note = " · ".join(
                x for x in (f"{latency:.1f} ms" if latency is not None else "", view.notes.get(key, "")) if x
            )
            cols.append(
                render.search_table(view.columns.get(key, []), table_id=f"search-{key}", title=title, note=note)
            )
        return tuple(cols)

    def models(self):
        """Fresh model choices for every picker (a server may have started after the page was built)."""
        gr = _gradio()
        rr = [(display_name(n), n) for n in self.backend.reranker_names()]
        em = [(display_name(n), n) for n in self.backend.embedder_names()]
        first = rr[0][1] if rr else None
        second = rr[1][1] if len(rr) > 1 else first
        return (
            gr.update(choices=rr, value=first),
            gr.update(choices=rr, value=first),
            gr.update(choices=rr, value=second),
            gr.update(choices=rr, value=first),
            gr.update(choices=em, value=None),
        )

    def collections(self):
        """The collection picker's choices and a line under it when there are none (or they cannot be listed);
        collections that cannot be opened are not offered, and the line names them with why."""
        gr = _gradio()
        try:
            self.backend.refresh()
            entries = self.backend.collections()
        except Exception as exc:  # noqa: BLE001 — a missing index extra or an unreachable server is shown, not raised
            log.warning("cannot list collections: %s", exc)
            return gr.update(choices=[], value=None), render.error_box(f"cannot list collections: {exc}")
        names = [c.name for c in entries if c.status == "ok"]
        note = render.unopened_collections([c for c in entries if c.status != "ok"])
        if not entries:
            note = "No collection yet: build one with `qrank index` (see docs/index.md), then press ↻."
        return gr.update(choices=names, value=names[0] if names else None), note

    def evaluation(self, selected=None):
        gr = _gradio()
        view = handlers.evaluation(self.report_dir, selected)
        if view.error or not view.report:
            text = render.error_box(view.error) if view.error else view.message
            return gr.update(choices=[], value=None), text, None, None, ""
        rep = view.report
        table = {"headers": rep.header, "data": rep.rows}
        plot = str(rep.plot) if rep.plot else None
        choices = [(_relative(c, self.report_dir), c) for c in view.choices]
        return gr.update(choices=choices, value=view.selected), rep.summary, table, plot, rep.markdown


def _relative(path: str, root: Path | None) -> str:
    try:
        return str(Path(path).relative_to(root)) if root else path
    except ValueError:
        return path


def _agreement_markdown(view) -> str:
    a = view.agreement

    def fmt(x):
        return "–" if x is None else f"{x:+.3f}"

    return (
        f"**Rank agreement** over all {a['n']} documents: Kendall τ **{fmt(a['kendall_tau'])}**, "
        f"Spearman ρ **{fmt(a['spearman_rho'])}**, top-{a['k']} overlap **{a['top_k_overlap']:.0%}**, "
        f"same best document: **{'yes' if a['top1_same'] else 'no'}**  \n"
        f"`{view.model_a}` {view.latency_a_ms:.1f} ms · `{view.model_b}` {view.latency_b_ms:.1f} ms"
    )


def build_ui(
    backend: UIBackend, *, report_dir: str | Path | None = None, max_documents: int = 1000, title: str = "qrank"
):
    """The ``gr.Blocks`` of the whole page, calling ``backend`` for every answer.

    >>> import tempfile
    >>> settings = Settings(home=tempfile.mkdtemp())
    >>> backend = LocalBackend(settings, rerankers={"ce": "../shared/models/scifact-minilm-ce"})
    >>> blocks = build_ui(backend, report_dir=tempfile.mkdtemp())
    """
    gr = _gradio()
    b = Bindings(backend, report_dir=Path(report_dir).expanduser() if report_dir else None, max_documents=max_documents)
    rerankers = [(display_name(n), n) for n in backend.reranker_names()]
    embedders = [(display_name(n), n) for n in backend.embedder_names()]
    first = rerankers[0][1] if rerankers else None
    second = rerankers[1][1] if len(rerankers) > 1 else first

    with gr.Blocks(title=title, analytics_enabled=False) as blocks:
        gr.Markdown(f"# qrank\nTwo-stage retrieval: an embedder finds candidates, a reranker orders them. "
                    f"Answers come from {backend.describe()}.")
        with gr.Tab("Rerank playground", id="playground"):
            with gr.Row():
                with gr.Column(scale=3):
                    pg_query = gr.Textbox(label="Query", placeholder="What are you looking for?", elem_id="pg-query")
                    pg_instr = gr.Textbox(
                        label="Reranker instruction (optional; Qwen3 rerankers)", elem_id="pg-instruction",
                        placeholder="e.g. Given a web search query, retrieve relevant passages that answer the query",
                    )
                    pg_docs = gr.Textbox(label="Documents, one per line", lines=8, max_lines=30, elem_id="pg-docs")
                with gr.Column(scale=1, min_width=240):
                    pg_model = gr.Dropdown(rerankers, value=first, label="Reranker", elem_id="pg-model")
                    pg_top = gr.Number(value=0, precision=0, minimum=0, label="top_n (0 = all)", elem_id="pg-topn")
                    pg_long = gr.Dropdown(["default", "chunk", "truncate", "error"], value="default",
                                          label="Documents longer than the window", elem_id="pg-long")
                    pg_file = gr.File(label="…or upload documents (.txt one per line, .jsonl with 'text')",
                                      file_types=[".txt", ".jsonl"], type="filepath", elem_id="pg-file")
                    pg_run = gr.Button("Rerank", variant="primary", elem_id="pg-run")
            gr.Examples([[EXAMPLE_QUERY, EXAMPLE_DOCUMENTS]], inputs=[pg_query, pg_docs], label="Example")
            pg_status = gr.Markdown(elem_id="pg-status")
            pg_out = gr.HTML(render.ranked_table([]), elem_id="pg-results", js_on_load=None)
            with gr.Accordion("Raw JSON", open=False, elem_id="pg-json-panel"):
                pg_json = gr.JSON(elem_id="pg-json")
            pg_inputs = [pg_query, pg_instr, pg_docs, pg_file, pg_model, pg_top, pg_long]
            pg_run.click(b.rerank, pg_inputs, [pg_out, pg_status, pg_json])
            pg_query.submit(b.rerank, pg_inputs, [pg_out, pg_status, pg_json])

        with gr.Tab("Search", id="search"):
            with gr.Row():
                s_coll = gr.Dropdown([], label="Collection", elem_id="s-collection", scale=2)
                s_refresh = gr.Button("↻ Refresh", scale=0, min_width=90)
                s_k = gr.Number(value=10, precision=0, minimum=1, maximum=1000, label="hits per column", scale=1)
                s_cand = gr.Number(
                    value=0,
                    precision=0,
                    minimum=0,
                    maximum=10_000,
                    label="candidates reranked (0 = default)",
                    scale=1,
                    elem_id="s-candidates",
                )
                s_hybrid = gr.Checkbox(
                    label="Hybrid first stage (embedding + BM25)", value=False, elem_id="s-hybrid", scale=1
                )
            with gr.Row():
                s_query = gr.Textbox(label="Query", elem_id="s-query", scale=4)
                s_rr = gr.Dropdown(rerankers, value=first, label="Reranker", scale=1)
                s_em = gr.Dropdown(embedders, value=None, label="Embedder (empty: the collection's own)", scale=1)
            s_run = gr.Button("Search", variant="primary", elem_id="s-run")
            s_note = gr.Markdown(elem_id="s-note")
            with gr.Row(equal_height=False):
                s_cols = [gr.HTML(elem_id=f"s-col-{i}", js_on_load=None) for i in range(3)]
            s_inputs = [s_coll, s_query, s_k, s_cand, s_hybrid, s_rr, s_em]
            def search_with_progress(coll, query, k, cand, hybrid, rr, em, progress=gr.Progress()):  # noqa: B008
                # Gradio hands a progress tracker to a parameter defaulting to gr.Progress(): its text replaces
                # the bare "processing" while the first search opens the collection and loads models
                return b.search(coll, query, k, cand, hybrid, rr, em, progress=progress)

            s_run.click(search_with_progress, s_inputs, s_cols)
            s_query.submit(search_with_progress, s_inputs, s_cols)
            s_refresh.click(b.collections, None, [s_coll, s_note])

        with gr.Tab("Compare models", id="compare"):
            with gr.Row():
                with gr.Column(scale=3):
                    c_query = gr.Textbox(label="Query", elem_id="c-query")
                    c_instr = gr.Textbox(label="Reranker instruction (optional; Qwen3 rerankers)")
                    c_docs = gr.Textbox(label="Documents, one per line", lines=8, max_lines=30, elem_id="c-docs")
                with gr.Column(scale=1, min_width=240):
                    c_a = gr.Dropdown(rerankers, value=first, label="Reranker A", elem_id="c-model-a")
                    c_b = gr.Dropdown(rerankers, value=second, label="Reranker B", elem_id="c-model-b")
                    c_top = gr.Number(value=5, precision=0, minimum=0, label="show top k (and top-k overlap)")
                    c_file = gr.File(label="…or upload documents", file_types=[".txt", ".jsonl"], type="filepath")
                    c_run = gr.Button("Compare", variant="primary", elem_id="c-run")
            gr.Examples([[EXAMPLE_QUERY, EXAMPLE_DOCUMENTS]], inputs=[c_query, c_docs], label="Example")
            c_agree = gr.Markdown(elem_id="c-agreement")
            with gr.Row(equal_height=False):
                with gr.Column():
                    gr.Markdown("### Reranker A")
                    c_out_a = gr.HTML(elem_id="c-out-a", js_on_load=None)
                with gr.Column():
                    gr.Markdown("### Reranker B")
                    c_out_b = gr.HTML(elem_id="c-out-b", js_on_load=None)
            c_run.click(b.compare, [c_query, c_instr, c_docs, c_file, c_a, c_b, c_top], [c_out_a, c_out_b, c_agree])

        with gr.Tab("Evaluation", id="evaluation"):
            with gr.Row():
                e_pick = gr.Dropdown([], label="Report (newest first)", elem_id="e-report", scale=4)
                e_refresh = gr.Button("↻ Refresh", scale=0, min_width=90, elem_id="e-refresh")
            e_summary = gr.Markdown(elem_id="e-summary")
            e_table = gr.Dataframe(label="Quality and cost", interactive=False, elem_id="e-table")
            e_plot = gr.Image(label="Quality vs latency", type="filepath", interactive=False, elem_id="e-plot")
            with gr.Accordion("Full report", open=False):
                e_md = gr.Markdown()
            e_outputs = [e_pick, e_summary, e_table, e_plot, e_md]
            e_refresh.click(b.evaluation, None, e_outputs)
            e_pick.input(b.evaluation, e_pick, e_outputs)

        blocks.load(b.models, None, [pg_model, c_a, c_b, s_rr, s_em])
        blocks.load(b.collections, None, [s_coll, s_note])
        blocks.load(b.evaluation, None, e_outputs)
    return blocks


def launch_ui(blocks, settings: Settings, *, block: bool = True, announce=None, **launch_kw: Any):
    """Serve the page on ``settings.ui.host``:``settings.ui.port``; never a share link, never telemetry.

    The page is announced (``announce(url)``, e.g. a print) only once the port is really listening; a busy
    port is one ``QrankError`` line, not Gradio's traceback. Gradio's own prints (its "share=True" hint)
    stay quiet."""
    from ..errors import QrankError

    try:
        result = blocks.launch(
            server_name=settings.ui.host,
            server_port=settings.ui.port,
            share=False,
            show_error=False,
            ssr_mode=False,
            prevent_thread_lock=True,
            quiet=True,
            theme=theme(),
            css=render.CSS,
            footer_links=["api", "settings"],
            allowed_paths=_allowed_paths(settings),
            **launch_kw,
        )
    except OSError as exc:
        raise QrankError(f"cannot listen on {settings.ui.host}:{settings.ui.port}: the port is in use (is another "
                         "UI or server running there? choose another port with --port)") from exc
    if announce is not None:
        announce(blocks.local_url)
    if block:
        blocks.block_thread()
    return result


def mount_ui(
    app,
    settings: Settings,
    *,
    backend: UIBackend | None = None,
    rerankers: dict[str, Any] | None = None,
    embedders: dict[str, Any] | None = None,
    path: str = "/ui",
):
    """Add the page to a FastAPI ``app`` at ``path`` (``qrank serve --ui``) and return the app.

    Give ``backend``, or the server's loaded facades by public name (``rerankers={"name": Reranker}``),
    so that the page uses the models already in memory; with neither, ``settings.ui.server_url`` is
    called if set.

    >>> import tempfile
    >>> from fastapi import FastAPI
    >>> from qrank import Reranker
    >>> reranker = Reranker.from_pretrained("../shared/models/scifact-minilm-ce")
    >>> app = mount_ui(FastAPI(), Settings(home=tempfile.mkdtemp()), rerankers={"ce": reranker})
    >>> "/ui" in {getattr(route, "path", None) for route in app.routes}
    True
    """
    gr = _gradio()
    if backend is None:
        if rerankers is None and embedders is None and settings.ui.server_url:
            from .remote import RemoteBackend

            backend = RemoteBackend(settings.ui.server_url, api_key=settings.server.api_key)
        else:
            backend = LocalBackend(settings, rerankers=rerankers, embedders=embedders)
    blocks = build_ui(backend, report_dir=report_dir_of(settings), max_documents=settings.ui.max_documents)
    _relative_redirect(app, path)
    return gr.mount_gradio_app(
        app, blocks, path=path, theme=theme(), css=render.CSS, show_error=False, ssr_mode=False,
        footer_links=["api", "settings"], allowed_paths=_allowed_paths(settings),
    )


def _relative_redirect(app, path: str) -> None:
    """``GET /ui`` → ``/ui/`` by a relative Location: the router's own slash redirect would copy the
    request's Host header into an absolute URL (a forged Host would send the browser elsewhere)."""
    from starlette.responses import RedirectResponse

    async def to_slash() -> RedirectResponse:
        return RedirectResponse(path.rstrip("/") + "/", status_code=307)

    app.add_api_route(path.rstrip("/"), to_slash, methods=["GET", "HEAD"], include_in_schema=False)


def report_dir_of(settings: Settings) -> Path:
    """Where the evaluation tab looks: ``settings.ui.report_dir`` (a root or one report folder) or
    ``<home>/reports``, where ``qrank eval`` writes by default."""
    from ..eval.report import reports_root

    return Path(settings.ui.report_dir).expanduser() if settings.ui.report_dir else reports_root(settings.home)


def _allowed_paths(settings: Settings) -> list[str]:
    # the evaluation plot is served from the report folder; nothing else on disk is exposed
    return [str(report_dir_of(settings))]
