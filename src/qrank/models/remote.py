"""Clients for a remote qrank server (or a vLLM/TEI-style one) with the local facades' API.

``RemoteReranker`` speaks the vLLM/Jina ``POST /v1/rerank`` protocol, ``RemoteEmbedder`` OpenAI's
``POST /v1/embeddings``; both keep one pooled ``httpx`` connection set, apply timeouts, and turn
server answers back into qrank's errors (``InvalidInput`` naming the field, ``Overloaded`` with the
server's ``Retry-After``, ``ModelNotFound``…) or :class:`ServerUnavailable` when nothing answers.

>>> from qrank import RemoteReranker
>>> rr = RemoteReranker("http://127.0.0.1:8000")               # doctest: +SKIP
>>> rr.rerank("what is bm25?", ["BM25 ranks documents", "cats"], top_n=1)[0].index  # doctest: +SKIP
0

All HTTP goes through a transport's ``request``: :class:`HTTPTransport` for one server; a list of URLs
gets :class:`~qrank.models.remote_pool.BalancedTransport` (round-robin, retries, backoff); any object with
``request`` / ``close`` / ``base_url`` can be passed as ``transport=``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import numpy as np

from ..errors import InvalidInput, ModelNotFound, Overloaded, QrankError, TooLarge, UnsupportedModel, require
from ..reranker import check_documents, check_query, check_top_n
from ..types import ModelInfo, RerankResult

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0  # a large rerank on a busy CPU server takes seconds to tens of seconds; a dead one never answers


class ServerUnavailable(QrankError):
    """The server could not be reached, timed out, or failed (5xx); the request may be retried."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class HTTPTransport:
    """One pooled HTTP client for one server: base URL, API key, timeouts, error mapping.

    >>> t = HTTPTransport("http://127.0.0.1:8000", api_key="k", timeout=5)      # doctest: +SKIP
    >>> t.request("GET", "/v1/models")["object"]                                # doctest: +SKIP
    'list'
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 5.0,
        max_connections: int = 32,
    ) -> None:
        httpx = require("httpx", "server")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidInput("base_url", f"must be an http:// or https:// URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        headers = {"user-agent": "qrank-remote"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def request(self, method: str, path: str, json: Any = None) -> Any:
        """Send one request; the decoded JSON answer, or a qrank error."""
        import httpx

        try:
            response = self._client.request(method, path, json=json)
        except httpx.TimeoutException as exc:
            raise ServerUnavailable(
                f"{method} {self.base_url}{path} timed out after {self.timeout}s ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise ServerUnavailable(
                f"cannot reach the server at {self.base_url} ({type(exc).__name__}: {exc}); is it running?"
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ServerUnavailable(
                f"{method} {path}: the server answered {response.status_code} with non-JSON content"
            ) from exc

    def close(self) -> None:
        self._client.close()


def error_from_response(response) -> QrankError:
    """The qrank error for an HTTP error answer (qrank's, vLLM's, OpenAI's or TEI's error body)."""
    status = response.status_code
    message, field = _error_details(response)
    text = f"server answered {status}: {message}"
    if status == 429 or (status == 503 and "retry-after" in response.headers):
        return Overloaded(text, retry_after=_retry_after(response.headers.get("retry-after")))
    if status == 413:
        return TooLarge(text, field=field)
    if status == 404 and (field == "model" or "model" in message.lower()):
        return ModelNotFound(text)
    if status in (400, 422):
        err = InvalidInput(field or "request", message)
        err.message = text
        err.args = (text,)
        return err
    if status in (401, 403):
        return QrankError(f"{text} (check the api_key)", field="api_key")
    if status >= 500:
        return ServerUnavailable(text, status_code=status)
    return UnsupportedModel(text) if status == 404 else QrankError(text)


def _error_details(response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return (response.text[:300] or response.reason_phrase), None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err), err.get("field") or err.get("param")
        if isinstance(err, str):  # TEI
            return err, None
        for key in ("message", "detail"):
            if key in body:
                return str(body[key]), None
    return str(body)[:300], None


def _retry_after(value: str | None) -> float:
    try:
        return max(float(value), 0.0) if value else 1.0
    except ValueError:
        return 1.0


class _RemoteModel:
    """What both clients share: the transport, the model name, ``info`` from ``/v1/models``."""

    role = ""

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: HTTPTransport | None = None,
    ) -> None:
        if transport is None and isinstance(base_url, (list, tuple)):
            from .remote_pool import BalancedTransport  # several servers: round-robin with retries

            transport = BalancedTransport(base_url, api_key=api_key, timeout=timeout)
        self.transport = transport or HTTPTransport(base_url, api_key=api_key, timeout=timeout)
        self.model_name = model
        self._info: ModelInfo | None = None

    @property
    def info(self) -> ModelInfo:
        """The served model's description (asked once from ``GET /v1/models``)."""
        if self._info is None:
            self._info = self._fetch_info()
        return self._info

    def _fetch_info(self) -> ModelInfo:
        listing = self.transport.request("GET", "/v1/models").get("data") or []
        cards = [c for c in listing if isinstance(c, dict)]
        mine = [c for c in cards if (c.get("qrank") or {}).get("role", self.role) == self.role]
        card = (
            next((c for c in mine if c.get("id") == self.model_name), None)
            if self.model_name
            else (mine[0] if mine else None)
        )
        if card is None:
            raise ModelNotFound(
                f"the server at {self.transport.base_url} serves no {self.role} named {self.model_name!r}"
            )
        extra = card.get("qrank") or {}
        return ModelInfo(
            id=str(card["id"]),
            kind=str(extra.get("kind", "remote")),
            role=self.role,
            max_length=int(card.get("max_model_len") or extra.get("max_length") or 0),
            dtype=str(extra.get("dtype", "unknown")),
            device=f"remote:{self.transport.base_url}",
            revision=str(extra.get("revision", "")),
            dim=extra.get("dim"),
            supports_dims=bool(extra.get("supports_dims", False)),
        )

    def _with_model(self, body: dict) -> dict:
        if self.model_name is not None:
            body["model"] = self.model_name
        return body

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transport.base_url!r}, model={self.model_name!r})"


