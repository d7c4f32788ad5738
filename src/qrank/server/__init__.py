"""The HTTP door: vLLM/Cohere/Jina/TEI rerank, OpenAI/TEI embeddings, dynamic batching, limits, metrics.

Needs the ``server`` extra (FastAPI, uvicorn, prometheus_client).

>>> from qrank.server import create_app
>>> from qrank.settings import Settings
>>> app = create_app(Settings(server={"rerankers": ["../shared/models/scifact-minilm-ce"]}))
>>> "/v1/rerank" in app.openapi()["paths"]
True
"""

from __future__ import annotations

from ..errors import require

for _module in ("fastapi", "uvicorn", "prometheus_client"):
    require(_module, "server")

from .app import create_app  # noqa: E402
from .state import ModelPool  # noqa: E402

__all__ = ["ModelPool", "create_app"]
