"""The UI's backend for a running qrank server (``qrank ui --server URL``).

Reranking goes through :class:`qrank.models.remote.RemoteReranker` (``POST /v1/rerank``); model names
come from ``GET /v1/models``; search from the server's ``POST /v1/search`` when it has one. One pooled
connection set serves every model. A server that is down gives
:class:`~qrank.models.remote.ServerUnavailable`, which the page shows as a sentence.

>>> from qrank.server import create_app
>>> from qrank.server.run import running_server
>>> from qrank.settings import Settings
>>> settings = Settings(server={"rerankers": ["../shared/models/scifact-minilm-ce"]})
>>> with running_server(create_app(settings), settings) as server:
...     backend = RemoteBackend(server.url)
...     names = backend.reranker_names()
...     backend.transport.close()
>>> names
['../shared/models/scifact-minilm-ce']
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from ..errors import QrankError
from ..types import RerankResult
from .backend import CollectionEntry, SearchResult

log = logging.getLogger(__name__)


class RemoteBackend:
    """Answers from a qrank server; nothing is loaded in the UI process."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 120.0) -> None:
        from ..models.remote import HTTPTransport

        self.transport = HTTPTransport(url, api_key=api_key, timeout=timeout)
        self.url = self.transport.base_url
        self._rerankers: dict[str | None, object] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"the qrank server at {self.url}"

    def check(self) -> None:
        """Warn (not fail) when the server does not answer: the page shows the error on each request."""
        try:
            self._cards()
        except QrankError as exc:
            log.warning("the qrank server does not answer yet: %s", exc)

    def _cards(self) -> list[dict]:
        listing = self.transport.request("GET", "/v1/models")
        data = listing.get("data") if isinstance(listing, dict) else None
        return [c for c in data or [] if isinstance(c, dict) and "id" in c]

    def _names(self, role: str) -> list[str]:
        try:
            cards = self._cards()
        except QrankError as exc:
            log.warning("cannot list the server's models: %s", exc)
            return []
        return [str(c["id"]) for c in cards if (c.get("qrank") or {}).get("role", "reranker") == role]

    def reranker_names(self) -> list[str]:
        return self._names("reranker")

    def embedder_names(self) -> list[str]:
        return self._names("embedder")

    def reranker(self, name: str | None):
        """The client of one served reranker (``None`` = the server's default), sharing the connections."""
        from ..models.remote import RemoteReranker

        with self._lock:
            if name not in self._rerankers:
                self._rerankers[name] = RemoteReranker(self.url, model=name, transport=self.transport)
            return self._rerankers[name]

    def rerank(self, model, query: str, documents: Sequence[str], *, top_n=None, instruction=None,
               long_documents=None) -> list[RerankResult]:
        return self.reranker(model or None).rerank(query, documents, top_n=top_n, instruction=instruction or None,
                                                   long_documents=long_documents)

    def refresh(self) -> None:
        """Nothing is cached here: the server answers every time."""

    def collection_names(self) -> list[str]:
        return [c.name for c in self.collections() if c.status == "ok"]

    def collections(self) -> list[CollectionEntry]:
        from .search import remote_collections

        return remote_collections(self.transport)

    def search(self, collection, query, *, k, candidates=None, hybrid=False, reranker=None, embedder=None,
               progress=None) -> SearchResult:  # the server answers in one piece: nothing to report on the way
        from .search import remote_search

        return remote_search(self.transport, collection, query, k=k, candidates=candidates, hybrid=hybrid,
                             reranker=reranker, embedder=embedder)

    def close(self) -> None:
        self.transport.close()
