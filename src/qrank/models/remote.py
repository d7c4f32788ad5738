"""Clients for a remote qrank server (or a vLLM/TEI-style one) with the local facades' API.

The remote layers :class:`RemoteScorer` (vLLM/Jina ``POST /v1/rerank``, or TEI's ``/rerank``) and
:class:`RemoteEmbeddingModel` (OpenAI's ``POST /v1/embeddings``) are models like any backend;
``RemoteReranker`` / ``RemoteEmbedder`` are the facades over them. They keep one pooled ``httpx``
connection set, apply timeouts, and turn server answers back into qrank's errors (``InvalidInput``
naming the field, ``Overloaded`` with the server's ``Retry-After``, ``ModelNotFound``…) or
:class:`ServerUnavailable` when nothing answers.

Against a qrank server on this machine (``qrank serve`` does the same from the command line):

>>> from qrank import RemoteEmbedder, RemoteReranker
>>> from qrank.server import create_app
>>> from qrank.server.run import running_server
>>> from qrank.settings import Settings
>>> settings = Settings(server={"rerankers": ["../shared/models/scifact-minilm-ce"],
...                             "embedders": ["../shared/models/all-MiniLM-L6-v2"]})
>>> with running_server(create_app(settings), settings) as server:
...     rr, em = RemoteReranker(server.url), RemoteEmbedder(server.url)
...     best = rr.rerank("what is bm25?", ["Cats purr.", "BM25 ranks documents."], top_n=1)[0].index
...     shape = em.embed(["a", "b"]).shape
...     rr.close(); em.close()
>>> best, shape
(1, (2, 384))

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

from ..embedder import Embedder
from ..errors import InvalidInput, ModelNotFound, Overloaded, QrankError, TooLarge, UnsupportedModel, require
from ..calibration import raw_scores
from ..long_documents import DocumentReport, LongDocuments, as_policy
from ..reranker import Reranker
from ..types import ModelInfo
from .base import check_finite, check_scores

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0  # a large rerank on a busy CPU server takes seconds to tens of seconds; a dead one never answers


class ServerUnavailable(QrankError):
    """The server could not be reached, timed out, or failed (5xx); the request may be retried."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class HTTPTransport:
    """One pooled HTTP client for one server: base URL, API key, timeouts, error mapping.

    >>> t = HTTPTransport("http://127.0.0.1:8000/", api_key="k", timeout=5)   # connects on the first request
    >>> t.base_url
    'http://127.0.0.1:8000'
    >>> t.close()
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
    """What both remote layers share: the transport, the model name, ``info`` from ``/v1/models``."""

    role = ""

    def __init__(self, transport, model: str | None = None) -> None:
        self.transport = transport
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
            score_activation=extra.get("score_activation"),
        )

    def _with_model(self, body: dict) -> dict:
        if self.model_name is not None:
            body["model"] = self.model_name
        return body

    def count_tokens(self, items, **kwargs) -> list[int]:
        # the server counts with its tokenizer and enforces its own limits; a guess here would only mislead
        raise UnsupportedModel(f"{self.transport.base_url}: a remote model's tokens are counted by its server")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transport.base_url!r}, model={self.model_name!r})"


class RemoteScorer(_RemoteModel):
    """A :class:`~qrank.models.base.ScoringModel` behind ``POST /v1/rerank`` (qrank, vLLM, Jina, Cohere) or,
    with ``protocol="tei"``, text-embeddings-inference's ``POST /rerank``; one request per query of a call,
    sent ``concurrency`` at a time (the server batches them together)."""

    role = "reranker"
    PROTOCOLS = ("v1", "tei")

    def __init__(self, transport, model: str | None = None, *, protocol: str = "v1", concurrency: int = 8) -> None:
        if protocol not in self.PROTOCOLS:
            raise InvalidInput("protocol", f"must be one of {', '.join(self.PROTOCOLS)}, got {protocol!r}")
        super().__init__(transport, model)
        self.protocol = protocol
        self.concurrency = concurrency

    def _fetch_info(self) -> ModelInfo:
        if self.protocol != "tei":
            return super()._fetch_info()
        path = "/info" + (f"?model={quote(self.model_name)}" if self.model_name else "")
        card = self.transport.request("GET", path)
        if not isinstance(card, dict) or "model_id" not in card:
            raise ServerUnavailable(
                f"the server at {self.transport.base_url} answered /info without 'model_id' (not TEI?)"
            )
        extra = card.get("qrank") or {}
        return ModelInfo(id=str(card["model_id"]), kind=str(extra.get("kind", "tei")), role=self.role,
                         max_length=int(card.get("max_input_length") or 0),
                         dtype=str(card.get("model_dtype", "unknown")), device=f"remote:{self.transport.base_url}",
                         revision=str(card.get("model_sha") or ""), score_activation=extra.get("score_activation"))

    def _one_query(self, query: str, documents: list[str], instruction: str | None,
                   fields: dict | None = None) -> list[tuple[float, DocumentReport | None]]:
        """Scores of ``documents`` in their order, each with the server's report (span, chunks, tokens,
        truncated; None when the server sends none), from one request carrying the long-document ``fields``."""
        fields = fields or {}
        if self.protocol == "tei":
            if instruction is not None:
                raise InvalidInput(
                    "instruction", "the TEI protocol has no instruction; use protocol='v1' (qrank, vLLM)"
                )
            # TEI's own switch: truncate=false refuses an over-long input (the server names it); qrank's fields
            # (long_documents='chunk' and its parameters) ride along for a qrank server
            truncate = fields.get("long_documents") != "error"
            body: dict[str, Any] = {"query": query, "texts": documents, "truncate": truncate, "raw_scores": False,
                                    "return_text": False, **fields}
            answer = self.transport.request("POST", "/rerank", self._with_model(body))
            well_formed = isinstance(answer, list) and all(
                isinstance(r, dict) and "index" in r and "score" in r for r in answer
            )
            if not well_formed:
                raise ServerUnavailable("the server's TEI rerank answer is not a list of {index, score}")
            results = [(r["index"], r["score"], r) for r in answer]
        else:
            body = {"query": query, "documents": documents, "return_documents": False, **fields}
            if instruction is not None:
                body["instruction"] = instruction
            answer = self.transport.request("POST", "/v1/rerank", self._with_model(body))
            listed = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(listed, list):
                raise ServerUnavailable("the server's rerank answer has no 'results' list")
            results = [(r["index"], r["relevance_score"], r) for r in listed]
        scores: list[tuple[float, DocumentReport | None] | None] = [None] * len(documents)
        for i, s, r in results:
            scores[int(i)] = (float(s), _report(r))
        if any(s is None for s in scores):
            raise ServerUnavailable("the server returned fewer scores than documents")
        return scores  # type: ignore[return-value]

    def score_documents(self, pairs, *, instruction: str | None = None, policy: LongDocuments | None = None
                        ) -> tuple[np.ndarray, list[DocumentReport | None]]:
        """Scores of ``(query, document)`` pairs and the server's report of each, the long-document ``policy``
        forwarded (:func:`policy_fields`): the server lays documents out by its model's own tokenizer."""
        fields = policy_fields(policy) if policy is not None else {}
        by_query: dict[str, list[int]] = {}
        for i, (q, _) in enumerate(pairs):
            by_query.setdefault(q, []).append(i)
        out = np.empty(len(pairs), dtype=np.float32)
        reports: list[DocumentReport | None] = [None] * len(pairs)

        def run(item):
            q, idx = item
            for i, (score, report) in zip(idx, self._one_query(q, [pairs[i][1] for i in idx], instruction, fields)):
                out[i], reports[i] = score, report

        if len(by_query) <= 1:
            for item in by_query.items():
                run(item)
        else:
            with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(by_query)))) as pool:
                list(pool.map(run, by_query.items()))
        return out, reports

    def score_pairs(self, pairs, *, instruction: str | None = None) -> np.ndarray:
        return self.score_documents(pairs, instruction=instruction)[0]


