"""Rerank bodies: vLLM / Jina / Cohere (v1 and v2) share one shape; TEI's shape is accepted on ``/rerank``.

vLLM / Jina / Cohere::

    {"model": "m", "query": "q", "documents": ["a", {"text": "b", "id": 7}], "top_n": 1, "return_documents": true}
    → {"id", "model", "results": [{"index", "relevance_score", "document": {"text", ...}}], "usage": {"total_tokens"}}

A result's ``document`` is the document as it was sent (Cohere's "the documents passed in"): ``{"text": s}`` for a
string, the caller's object for an object document (every key, values unchanged), with ``text`` added, holding the
text that was ranked, when the object has none (so that clients reading ``document.text`` keep working).

qrank adds ``min_score`` (leave out results scoring below it) and ``return_raw_scores`` (each result's
``raw_score``: the model's raw output) to every body style. Cohere v1's ``rank_fields`` (object documents ranked by
the named keys) and vLLM's ``truncate_prompt_tokens`` (each pair cut to N tokens) are honoured, never ignored.

TEI (``/rerank`` with ``texts``)::

    {"query": "q", "texts": ["a", "b"], "raw_scores": false, "return_text": false, "truncate": true}
    → [{"index", "score", "text"?}]
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_serializer
from pydantic_core import PydanticCustomError

from .common import (
    Document,
    FieldName,
    Instruction,
    ModelName,
    ObjectDocument,
    PositiveInt,
    PromptTokens,
    QueryText,
    ResponseModel,
    StrictModel,
    nullable_optionals,
    Text,
    Usage,
)

NonNegativeInt = Annotated[int, Field(ge=0, le=2**31 - 1)]


MAX_RANK_FIELDS = 64


def _distinct(keys: list[str]) -> list[str]:
    seen = set()
    for key in keys:
        if key in seen:
            raise PydanticCustomError("rank_fields", "names '{key}' twice: each key once", {"key": key})
        seen.add(key)
    return keys


class LongDocumentFields(StrictModel):
    """qrank's long-document fields and the protocols' token caps (see qrank.long_documents)."""

    long_documents: Literal["chunk", "truncate", "error"] | None = Field(
        None, description="qrank: documents longer than the model's window are 'truncate'd (document part only, "
        "reported 'truncated'), 'chunk'ed (overlapping windows scored, aggregated; 'span' says which scored best) or "
        "refused with 422 ('error'). Default: the server's models.long_documents; 'error' when truncate is false"
    )
    chunk_tokens: PositiveInt | None = Field(
        None, description="qrank, long_documents='chunk': document tokens per chunk (default: what fits beside the "
        "template and query); larger than that is a 422"
    )
    chunk_overlap: NonNegativeInt | None = Field(
        None, description="qrank, long_documents='chunk': tokens neighbouring chunks share (less than chunk_tokens)"
    )
    chunk_aggregate: Literal["max", "mean_top_k", "first"] | None = Field(
        None, description="qrank, long_documents='chunk': a document's score from its chunks' scores"
    )
    chunk_top_k: PositiveInt | None = Field(None, description="qrank, chunk_aggregate='mean_top_k': chunks averaged")
    max_tokens_per_doc: PositiveInt | None = Field(
        None, description="Cohere v2: cut each document to its first N tokens (the document part only; template "
        "and query stay whole); results say 'truncated'"
    )
    max_tokens_per_query: PositiveInt | None = Field(
        None, description="refuse (422) a query longer than N tokens instead of scoring it"
    )
    truncate_prompt_tokens: PromptTokens | None = Field(
        None, description="vLLM: cut each pair (template, query and document) to N tokens by cutting the end of the "
        "document part (the query is never cut; a query that leaves no room is a 422); -1 is the model's max_length, "
        "more is a 422. Results say 'truncated'; it cuts even with truncate=false, as max_tokens_per_doc does"
    )

    def long_document_options(self) -> dict:
        return {k: getattr(self, k) for k in LongDocumentFields.model_fields}


class _RerankFields(LongDocumentFields):
    model: ModelName | None = Field(None, description="served model name; default: the first reranker")
    query: QueryText = Field(description="the query (not empty)")
    top_n: PositiveInt | None = Field(None, description="keep the best N results (default: all)")
    return_documents: bool = Field(
        True, description="include each document in the results, as sent: a string as {'text': ...}, an object with "
        "all its keys ('text', the text that was ranked, added when it has none)"
    )
    instruction: Instruction | None = Field(
        None, description="the reranker's instruction: a Qwen3 reranker's task (default: models.reranker_instruction "
        "or the model's; ignored by cross-encoders)"
    )
    truncate: bool | None = Field(
        None, description="TEI: false refuses (422) a document longer than the window unless long_documents says "
        "otherwise (default: the server's setting)"
    )
    min_score: float | None = Field(
        None, allow_inf_nan=False, description="qrank: leave out results whose score is below this (applied "
        "before top_n; on the returned score, i.e. P(relevant) when the server runs calibrated models)"
    )
    return_raw_scores: bool = Field(
        False, description="qrank: add each result's 'raw_score', the model's raw output from the same pass: a "
        "calibrated model's uncalibrated score, otherwise the logit behind a sigmoid score (TEI's raw_scores)"
    )
    # declared before 'documents' (in the subclasses), so that the documents' validator sees it
    # at most 64 distinct keys: the joined text is built while the body is validated, before any character limit,
    # so a key named again and again would copy its value again and again (a 125 KB body grew to 1.4 GB)
    rank_fields: Annotated[list[FieldName], Field(min_length=1, max_length=MAX_RANK_FIELDS),
                           AfterValidator(_distinct)] | None = Field(
        None, description="Cohere v1: rank object documents by these keys, in this order: one key's value as it is, "
        "several as 'key: value' lines; a document without one of them is a 422 naming it (default: 'text'); at "
        f"most {MAX_RANK_FIELDS} keys, each once"
    )


class RerankRequest(_RerankFields):
    """vLLM / Jina / Cohere rerank body."""

    documents: Annotated[list[Document], Field(min_length=1)] = Field(
        description="strings, or objects with a 'text' field (or with the keys rank_fields names); other keys are "
        "returned with the document"
    )


def _one_list_required(schema: dict) -> None:
    nullable_optionals(schema)
    schema["anyOf"] = [
        {"required": ["documents"], "properties": {"documents": {"type": "array"}}},
        {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
    ]


class AnyRerankRequest(_RerankFields):
    """``/rerank``: the vLLM/Jina/Cohere body, or TEI's (``texts`` instead of ``documents``)."""

    # one of the two lists is required: published so that clients (and schemathesis) know it
    model_config = ConfigDict(json_schema_extra=lambda schema, model: _one_list_required(schema))

    documents: Annotated[list[Document], Field(min_length=1)] | None = Field(
        None, description="vLLM/Jina/Cohere: strings, or objects with a 'text' field (or with the keys rank_fields "
        "names); other keys are returned with the document"
    )
    texts: Annotated[list[Text], Field(min_length=1)] | None = Field(None, description="TEI: the documents")
    raw_scores: bool = Field(False, description="TEI: return logits instead of probabilities")
    return_text: bool = Field(False, description="TEI: include each text in the results")


