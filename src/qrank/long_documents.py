"""Documents longer than the model's window: cut (and say so), chunk and aggregate, or refuse.

Written once, over the model contract (:class:`~qrank.models.base.DocumentSplitter`), and used by the
Python facade and the server alike. The model lays each document out in its window by its own tokenizer
(never by characters); a document that does not fit is

- ``truncate``: cut in its document part only (template and query stay whole), reported ``truncated``;
- ``chunk``: split into windows of ``chunk_tokens`` tokens overlapping by ``chunk_overlap``; each window is an
  ordinary ``(query, chunk text)`` pair (so caches key it by its text and the fast engine shares the query's
  prefix), and the chunk scores are aggregated (``max``, ``mean_top_k``, ``first``) into the document's score;
- ``error``: refused with :class:`~qrank.errors.InvalidInput` naming ``documents[i]``, its tokens and the limit.

A chunk is cut at token boundaries and sent as the caller's own characters, so ``span`` (character offsets
of the best chunk) points into the caller's document exactly.

>>> policy = LongDocuments(policy="chunk", chunk_tokens=4, chunk_overlap=1).check()
>>> windows(10, policy.chunk_tokens, policy.chunk_overlap)
[(0, 4), (3, 7), (6, 10)]
>>> aggregate([0.2, 0.9, 0.4], "mean_top_k", 2)
(0.65, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from .errors import InvalidInput, TooLarge, UnsupportedModel
from .models.base import DocumentLayout, Encoded

POLICIES = ("chunk", "truncate", "error")
AGGREGATES = ("max", "mean_top_k", "first")
# a chunk is re-tokenized on its own; at its two cut points a word may split into a few more tokens than it had
# inside the document (and a leading space may become a token of its own), so the default window keeps this
# many tokens spare and the model never has to cut a chunk
RETOKENIZE_SLACK = 4
# neighbouring default chunks share an eighth of a chunk, at most this many tokens (a sentence or two)
DEFAULT_OVERLAP = 32

Policy = Literal["chunk", "truncate", "error"]
Aggregate = Literal["max", "mean_top_k", "first"]


@dataclass(frozen=True)
class LongDocuments:
    """What to do with documents that do not fit the model's window (settings ``models.long_documents`` etc.).

    >>> LongDocuments(policy="chunk", chunk_overlap=300, chunk_tokens=256).check()
    Traceback (most recent call last):
    qrank.errors.InvalidInput: chunk_overlap: must be smaller than chunk_tokens (256), got 300
    """

    policy: Policy = "truncate"
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None
    aggregate: Aggregate = "max"
    top_k: int = 3
    max_chars_per_document: int = 1_000_000
    max_chunks_per_document: int = 64
    max_chunks_per_request: int = 4096
    max_tokens_per_doc: int | None = None
    max_tokens_per_query: int | None = None

    @classmethod
    def from_settings(cls, models) -> LongDocuments:
        """The policy ``ModelSettings`` describes."""
        return cls(
            policy=models.long_documents, chunk_tokens=models.chunk_tokens, chunk_overlap=models.chunk_overlap,
            aggregate=models.chunk_aggregate, top_k=models.chunk_top_k,
            max_chars_per_document=models.max_chars_per_document,
            max_chunks_per_document=models.max_chunks_per_document,
            max_chunks_per_request=models.max_chunks_per_request,
        ).check()

    def with_options(self, **options) -> LongDocuments:
        """A checked copy with the options a request gave (``None`` keeps this policy's value)."""
        given = {k: v for k, v in options.items() if v is not None}
        return replace(self, **given).check() if given else self

    def check(self) -> LongDocuments:
        """This policy, or InvalidInput naming the first bad field."""
        if self.policy not in POLICIES:
            raise InvalidInput("long_documents", f"must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.aggregate not in AGGREGATES:
            raise InvalidInput("chunk_aggregate", f"must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        for name in ("chunk_tokens", "top_k", "max_chars_per_document", "max_chunks_per_document",
                     "max_chunks_per_request", "max_tokens_per_doc", "max_tokens_per_query"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInput(_FIELD.get(name, name), f"must be a positive integer, got {value!r}")
        overlap = self.chunk_overlap
        if overlap is None:
            return self
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
            raise InvalidInput("chunk_overlap", f"must be a non-negative integer, got {overlap!r}")
        if self.chunk_tokens is not None and overlap >= self.chunk_tokens:
            raise InvalidInput("chunk_overlap", f"must be smaller than chunk_tokens ({self.chunk_tokens}), "
                               f"got {overlap}")
        return self


# public names of the fields (settings, request bodies) where they differ from the attribute
_FIELD = {"top_k": "chunk_top_k", "aggregate": "chunk_aggregate", "policy": "long_documents"}


def as_policy(value, default: LongDocuments) -> LongDocuments:
    """A policy from what a caller gave: None (the default), a policy name, or a :class:`LongDocuments`.

    >>> as_policy("chunk", LongDocuments()).policy
    'chunk'
    """
    if value is None:
        return default
    if isinstance(value, LongDocuments):
        return value.check()
    if isinstance(value, str):
        return default.with_options(policy=value)
    raise InvalidInput("long_documents", f"must be one of {', '.join(POLICIES)} or a LongDocuments, got {value!r}")


@dataclass(frozen=True)
class DocumentReport:
    """How one document was scored: the span that decided its score, chunks and document tokens scored."""

    span: tuple[int, int]
    chunks: int
    tokens: int
    truncated: bool


@dataclass(frozen=True)
class Plan:
    """The pairs to score for a list of (query, document) pairs, and how to fold their scores back."""

    pairs: list[tuple[str, str]]
    # per input pair: (first pair index, chunk spans, document tokens per chunk, truncated) or None (scored as is)
    layouts: list[tuple[int, list[tuple[int, int]], list[int], bool] | None]
    policy: LongDocuments
    # per pair, its encoding when the layout pass made it (the pair went unchanged), else None
    encoded: list[Encoded | None] | None = None

    def fold(self, scores: np.ndarray) -> tuple[np.ndarray, list[DocumentReport | None]]:
        """Document scores (float32, one per input pair) and their reports from the scores of ``pairs``."""
        out = np.empty(len(self.layouts), dtype=np.float32)
        reports: list[DocumentReport | None] = []
        for i, lay in enumerate(self.layouts):
            if lay is None:
                out[i] = scores[i]
                reports.append(None)
                continue
            first, spans, tokens, truncated = lay
            value, best = aggregate(scores[first : first + len(spans)], self.policy.aggregate, self.policy.top_k)
            out[i] = value
            reports.append(DocumentReport(spans[best], len(spans), int(sum(tokens)), truncated))
        return out, reports


def aggregate(chunk_scores: Sequence[float], how: str, top_k: int = 3) -> tuple[float, int]:
    """The document's score from its chunks' and the chunk that decided it (for ``mean_top_k``: the best).

    >>> aggregate([0.1, 0.7, 0.3], "max"), aggregate([0.1, 0.7, 0.3], "first")
    ((0.7, 1), (0.1, 0))
    """
    values = np.asarray(chunk_scores, dtype=np.float64)
    best = int(np.argmax(values))  # first of equal maxima: the earliest span
    if how == "first":
        return float(values[0]), 0
    if how == "max":
        return float(values[best]), best
    k = min(top_k, len(values))
    return float(np.sort(values)[::-1][:k].mean()), best


def windows(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Token windows ``[start, end)`` of ``size`` covering ``n`` tokens, neighbours sharing ``overlap``.

    >>> windows(5, 8, 2), windows(9, 4, 0)
    ([(0, 5)], [(0, 4), (4, 8), (8, 9)])
    """
    step = size - overlap
    count = 1 + max(0, math.ceil((n - size) / step))
    return [(i * step, min(i * step + size, n)) for i in range(count)]


def _span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    return offsets[start][0], offsets[end - 1][1]


def plan(model, pairs: list[tuple[str, str]], *, instruction: str | None, policy: LongDocuments,
         field: str = "documents", query_field: str = "query", truncated_before: Sequence[bool] = (),
         unlaid: Sequence[str] = ("truncate",), refuse_as_too_large: bool = False,
         max_prompt_tokens: int | None = None) -> Plan:
    """The pairs ``model`` should score under ``policy``; ``truncated_before[i]`` marks a document a door cut
    already (by characters). Raises InvalidInput / TooLarge naming ``field[i]`` or the setting at fault.

    A model that cannot lay documents out (a remote one) is scored as is under the policies in ``unlaid`` (the
    server checks 'error' by its exact token counts); other policies and token limits need a layout.
    ``refuse_as_too_large`` makes 'error' a TooLarge (413, what ``truncate: false`` has always answered).
    ``max_prompt_tokens`` (vLLM's ``truncate_prompt_tokens``, at most the window) caps each whole pair: what is
    left beside the template and query is the document's cap, cut as ``max_tokens_per_doc`` cuts (the query is
    never cut: a pair whose template and query alone exceed it is refused, naming the field)."""
    for i, (_, doc) in enumerate(pairs):
        if len(doc) > policy.max_chars_per_document:
            raise TooLarge(f"{field}[{i}]: {len(doc)} characters, more than max_chars_per_document="
                           f"{policy.max_chars_per_document}", field=f"{field}[{i}]")
    if not pairs:
        return Plan([], [], policy, [])
    try:
        layouts: list[DocumentLayout] = model.document_layouts(pairs, instruction=instruction)
    except (AttributeError, UnsupportedModel):
        plain = (policy.policy in unlaid and policy.max_tokens_per_doc is None and policy.max_tokens_per_query is None
                 and max_prompt_tokens is None)
        if not plain:
            # the request asks for what this model cannot do: a 422 naming the request's field, like any
            # other valid-looking value the model refuses
            asked = ("max_tokens_per_doc" if policy.max_tokens_per_doc is not None else
                     "max_tokens_per_query" if policy.max_tokens_per_query is not None else
                     "truncate_prompt_tokens" if max_prompt_tokens is not None else "long_documents")
            raise InvalidInput(asked, f"{type(model).__name__} cannot lay documents out in its window, so "
                                      f"long_documents={policy.policy!r} and the token limits are not available "
                                      "for it") from None
        return Plan(list(pairs), [None] * len(pairs), policy)
    out_pairs: list[tuple[str, str]] = []
    out_layouts = []
    encoded: list[Encoded | None] = []
    for i, ((query, doc), lay) in enumerate(zip(pairs, layouts)):
        name = f"{field}[{i}]"
        if policy.max_tokens_per_query is not None and lay.query_tokens > policy.max_tokens_per_query:
            raise InvalidInput(query_field, f"{lay.query_tokens} tokens, more than max_tokens_per_query="
                               f"{policy.max_tokens_per_query}")
        if lay.budget < 1:
            raise InvalidInput(query_field, f"the template and query take {lay.overhead} tokens, the whole "
                               f"max_length={lay.max_length} window; shorten the query or raise max_length")
        offsets = lay.offsets
        n = len(offsets)
        whole = lay.encoded
        cut_early = bool(truncated_before[i]) if i < len(truncated_before) else False
        cap = policy.max_tokens_per_doc
        if max_prompt_tokens is not None:
            room = max_prompt_tokens - lay.overhead
            if room < (1 if n else 0):
                raise InvalidInput("truncate_prompt_tokens", f"{max_prompt_tokens} tokens leave none for {name}: the "
                                   f"template and {query_field} take {lay.overhead}; send a larger value or -1")
            cap = room if cap is None else min(cap, room)
        if cap is not None and n > cap:
            # the caller's own cap (Cohere's max_tokens_per_doc, vLLM's truncate_prompt_tokens): the document part
            # alone is cut, by its tokens
            n, cut_early, whole = cap, True, None
            doc = doc[: offsets[n - 1][1]]
        first = len(out_pairs)
        if n <= lay.budget:
            out_pairs.append((query, doc))
            encoded.append(whole)
            out_layouts.append((first, [(0, len(doc))], [n], cut_early))
        elif policy.policy == "error":
            why = (f"{n} tokens, more than the {lay.budget} that fit beside the template and query (max_length="
                   f"{lay.max_length}); shorten it, or send long_documents='chunk' or 'truncate'")
            raise TooLarge(f"{name}: {why}", field=name) if refuse_as_too_large else InvalidInput(name, why)
        elif policy.policy == "truncate":
            # the model cuts the document part itself (exactly as before this policy existed)
            out_pairs.append((query, doc))
            encoded.append(whole)
            out_layouts.append((first, [_span(offsets, 0, lay.budget)], [lay.budget], True))
        else:
            size, overlap = chunk_shape(policy, lay, name)
            spans, tokens = [], []
            parts = windows(n, size, overlap)
            if len(parts) > policy.max_chunks_per_document:
                raise TooLarge(f"{name}: {n} tokens make {len(parts)} chunks of {size}, more than "
                               f"max_chunks_per_document={policy.max_chunks_per_document}", field=name)
            for start, end in parts:
                a, b = _span(offsets, start, end)
                out_pairs.append((query, doc[a:b]))
                encoded.append(None)
                spans.append((a, b))
                tokens.append(end - start)
            out_layouts.append((first, spans, tokens, cut_early))
        if len(out_pairs) > policy.max_chunks_per_request:
            raise TooLarge(f"{field}: the request needs more than max_chunks_per_request="
                           f"{policy.max_chunks_per_request} chunks", field=field)
    return Plan(out_pairs, out_layouts, policy, encoded)


def chunk_shape(policy: LongDocuments, lay: DocumentLayout, name: str) -> tuple[int, int]:
    """Tokens per chunk and overlap for one document: the policy's, or what fits beside template and query
    (less :data:`RETOKENIZE_SLACK`) with an eighth of it, at most ``DEFAULT_OVERLAP``, shared."""
    if policy.chunk_tokens is None:
        size = max(lay.budget - RETOKENIZE_SLACK, 1) if lay.budget > 2 * RETOKENIZE_SLACK else lay.budget
    elif policy.chunk_tokens > lay.budget:
        raise InvalidInput("chunk_tokens", f"{policy.chunk_tokens} is larger than the window: {lay.budget} document "
                           f"tokens fit beside the template and query for {name} (max_length={lay.max_length})")
    else:
        size = policy.chunk_tokens
    overlap = min(DEFAULT_OVERLAP, size // 8) if policy.chunk_overlap is None else policy.chunk_overlap
    if overlap >= size:
        raise InvalidInput("chunk_overlap", f"must be smaller than the chunk size ({size} tokens for {name}), "
                           f"got {overlap}")
    return size, overlap


def scored_part(r) -> str:
    """What of a document was scored, for a table cell.

    >>> from qrank.types import RerankResult, Span
    >>> scored_part(RerankResult(0, 0.5, "x" * 900, Span(400, 900), chunks=3, tokens=300, truncated=False))
    'chars 400-900 (best of 3 chunks)'
    """
    if r.span is None:
        return "?"
    if r.chunks and r.chunks > 1:
        return f"chars {r.span.start}-{r.span.end} (best of {r.chunks} chunks)"
    return f"first {r.span.end} chars (cut)" if r.truncated else "all"


def parse_policies(spec: str | Sequence[str], base: LongDocuments | None = None) -> dict[str, LongDocuments]:
    """Named policies from ``truncate,truncate@256,chunk:max,chunk:mean_top_k,chunk:first`` (``qrank eval
    --long-documents``).

    Each item is ``POLICY[:AGGREGATE][@N]``; ``@N`` caps each document at its first N tokens first (Cohere's
    ``max_tokens_per_doc``, so ``truncate@256`` measures what that option costs); ``base`` gives every other
    setting (chunk_tokens, chunk_overlap, top_k).

    >>> sorted(parse_policies("truncate, chunk:mean_top_k, truncate@128"))
    ['chunk:mean_top_k', 'truncate', 'truncate@128']
    >>> parse_policies("truncate@128")["truncate@128"].max_tokens_per_doc
    128
    >>> parse_policies("chunk:mean")
    Traceback (most recent call last):
    qrank.errors.InvalidInput: long_documents: 'chunk:mean': chunk_aggregate must be one of max, mean_top_k, first
    """
    base = base or LongDocuments()
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise InvalidInput("long_documents", "name at least one policy, e.g. truncate,chunk:max")
    out: dict[str, LongDocuments] = {}
    for item in items:
        head, at, cap_text = item.partition("@")
        name, _, how = head.partition(":")
        if name not in POLICIES:
            raise InvalidInput("long_documents", f"{item!r}: policy must be one of {', '.join(POLICIES)}")
        if how and name != "chunk":
            raise InvalidInput("long_documents", f"{item!r}: only chunk takes an aggregate (chunk:max)")
        if how and how not in AGGREGATES:
            raise InvalidInput("long_documents", f"{item!r}: chunk_aggregate must be one of {', '.join(AGGREGATES)}")
        cap = base.max_tokens_per_doc
        if at:
            if not cap_text.isdigit() or int(cap_text) < 1:
                raise InvalidInput("long_documents", f"{item!r}: @N caps documents at N tokens: a positive integer")
            cap = int(cap_text)
        label = (f"chunk:{how or base.aggregate}" if name == "chunk" else name) + (f"@{cap}" if at else "")
        if label in out:
            raise InvalidInput("long_documents", f"{item!r}: named twice")
        out[label] = replace(base, policy=name, aggregate=how or base.aggregate, max_tokens_per_doc=cap).check()
    return out


def coverage(model, pairs: list[tuple[str, str]], policy: LongDocuments, *,
             instruction: str | None = None) -> tuple[int, int, int]:
    """``(pairs scored, document tokens the model saw, document tokens)`` for ``pairs`` under ``policy``:
    the share of each document's tokens inside some scored window (chunks cover all; a cut covers its budget).

    Counted a window of pairs at a time: a whole evaluation's pairs are no request, so they must not meet
    ``max_chunks_per_request`` (300 SciFact queries at depth 20 are 6,000 pairs, past its 4,096), and each window
    stays small in memory."""
    scored = seen = total = 0
    # each pair makes at most max_chunks_per_document chunks, so a window of this many never meets the request cap
    window = max(1, (policy.max_chunks_per_request or 1) // max(1, policy.max_chunks_per_document or 1))
    for i in range(0, len(pairs), window):
        part = pairs[i : i + window]
        laid = plan(model, part, instruction=instruction, policy=policy)
        layouts = model.document_layouts(part, instruction=instruction)
        n_seen, n_total = _covered(layouts, laid.layouts, policy)
        scored, seen, total = scored + len(laid.pairs), seen + n_seen, total + n_total
    return scored, seen, total


def _covered(layouts, folded_layouts, policy: LongDocuments) -> tuple[int, int]:
    seen = total = 0
    for lay, folded in zip(layouts, folded_layouts):
        n = len(lay.offsets)
        total += n
        if folded is None:
            seen += n
            continue
        _, spans, tokens, _ = folded
        cap = min(n, policy.max_tokens_per_doc or n)
        # windows are contiguous and start at token 0, so they cover up to the last one's end
        seen += min(cap, lay.budget) if len(spans) == 1 else cap
    return seen, total
