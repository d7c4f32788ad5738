"""``qrank ui``: the web page (rerank playground, search, compare, evaluation) on its own port."""

from __future__ import annotations

import argparse
import logging
import os

from .common import add_settings_flags, settings_from_args

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="serve the web UI (Gradio)",
        description="Serve the web UI: a rerank playground, collection search (BM25 / embedding / embedding + "
        "rerank side by side), a two-model comparison and the latest `qrank eval` report. Models load in this "
        "process (--reranker/--embedder), or the page calls a running qrank server (--server URL). "
        "Nothing is fetched from the internet; no share link is made.",
    )
    p.add_argument(
        "--reranker",
        "-r",
        action="append",
        default=[],
        metavar="MODEL",
        help="reranker to offer (folder or hub id); repeat for several "
        "(default: the rerankers under QRANK_HOME/models)",
    )
    p.add_argument("--embedder", "-e", action="append", default=[], metavar="MODEL",
                   help="embedder for the search tab; repeat for several (default: each collection's own)")
    p.add_argument("--server", dest="ui__server_url", metavar="URL", default=None,
                   help="call this qrank server (e.g. http://127.0.0.1:8000) instead of loading models here")
    p.add_argument("--api-key", default=None, help="bearer key of that server (default: QRANK_SERVER__API_KEY)")
    p.add_argument("--home", default=None, help="qrank data directory (collections, eval reports); default QRANK_HOME")
    add_settings_flags(p, "ui", ["host", "port", "report_dir", "max_documents"])
    add_settings_flags(p, "models", ["device", "dtype", "max_length", "reranker_instruction", "query_task",
                                     "query_prompt", "instruction", "quantization", "quantization_check",
                                     "quantization_fast_accumulation",
                                     "quantization_fp8_attention", "calibrated"])
    add_settings_flags(p, "engine", ["engine", "max_batch_tokens"])
    p.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    # before gradio is imported: no telemetry and no version check from the UI process
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ..errors import require

    require("gradio", "ui")
    from ..server.run import bind_socket
    from ..ui.layout import build_ui, launch_ui, report_dir_of

    settings = settings_from_args(args)
    # a busy port fails now, in one line, before models load (Gradio binds its own socket at launch)
    bind_socket(settings.ui.host, settings.ui.port).close()
    backend = make_backend(args, settings)
    blocks = build_ui(backend, report_dir=report_dir_of(settings), max_documents=settings.ui.max_documents)

    def announce(url: str) -> None:
        from rich.console import Console

        Console(stderr=True).print(f"web UI at {url} (answers from {backend.describe()}); Ctrl-C stops",
                                   highlight=False)

    launch_ui(blocks, settings, announce=announce)
    return 0


def make_backend(args: argparse.Namespace, settings):
    """A remote backend for ``--server``, else local models (loaded now, so that a bad path fails here)."""
    from ..ui.backend import LocalBackend

    if settings.ui.server_url:
        if args.reranker or args.embedder:
            from ..errors import InvalidInput

            raise InvalidInput(
                "server", "give either --server or --reranker/--embedder: with --server the server's models are used"
            )
        from ..ui.remote import RemoteBackend

        backend = RemoteBackend(settings.ui.server_url, api_key=args.api_key or settings.server.api_key)
        backend.check()
        return backend
    rerankers = args.reranker or _discovered(settings, "reranker")
    backend = LocalBackend.from_sources(settings, rerankers=rerankers, embedders=args.embedder)
    from rich.console import Console

    console = Console(stderr=True)
    for role, names in (("reranker", backend.reranker_names()), ("embedder", backend.embedder_names())):
        for name in names:
            with console.status(f"loading {role} {name}…"):
                backend.model(role, name)
    if not backend.reranker_names():
        console.print("[yellow]no reranker given or found under QRANK_HOME/models: the playground will ask for one "
                      "(start with --reranker MODEL)[/]")
    return backend


def _discovered(settings, role: str) -> list[str]:
    from ..models.registry import list_local_models

    return [m["path"] for m in list_local_models([settings.home / "models"]) if m["role"] == role]