# LongDocuments attribute -> request field (qrank's, vLLM-style; Cohere v2 names max_tokens_per_doc the same)
_POLICY_FIELDS = (("policy", "long_documents"), ("chunk_tokens", "chunk_tokens"),
                  ("chunk_overlap", "chunk_overlap"), ("aggregate", "chunk_aggregate"), ("top_k", "chunk_top_k"),
                  ("max_tokens_per_doc", "max_tokens_per_doc"), ("max_tokens_per_query", "max_tokens_per_query"))


def policy_fields(policy: LongDocuments) -> dict:
    """The request fields that carry ``policy``: every setting that differs from :class:`LongDocuments`' defaults,
    ``long_documents`` always once any is sent (a plain default policy sends none, so a server that knows no
    qrank fields gets the body it always got, and cuts as it always did).

    >>> policy_fields(LongDocuments(policy="chunk", aggregate="mean_top_k", top_k=2))
    {'long_documents': 'chunk', 'chunk_aggregate': 'mean_top_k', 'chunk_top_k': 2}
    >>> policy_fields(LongDocuments())
    {}
    """
    default = LongDocuments()
    out = {name: getattr(policy, attr) for attr, name in _POLICY_FIELDS
           if getattr(policy, attr) != getattr(default, attr)}
    return {"long_documents": policy.policy, **out} if out else {}