class RerankDocument(ResponseModel):
    """A result's document as it was sent (Cohere: "the documents passed in"): ``{"text": s}`` for a string
    document; for an object, the caller's object, every key and value as sent, with ``text`` (the text that was
    ranked) added when it has none."""

    text: str = Field(description="a string document; an object's own 'text', or, when it has none (or null), the "
                      "text that was ranked (its rank_fields text)")

    @classmethod
    def of(cls, document: str | ObjectDocument) -> RerankDocument:
        """The result's document for a validated request document (:data:`~.common.Document`).

        >>> RerankDocument.of(ObjectDocument("title: T\\nyear: 2020", {"title": "T", "year": 2020, "id": None}))
        RerankDocument(text='title: T\\nyear: 2020', title='T', year=2020, id=None)
        >>> RerankDocument.of(ObjectDocument("Cats", {"text": "Cats", "id": 7})).model_dump()
        {'text': 'Cats', 'id': 7}
        """
        if isinstance(document, str):
            return cls(text=document)
        source = document.source
        # the object's own 'text' (a string: the door refused any other unless its 'null' stands for none), else the
        # text it was ranked by; the other values are held by reference, not copied
        text = source.get("text")
        return cls(**{**source, "text": document.text if text is None else text})

    @model_serializer(mode="wrap")
    def _as_sent(self, handler):
        # responses leave out None fields (exclude_none); a caller's own null stays: the object is returned as sent
        data = handler(self)
        extra = self.__pydantic_extra__
        if extra and any(key not in data for key in extra):
            data = {"text": data["text"], **{key: data.get(key) for key in extra}}
        return data


class Span(ResponseModel):
    start: int = Field(description="first character of the span in the text that was ranked: a string document "
                       "as sent, an object document's 'text', or its rank_fields text when the request names them "
                       "(which may differ from the 'text' an object is returned with)")
    end: int = Field(description="character after the span: ranked_text[start:end]")


class LongDocumentReport(ResponseModel):
    """qrank: how the document was scored (present when the model lays documents out in its window)."""

    span: Span | None = Field(None, description="qrank: the characters whose score decided the document's")
    chunks: int | None = Field(None, description="qrank: chunks scored (1: the document was scored in one piece)")
    tokens: int | None = Field(None, description="qrank: document tokens scored (overlaps counted per chunk)")
    truncated: bool | None = Field(None, description="qrank: true when part of the document was not scored")

    @staticmethod
    def fields_of(report) -> dict:
        """The fields of a :class:`qrank.types.RerankResult` or :class:`qrank.long_documents.DocumentReport`."""
        if report is None or report.span is None:
            return {}
        return {"span": Span(start=report.span[0], end=report.span[1]), "chunks": report.chunks,
                "tokens": report.tokens, "truncated": report.truncated}


class RerankResultItem(LongDocumentReport):
    index: int
    relevance_score: float
    document: RerankDocument | None = Field(
        None, description="with return_documents: the document as sent ({'text': ...} for a string; an object with all "
        "its keys, 'text' added with the text that was ranked when it has none)"
    )
    raw_score: float | None = Field(None, description="qrank, with return_raw_scores: the model's raw output")


class RerankResponse(ResponseModel):
    id: str
    model: str
    results: list[RerankResultItem]
    usage: Usage


class TEIRerankItem(LongDocumentReport):
    index: int
    score: float
    text: str | None = None
    raw_score: float | None = Field(None, description="qrank, with return_raw_scores: the model's raw output")
