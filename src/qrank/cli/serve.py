"""``qrank serve``: the HTTP server (vLLM/Cohere/Jina/TEI rerank, OpenAI/TEI embeddings)."""

from __future__ import annotations

import argparse
import logging
import sys

from .common import add_settings_flags, settings_from_args

log = logging.getLogger(__name__)

_LIST_FLAGS = ("rerankers", "embedders", "served_model_names")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve rerankers and embedders over HTTP",
        description="Serve models over HTTP: POST /v1/rerank (vLLM/Jina/Cohere), /rerank (also TEI), /v1/score, "
        "/v1/embeddings (OpenAI), /embed (TEI); GET /v1/models, /health, /ready, /metrics, /docs. Every flag is "
        "also an environment variable QRANK_<SECTION>__<NAME> (lists: comma-separated or JSON).",
        epilog="example: qrank serve --reranker Qwen/Qwen3-Reranker-0.6B --embedder Qwen/Qwen3-Embedding-0.6B "
        "--port 8000",
    )
    p.add_argument(
        "--reranker",
        dest="server__rerankers",
        action="append",
        metavar="MODEL",
        help="reranker to serve: folder or hub id (repeat for several; the first is the default)",
    )
    p.add_argument(
        "--embedder",
        dest="server__embedders",
        action="append",
        metavar="MODEL",
        help="embedder to serve: folder or hub id (repeat for several; the first is the default)",
    )
    p.add_argument(
        "--served-model-name",
        dest="server__served_model_names",
        action="append",
        metavar="NAME",
        help="public name of a model, one per model in order: rerankers first, then embedders "
        "(default: the name or path it was given)",
    )
    p.add_argument(
        "--ui", action="store_true", help="also serve the web UI at /ui, on the same models (needs the ui extra)"
    )
    ray = p.add_argument_group("scale-out on Ray Serve (needs the ray extra; see docs/deploy.md)")
    ray.add_argument(
        "--ray", action="store_true", help="deploy on Ray Serve: one deployment per model, scaled on its own"
    )
    ray.add_argument(
        "--replicas", dest="distributed__replicas", type=int, default=None, metavar="N", help="replicas per model"
    )
    ray.add_argument(
        "--autoscale", metavar="MIN:MAX", default=None, help="autoscale each model between MIN and MAX replicas"
    )
    add_settings_flags(
        p, "distributed", ["ray_address", "num_gpus_per_replica", "num_cpus_per_replica", "ingress_replicas", "retries"]
    )
    add_settings_flags(p, "server", [f for f in _server_fields() if f not in _LIST_FLAGS])
    add_settings_flags(p, "models")
    add_settings_flags(p, "engine")
    p.set_defaults(func=cmd_serve)


def _quantization_note(info) -> str:
    """The banner's words on a quantized model: the FP8 gate's numbers, int8's recipe ('' in float).

    >>> from qrank.types import ModelInfo
    >>> _quantization_note(ModelInfo("m", "cross-encoder", "reranker", 512, "float32", "cpu"))
    ''
    >>> _quantization_note(ModelInfo("m", "cross-encoder", "reranker", 512, "float32", "cpu",
    ...                              extra={"quantization": {"method": "int8", "weights": "int8 per output channel",
    ...                                                      "activations": "int8, dynamic"}}))
    ', int8: weights int8 per output channel, activations int8, dynamic'
    """
    q = info.extra.get("quantization")
    if not q:
        return ""
    if "check" not in q:  # int8 on the CPU: no gate (its quality is measured in docs/quantization.md)
        return f", {q['method']}: weights {q['weights']}, activations {q['activations']}"
    detail = f" from a {q['source']}, vs {q['reference']}" if q.get("source") else ""
    detail += " (fast accumulation)" if q.get("accumulation") == "fast" else ""
    return (f", {q['method']}{detail}: check {q['check']}, Kendall tau mean {q['tau_mean']} (min {q['tau_min']}), "
            f"top-1 {q['top1_agreement']}, max |Δ score| {q['max_abs_delta']}")


def _server_fields() -> list[str]:
    from ..settings import ServerSettings

    return list(ServerSettings.model_fields)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..errors import require

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "server")
    from rich.console import Console

    from ..server import ModelPool, create_app
    from ..server.run import bind_socket, serve, url_of

    settings = settings_from_args(args)
    if args.ray:
        return _serve_on_ray(args, settings)
    from ..server.memory import limit_malloc_arenas

    # before any model or worker thread allocates: every arena they create counts against the cap
    log.info("malloc arenas: %s", limit_malloc_arenas(settings.server.malloc_arena_max))
    if settings.engine.num_threads:
        from ..models.base import set_torch_threads

        set_torch_threads(settings.engine.num_threads)
    console = Console(stderr=True)
    s = settings.server
    sock = bind_socket(s.host, s.port)  # first: a busy port fails now, in one line, before minutes of loading
    url = url_of(s.host, sock.getsockname()[1])
    try:
        with console.status("loading models…") as status:
            pool = ModelPool.load(settings, progress=lambda msg: status.update(msg))
        pool.check(settings)
        for m in pool.models:
            console.print(
                f"[green]{m.role}[/] {m.name} ({m.info.kind}, {m.info.device}, {m.info.dtype}, max_length "
                f"{m.info.max_length})"
                + _quantization_note(m.info)
            )
        if s.host not in ("127.0.0.1", "localhost", "::1") and not s.api_key:
            console.print(
                f"[yellow]warning:[/] listening on {s.host} without --api-key: anyone who can reach it can use it"
            )
        app = create_app(settings, pool)
        if args.ui:
            from ..ui import mount_ui  # imports gradio; MissingExtra names the extra when it is absent

            facades = {
                role: {m.name: m.facade for m in pool.models if m.role == role} for role in ("reranker", "embedder")
            }
            mount_ui(app, settings, rerankers=facades["reranker"], embedders=facades["embedder"])
        # the socket is bound and listens once uvicorn starts: announcing now names an address that works
        console.print(f"serving on {url} (docs at /docs{', web UI at /ui' if args.ui else ''}); Ctrl-C stops",
                      highlight=False)
        sys.stdout.flush()
        serve(app, settings, sock)
    finally:
        sock.close()  # closing twice is harmless
    return 0


def _serve_on_ray(args: argparse.Namespace, settings) -> int:
    """``qrank serve --ray``: the same app on Ray Serve (imports Ray only here)."""
    from ..errors import InvalidInput

    if args.ui:
        raise InvalidInput("ui", "--ui is not available with --ray yet; run `qrank ui --server URL` beside it")
    if args.autoscale:
        try:
            low, high = (int(x) for x in args.autoscale.split(":"))
        except ValueError as exc:
            raise InvalidInput("autoscale", f"expected MIN:MAX, got {args.autoscale!r}") from exc
        dist = settings.distributed.model_copy(update={"autoscale_min": low, "autoscale_max": high})
        settings = settings.model_copy(update={"distributed": type(dist).model_validate(dist.model_dump())})
    from ..distributed import ray_serve

    ray_serve.run(settings, blocking=True)
    return 0
