"""Between a route and a model: limits, truncation, tokenizing once (off the event loop), the queue, ranking.

Routes parse their protocol's body and format its answer; everything in the middle is here, once, so
that ``/v1/rerank``, ``/rerank`` (TEI) and ``/v1/score`` enforce the same limits the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import numpy as np
from starlette.requests import Request

from ..calibration import raw_scores
from ..embedder import check_dim
from ..errors import InvalidInput, TooLarge
from ..long_documents import DocumentReport, LongDocuments, plan
from ..models.base import TextEncoder
from ..reranker import check_min_score, rank_scores
from ..types import RerankResult
from .errors import ClientGone
from .state import ServedModel, ServerState
from .workers import embed_job, score_job


@dataclass(frozen=True)
class Scored:
    model: ServedModel
    scores: np.ndarray
    tokens: int
    reports: list[DocumentReport | None] | None = None
    raw: np.ndarray | None = None  # the model's raw output behind ``scores``, when asked for


@dataclass(frozen=True)
class Ranked:
    model: ServedModel
    results: list[RerankResult]
    tokens: int


@dataclass(frozen=True)
class Embedded:
    model: ServedModel
    vectors: np.ndarray
    tokens: int


def fit_chars(texts: Sequence[str], field: str, limit: int, truncate: bool) -> list[str]:
    """Cut texts longer than ``limit`` characters, or refuse them (413) when truncation is off.

    >>> fit_chars(["abcdef", "ab"], "documents", 3, True)
    ['abc', 'ab']
    """
    out = list(texts)
    for i, t in enumerate(out):
        if len(t) > limit:
            if not truncate:
                raise TooLarge(
                    f"{field}[{i}]: {len(t)} characters, more than the limit of {limit}", field=f"{field}[{i}]"
                )
            out[i] = t[:limit]
    return out


def check_count(n: int, field: str, limit: int) -> None:
    if n > limit:
        raise TooLarge(f"{field}: {n} items, more than the limit of {limit} per request", field=field)


def check_query_chars(text: str, field: str, limit: int) -> None:
    # queries and instructions are never cut: a cut query asks a different question
    if len(text) > limit:
        raise TooLarge(f"{field}: {len(text)} characters, more than the limit of {limit}", field=field)


def check_tokens(counts: Sequence[int], max_length: int, field: str) -> None:
    """With truncation off, refuse an input longer than the model's max_length; one that fills it exactly is
    served. The counts must see past the window: the door encodes with one token to spare (``max_length + 1``,
    see :func:`~qrank.server.workers.score_job`), since a count cut at the window reads the same for an input
    that fits exactly and one that was cut; a model that only counts gives its inputs' whole counts.

    >>> check_tokens([3, 4], 4, "input")
    >>> check_tokens([3, 5], 4, "input")
    Traceback (most recent call last):
    qrank.errors.TooLarge: input[1]: longer than the model's max_length of 4 tokens; ...
    """
    for i, n in enumerate(counts):
        if n > max_length:
            raise TooLarge(
                f"{field}[{i}]: longer than the model's max_length of {max_length} tokens; "
                "shorten it or send truncate=true",
                field=f"{field}[{i}]",
            )


def prompt_tokens(value: int | None, max_length: int) -> int | None:
    """vLLM's ``truncate_prompt_tokens`` as a number of tokens: -1 is the model's max_length; more than the window
    is refused, as vLLM refuses it (a cap the model cannot reach would be silently meaningless).

    >>> prompt_tokens(-1, 512), prompt_tokens(100, 512), prompt_tokens(None, 512)
    (512, 100, None)
    >>> prompt_tokens(600, 512)
    Traceback (most recent call last):
    qrank.errors.InvalidInput: truncate_prompt_tokens: 600 is more than the model's max_length of 512 tokens; ...
    """
    if value is None:
        return None
    if value == -1:
        return max_length
    if value < 1:
        raise InvalidInput("truncate_prompt_tokens", f"must be a positive number of tokens, or -1 for the model's "
                           f"max_length, got {value}")
    if value > max_length:
        raise InvalidInput("truncate_prompt_tokens", f"{value} is more than the model's max_length of {max_length} "
                           f"tokens; send at most {max_length}, or -1 for the whole window")
    return value


async def until_disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def watched(request: Request | None, work: Awaitable):
    """Await ``work``; if the client disconnects first, cancel it (dropping its queued request)."""
    task = asyncio.ensure_future(work)
    if request is None:
        return await task
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone("client disconnected before its request was served")


class Inference:
    """The shared middle of every model route; one per request (cheap)."""

    def __init__(self, state: ServerState, request: Request | None = None) -> None:
        self.state = state
        self.limits = state.settings.server
        self.request = request

    def _truncate(self, requested: bool | None) -> bool:
        return self.limits.truncate if requested is None else requested

    def _policy(self, served: ServedModel, truncate: bool | None, options: dict | None) -> tuple[LongDocuments, bool]:
        """The request's long-document policy: its own fields over the served reranker's. Without
        ``long_documents``, a request's ``truncate: false`` (TEI) means 'error' and ``truncate: true`` anything but
        'error'; the server's ``truncate`` setting turns a 'truncate' default into 'error' when off. The flag says
        the 'error' came from ``truncate`` (answered 413, as it always was; an asked-for 'error' is a 422)."""
        options = dict(options or {})
        by_truncate = False
        default = getattr(served.facade, "long_documents", None) or LongDocuments()
        if options.get("long_documents") is None:
            if truncate is False or (truncate is None and not self.limits.truncate and default.policy == "truncate"):
                options["long_documents"] = "error"
                by_truncate = default.policy != "error"
            elif truncate is True and default.policy == "error":
                options["long_documents"] = "truncate"
        policy = default.with_options(policy=options.pop("long_documents", None), aggregate=options.pop(
            "chunk_aggregate", None), top_k=options.pop("chunk_top_k", None), **options)
        return policy, by_truncate

    async def score_pairs(
        self,
        model_name: str | None,
        pairs: list[tuple[str, str]],
        *,
        instruction: str | None,
        truncate: bool | None,
        field: str,
        query_field: str = "query",
        long_documents: dict | None = None,
        raw_field: str | None = None,
    ) -> Scored:
        """Scores of (query, document) pairs in the caller's order; the fields name queries and documents.

        ``long_documents`` holds the request's qrank fields (``long_documents``, ``chunk_tokens``,
        ``chunk_overlap``, ``chunk_aggregate``, ``chunk_top_k``) and protocol knobs (``max_tokens_per_doc``,
        ``max_tokens_per_query``, vLLM's ``truncate_prompt_tokens``); documents are cut or chunked by
        :mod:`qrank.long_documents`.
        ``raw_field`` (the request's field that asked for raw scores) fills ``Scored.raw``: a calibrated model's
        uncalibrated scores of the same pass, else the logit behind a sigmoid score.
        """
        served = self.state.pool.get(model_name, "reranker")
        lim = self.limits
        check_count(len(pairs), field, lim.max_documents)
        if instruction is not None:
            check_query_chars(instruction, "instruction", lim.max_document_chars)
        options = dict(long_documents or {})
        # vLLM's cap on the whole prompt (template, query and document): plan() cuts each document to what is left
        # of it beside the template and query, as it cuts for max_tokens_per_doc
        prompt_cap = prompt_tokens(options.pop("truncate_prompt_tokens", None), served.info.max_length)
        if prompt_cap == served.info.max_length:
            # -1 (or the window itself) is the model's own cut at its window, as vLLM's tokenizer makes it: a
            # cross-encoder shortens the longer of query and document, where qrank's cap keeps the query whole
            prompt_cap, truncate = None, True
        # 'truncate: false' keeps its 413; a long_documents='error' is a 422 like any invalid input
        policy, refuse_413 = self._policy(served, truncate, options)
        seen_queries: set[str] = set()
        for q, _ in pairs:
            if q not in seen_queries:
                seen_queries.add(q)
                check_query_chars(q, query_field, lim.max_document_chars)
        # only 'truncate' may cut by characters (and says so); a chunked or refused document is never cut here
        cut_chars = policy.policy == "truncate"
        docs = fit_chars([d for _, d in pairs], field, lim.max_document_chars, cut_chars)
        truncated_before = [len(d) < len(orig) for d, (_, orig) in zip(docs, pairs)]
        pairs = [(q, d) for (q, _), d in zip(pairs, docs)]

        def prepare():
            laid = plan(served.model, pairs, instruction=instruction, policy=policy, field=field,
                        query_field=query_field, truncated_before=truncated_before, unlaid=("truncate", "error"),
                        refuse_as_too_large=refuse_413, max_prompt_tokens=prompt_cap)
            # a model without layouts is refused by its counts ('error'), so its pairs are encoded one token past the
            # window: a pair that fills the window exactly is served, a longer one refused (see check_tokens)
            by_counts = policy.policy != "truncate" and bool(laid.layouts) and laid.layouts[0] is None
            limit = served.info.max_length + 1 if by_counts else None
            return (laid, by_counts, *score_job(served.model, laid.pairs, instruction, laid.encoded,
                                                raw=raw_field is not None, max_length=limit))

        # a full queue answers 429 now, before the tokenizer: under overload the refusal takes milliseconds
        with served.batcher.place() as place:
            # laid out and tokenized once, here, off the event loop: the counts are exact and the worker gets the ids
            laid, by_counts, job, counts = await asyncio.to_thread(prepare)
            if by_counts:
                check_tokens(counts, served.info.max_length, field)
            tokens = int(sum(counts))
            submitted = served.batcher.submit(job, cost=tokens, size=len(laid.pairs), place=place)
            answer = await watched(self.request, submitted)
        scores, raw = answer if isinstance(answer, tuple) else (answer, None)
        scores, reports = laid.fold(scores)
        if raw is not None:  # chunks' raw scores aggregate as their scores do
            raw = laid.fold(raw)[0]
        elif raw_field is not None:
            raw = np.asarray(raw_scores(scores.tolist(), served.info.score_activation, raw_field), dtype=np.float32)
        return Scored(served, scores, tokens, reports, raw)

    async def rerank(
        self,
        model_name: str | None,
        query: str,
        documents: list[str],
        *,
        top_n: int | None,
        instruction: str | None,
        truncate: bool | None,
        field: str = "documents",
        long_documents: dict | None = None,
        min_score: float | None = None,
        raw_field: str | None = None,
    ) -> Ranked:
        """Documents best first, without those scoring below ``min_score``, cut to ``top_n`` (which may not
        exceed ``max_documents``); ``raw_field`` as in :meth:`score_pairs` fills each result's ``raw_score``."""
        if top_n is not None and top_n > self.limits.max_documents:
            raise InvalidInput("top_n", f"must be at most {self.limits.max_documents}, got {top_n}")
        min_score = check_min_score(min_score)
        scored = await self.score_pairs(
            model_name, [(query, d) for d in documents], instruction=instruction, truncate=truncate, field=field,
            long_documents=long_documents, raw_field=raw_field,
        )
        n = len(documents) if top_n is None else min(top_n, len(documents))
        raw = None if scored.raw is None else scored.raw.tolist()
        results = rank_scores(scored.scores.tolist(), documents, n, scored.reports, min_score=min_score, raw=raw)
        return Ranked(scored.model, results, scored.tokens)

    async def embed(
        self,
        model_name: str | None,
        texts: list[str],
        *,
        is_query: bool,
        instruction: str | None,
        dim: int | None,
        truncate: bool | None,
        field: str,
        dim_field: str = "dimensions",
        truncate_prompt_tokens: int | None = None,
    ) -> Embedded:
        """L2-normalised float32 vectors, one row per text. ``truncate_prompt_tokens`` (vLLM's) cuts each input,
        its instruction and special tokens included, to that many tokens (-1: the window); it cuts even under
        ``truncate: false``, as an explicit cap (max_tokens_per_doc too) always does."""
        served = self.state.pool.get(model_name, "embedder")
        lim = self.limits
        check_count(len(texts), field, lim.max_inputs)
        info = served.info
        dim = check_dim(info, dim, dim_field, served.name)
        if instruction is not None:
            check_query_chars(instruction, "instruction", lim.max_document_chars)
        cap = prompt_tokens(truncate_prompt_tokens, info.max_length)
        if cap is not None and not isinstance(served.model, TextEncoder):
            raise InvalidInput("truncate_prompt_tokens", f"{type(served.model).__name__} does not tokenize here, so "
                               "its inputs cannot be cut to a number of tokens")
        truncate = cap is not None or self._truncate(truncate)
        texts = fit_chars(texts, field, lim.max_document_chars, truncate)
        # with truncation off the texts are encoded one token past the window, so that an input filling it exactly
        # is served and a longer one refused (see check_tokens)
        limit = cap if cap is not None else None if truncate else info.max_length + 1
        with served.batcher.place() as place:  # 429 before the tokenizer, as in score_pairs
            job, counts = await asyncio.to_thread(
                embed_job, served.model, texts, is_query=is_query, instruction=instruction, dim=dim, max_length=limit
            )
            if not truncate:
                check_tokens(counts, info.max_length, field)
            if cap is not None and any(n > cap for n in counts):
                # fewer tokens than the model's own special tokens: its tokenizer then cuts nothing at all
                raise InvalidInput("truncate_prompt_tokens", f"{cap} tokens cannot hold this model's special tokens "
                                   "and any text; send a larger value or -1")
            tokens = int(sum(counts))
            submitted = served.batcher.submit(job, cost=tokens, size=len(texts), place=place)
            vectors = await watched(self.request, submitted)
        return Embedded(served, vectors, tokens)
