"""``create_app(settings)``: the FastAPI app with its routes, middleware, error handlers and lifespan.

Models come from ``settings.server.rerankers`` / ``.embedders`` (loaded when the app starts) or, already
loaded, from a :class:`~qrank.server.state.ModelPool` (what ``qrank serve`` and the tests pass).

>>> from qrank import Settings
>>> app = create_app(Settings(server={"rerankers": ["../shared/models/scifact-minilm-ce"]}))
>>> {"/v1/rerank", "/v1/embeddings", "/v1/models"} <= set(app.openapi()["paths"])
True

Serve it with :func:`qrank.server.run.serve` (``qrank serve --reranker ../shared/models/scifact-minilm-ce``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..errors import InvalidInput
from ..settings import Settings
from .auth import ApiKeyMiddleware
from .errors import install_error_handlers
from .metrics import Metrics
from .middleware import HostCheckMiddleware, LimitsMiddleware, RequestMetricsMiddleware, Slots, allowed_hosts
from .schemas.common import ERROR_RESPONSES
from .state import ModelPool, ServerState

log = logging.getLogger(__name__)

ROUTE_MODULES = (
    "qrank.server.routes.rerank",
    "qrank.server.routes.score",
    "qrank.server.routes.embeddings",
    "qrank.server.routes.models",
    "qrank.server.routes.health",
    "qrank.server.routes.search",
)

DESCRIPTION = """Rerank and embed over HTTP, speaking the protocols existing clients already use:
vLLM / Jina / Cohere rerank, vLLM score, OpenAI and TEI embeddings. Requests from many clients are
batched together per model; errors name the field at fault."""


def create_app(settings: Settings | None = None, pool: ModelPool | None = None) -> FastAPI:
    """Build the app. Nothing heavy happens here; models load (if needed) and warm up at start-up.

    The settings are checked against the models at start-up: a setting that makes some valid request
    impossible (e.g. a token budget below a model's max_length) stops the server from starting.
    """
    settings = settings or Settings()
    if settings.server.api_key is not None and not settings.server.api_key.strip():
        raise InvalidInput("server.api_key", "must not be empty (leave it unset to serve without a key)")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        models = pool
        if models is None:
            models = await asyncio.to_thread(ModelPool.load, settings)
        models.check(settings)
        state = ServerState(settings=settings, pool=models, metrics=metrics)
        app.state.qrank = state
        try:
            await state.start()
            log.info("serving %s", ", ".join(f"{m.name} ({m.role})" for m in models.models))
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="qrank",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app, settings)
    known = {getattr(r, "path", "") for r in app.routes}
    for name in ROUTE_MODULES:
        router = importlib.import_module(name).router
        app.include_router(router, responses=ERROR_RESPONSES)
        known.update(getattr(r, "path", "") for r in router.routes)
    s = settings.server
    slots = app.state.slots = Slots(s.max_concurrent)  # /ready reads it
    metrics.slots_used.set_function(lambda: slots.used)
    # added innermost first: metrics see every answer, auth runs before any limit or parsing
    app.add_middleware(
        LimitsMiddleware,
        max_concurrent=s.max_concurrent,
        max_body_bytes=s.max_body_bytes,
        max_header_bytes=s.max_header_bytes,
        body_timeout_s=s.body_timeout_s,
        slots=slots,
        metrics=metrics,
    )
    if s.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=s.api_key, metrics=metrics)
    hosts = allowed_hosts(s)
    if hosts is not None:  # before the key: a rebinding page is turned away whatever it sends
        app.add_middleware(HostCheckMiddleware, allowed=hosts, metrics=metrics)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, known_paths=frozenset(known))
    app.state.metrics = metrics
    return app