class RemoteReranker(_RemoteModel):
    """A reranker behind ``POST /v1/rerank`` (qrank, vLLM, Jina- or Cohere-style servers) or, with
    ``protocol="tei"``, text-embeddings-inference's ``POST /rerank``, with :class:`~qrank.Reranker`'s methods.

    >>> rr = RemoteReranker("http://127.0.0.1:8000", model="my-reranker", api_key="…")  # doctest: +SKIP
    >>> rr.score("q", ["a", "b"])                                                     # doctest: +SKIP
    [0.12, 0.87]
    >>> tei = RemoteReranker("http://127.0.0.1:8080", protocol="tei")                  # doctest: +SKIP
    """

    role = "reranker"
    PROTOCOLS = ("v1", "tei")

    def __init__(self, base_url: str | Sequence[str], model: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, *, protocol: str = "v1", transport: HTTPTransport | None = None) -> None:
        if protocol not in self.PROTOCOLS:
            raise InvalidInput("protocol", f"must be one of {', '.join(self.PROTOCOLS)}, got {protocol!r}")
        super().__init__(base_url, model, api_key, timeout, transport=transport)
        self.protocol = protocol

    def _fetch_info(self) -> ModelInfo:
        if self.protocol != "tei":
            return super()._fetch_info()
        path = "/info" + (f"?model={quote(self.model_name)}" if self.model_name else "")
        card = self.transport.request("GET", path)
        if not isinstance(card, dict) or "model_id" not in card:
            raise ServerUnavailable(f"the server at {self.transport.base_url} answered /info without 'model_id' (not TEI?)")
        extra = card.get("qrank") or {}
        return ModelInfo(id=str(card["model_id"]), kind=str(extra.get("kind", "tei")), role=self.role,
                         max_length=int(card.get("max_input_length") or 0), dtype=str(card.get("model_dtype", "unknown")),
                         device=f"remote:{self.transport.base_url}", revision=str(card.get("model_sha") or ""))

    def _ranked_tei(self, query: str, documents: list[str], top_n: int | None, instruction: str | None) -> list[dict]:
        if instruction is not None:
            raise InvalidInput("instruction", "the TEI protocol has no instruction; use protocol='v1' (qrank, vLLM)")
        # TEI has no top_n and no model field (one model per server): the cut happens here
        body: dict[str, Any] = {"query": query, "texts": documents, "truncate": True, "raw_scores": False, "return_text": False}
        answer = self.transport.request("POST", "/rerank", self._with_model(body))
        if not isinstance(answer, list) or not all(isinstance(r, dict) and "index" in r and "score" in r for r in answer):
            raise ServerUnavailable("the server's TEI rerank answer is not a list of {index, score}")
        results = [{"index": r["index"], "relevance_score": r["score"]} for r in answer]
        return results if top_n is None else sorted(results, key=lambda r: (-float(r["relevance_score"]), int(r["index"])))[:top_n]

    def _ranked(self, query: str, documents: list[str], top_n: int | None, instruction: str | None) -> list[dict]:
        if self.protocol == "tei":
            return self._ranked_tei(query, documents, top_n, instruction)
        body: dict[str, Any] = {"query": query, "documents": documents, "return_documents": False}
        if top_n is not None:
            body["top_n"] = top_n
        if instruction is not None:
            body["instruction"] = instruction
        answer = self.transport.request("POST", "/v1/rerank", self._with_model(body))
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise ServerUnavailable("the server's rerank answer has no 'results' list")
        return results

    def score(self, query: str, documents: Sequence[str], *, instruction: str | None = None) -> list[float]:
        """Relevance of each document to ``query``, in the caller's order."""
        query = check_query(query)
        documents = check_documents(documents)
        _check_instruction(instruction)
        scores: list[float | None] = [None] * len(documents)
        for r in self._ranked(query, documents, None, instruction):
            scores[int(r["index"])] = float(r["relevance_score"])
        if any(s is None for s in scores):
            raise ServerUnavailable("the server returned fewer scores than documents")
        return scores  # type: ignore[return-value]

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        return_documents: bool = True,
    ) -> list[RerankResult]:
        """Documents best first, cut to ``top_n``; each keeps its original ``index``."""
        query = check_query(query)
        documents = check_documents(documents)
        n = check_top_n(top_n, len(documents))
        _check_instruction(instruction)
        results = self._ranked(query, documents, n, instruction)
        # the server sorts; sorting again (stable, by score then index) keeps the local tie rule
        ranked = sorted(((int(r["index"]), float(r["relevance_score"])) for r in results), key=lambda x: (-x[1], x[0]))
        return [
            RerankResult(index=i, score=s, document=documents[i] if return_documents else None) for i, s in ranked[:n]
        ]

    def batch_rerank(
        self,
        queries: Sequence[str],
        documents_list: Sequence[Sequence[str]],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        return_documents: bool = True,
        concurrency: int = 8,
    ) -> list[list[RerankResult]]:
        """One ranking per query; the requests go out concurrently (the server batches them together)."""
        if isinstance(queries, str) or not isinstance(queries, Sequence) or not queries:
            raise InvalidInput("queries", "must be a non-empty list of strings")
        if (
            isinstance(documents_list, str)
            or not isinstance(documents_list, Sequence)
            or len(documents_list) != len(queries)
        ):
            raise InvalidInput("documents_list", "must be a list with one list of documents per query")
        for qi, (q, docs) in enumerate(zip(queries, documents_list)):
            check_query(q, f"queries[{qi}]")
            check_documents(docs, f"documents_list[{qi}]")
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(queries)))) as pool:
            futures = [
                pool.submit(
                    self.rerank, q, docs, top_n=top_n, instruction=instruction, return_documents=return_documents
                )
                for q, docs in zip(queries, documents_list)
            ]
            return [f.result() for f in futures]