def _report(item: dict) -> DocumentReport | None:
    span = item.get("span")
    if not isinstance(span, dict) or "start" not in span or "end" not in span:
        return None
    return DocumentReport((int(span["start"]), int(span["end"])), int(item.get("chunks") or 1),
                          int(item.get("tokens") or 0), bool(item.get("truncated")))


class RemoteEmbeddingModel(_RemoteModel):
    """An :class:`~qrank.models.base.EmbeddingModel` behind ``POST /v1/embeddings`` (vectors as base64 float32;
    ``is_query`` / ``instruction`` travel as qrank's ``input_type`` / ``instruction`` fields)."""

    role = "embedder"

    def embed_batch(self, texts, *, is_query: bool = False, instruction: str | None = None, dim: int | None = None):
        body: dict[str, Any] = {"input": list(texts), "encoding_format": "base64"}
        if dim is not None:
            body["dimensions"] = dim
        if is_query:
            body["input_type"] = "query"
        if instruction is not None:
            body["instruction"] = instruction
        answer = self.transport.request("POST", "/v1/embeddings", self._with_model(body))
        return _decode_embeddings(answer, len(texts))


def _transport(base_url, api_key, timeout, transport):
    if transport is not None:
        return transport
    if isinstance(base_url, (list, tuple)):
        from .remote_pool import BalancedTransport  # several servers: round-robin with retries

        return BalancedTransport(base_url, api_key=api_key, timeout=timeout)
    return HTTPTransport(base_url, api_key=api_key, timeout=timeout)


class _RemoteFacade:
    """Closing and naming shared by the remote facades (the model layer holds the transport)."""

    @property
    def transport(self):
        return self.model.transport

    @property
    def model_name(self) -> str | None:
        return self.model.model_name

    def close(self) -> None:
        self.model.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transport.base_url!r}, model={self.model_name!r})"


class RemoteReranker(_RemoteFacade, Reranker):
    """A :class:`~qrank.Reranker` over a :class:`RemoteScorer`: a reranker behind ``POST /v1/rerank`` (qrank,
    vLLM, Jina- or Cohere-style servers) or, with ``protocol="tei"``, text-embeddings-inference's ``/rerank``.

    The module's example runs one against a live server; a TEI server is ``protocol="tei"``:

    >>> RemoteReranker("http://127.0.0.1:8080", protocol="grpc")
    Traceback (most recent call last):
    qrank.errors.InvalidInput: protocol: must be one of v1, tei, got 'grpc'
    """

    PROTOCOLS = RemoteScorer.PROTOCOLS

    def __init__(self, base_url: str | Sequence[str], model: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, *, protocol: str = "v1", transport=None,
                 concurrency: int = 8, long_documents: LongDocuments | str | None = None) -> None:
        scorer = RemoteScorer(_transport(base_url, api_key, timeout, transport), model, protocol=protocol,
                              concurrency=concurrency)
        # forwarded to the server with every request (policy_fields); None: the server's own default
        super().__init__(scorer, long_documents=long_documents)

    @property
    def protocol(self) -> str:
        return self.model.protocol

    def _document_scores(self, pairs, instruction, long_documents, field, with_raw=False):
        """The server applies the long-document policy (its fields forwarded, its tokenizer counting) and
        reports each document's span, chunks, tokens and truncated; see :func:`policy_fields`."""
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidInput("instruction", "must be a string")
        if not pairs:
            return np.zeros((0,), dtype=np.float32), [], None
        policy = as_policy(long_documents, self.long_documents)
        scores, reports = self.model.score_documents(pairs, instruction=instruction or self.instruction,
                                                     policy=policy)
        scores = check_finite(check_scores(scores, len(pairs)))
        raw = (np.asarray(raw_scores(scores.tolist(), self.info.score_activation), dtype=np.float32)
               if with_raw else None)
        return scores, reports, raw


class RemoteEmbedder(_RemoteFacade, Embedder):
    """An :class:`~qrank.Embedder` over a :class:`RemoteEmbeddingModel` (``POST /v1/embeddings``).

    The module's example runs one against a live server. A URL that is not HTTP is refused at once:

    >>> RemoteEmbedder("127.0.0.1:8000")
    Traceback (most recent call last):
    qrank.errors.InvalidInput: base_url: must be an http:// or https:// URL, got '127.0.0.1:8000'
    """

    _local_dim_bound = False  # the server checks ``dimensions`` and names its own field

    def __init__(self, base_url: str | Sequence[str], model: str | None = None, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, *, transport=None) -> None:
        super().__init__(RemoteEmbeddingModel(_transport(base_url, api_key, timeout, transport), model))


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