class RemoteEmbedder(_RemoteModel):
    """An embedder behind ``POST /v1/embeddings`` with :class:`~qrank.Embedder`'s methods.

    Vectors travel as base64 float32. ``is_query`` and ``instruction`` are sent as qrank's
    ``input_type`` / ``instruction`` fields (servers that do not know them embed the text as given).

    >>> em = RemoteEmbedder("http://127.0.0.1:8000")            # doctest: +SKIP
    >>> em.embed(["a", "b"]).shape                              # doctest: +SKIP
    (2, 384)
    """

    role = "embedder"

    @property
    def dim(self) -> int:
        return int(self.info.dim or 0)

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        is_query: bool = False,
        instruction: str | None = None,
        dim: int | None = None,
    ) -> np.ndarray:
        """One vector for a string, an ``(n, dim)`` float32 matrix for a list."""
        single = isinstance(texts, str)
        batch = [texts] if single else texts
        if not isinstance(batch, Sequence) or isinstance(batch, (bytes, bytearray)):
            raise InvalidInput("texts", f"must be a string or a list of strings, got {type(texts).__name__}")
        if len(batch) == 0:
            raise InvalidInput("texts", "must not be empty")
        for i, t in enumerate(batch):
            if not isinstance(t, str):
                raise InvalidInput(f"texts[{i}]", f"must be a string, got {type(t).__name__}")
        _check_instruction(instruction)
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise InvalidInput("dim", f"must be a positive integer, got {dim!r}")
        body: dict[str, Any] = {"input": list(batch), "encoding_format": "base64"}
        if dim is not None:
            body["dimensions"] = dim
        if is_query:
            body["input_type"] = "query"
        if instruction is not None:
            body["instruction"] = instruction
        answer = self.transport.request("POST", "/v1/embeddings", self._with_model(body))
        vectors = _decode_embeddings(answer, len(batch))
        return vectors[0] if single else vectors

    def embed_query(self, text: str, *, dim: int | None = None) -> np.ndarray:
        return self.embed(text, is_query=True, dim=dim)

    def embed_documents(self, texts: Sequence[str], *, dim: int | None = None) -> np.ndarray:
        return self.embed(list(texts), is_query=False, dim=dim)


def _decode_embeddings(answer: Any, n: int) -> np.ndarray:
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or len(data) != n:
        raise ServerUnavailable(
            f"the server's embeddings answer has {len(data) if isinstance(data, list) else 'no'} items for {n} inputs"
        )
    rows: list[np.ndarray | None] = [None] * n
    for item in data:
        emb = item["embedding"]
        vec = (
            np.frombuffer(base64.b64decode(emb), dtype="<f4")
            if isinstance(emb, str)
            else np.asarray(emb, dtype=np.float32)
        )
        rows[int(item.get("index", 0))] = vec.astype(np.float32)
    if any(r is None for r in rows):
        raise ServerUnavailable("the server's embeddings answer misses some indices")
    return np.stack(rows)  # type: ignore[arg-type]


def _check_instruction(instruction) -> None:
    if instruction is not None and not isinstance(instruction, str):
        raise InvalidInput("instruction", "must be a string")
