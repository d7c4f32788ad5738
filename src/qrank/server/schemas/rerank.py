"""Rerank bodies: vLLM / Jina / Cohere (v1 and v2) share one shape; TEI's shape is accepted on ``/rerank``.

vLLM / Jina / Cohere::

    {"model": "m", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1, "return_documents": true}
    → {"id", "model", "results": [{"index", "relevance_score", "document": {"text"}}], "usage": {"total_tokens"}}

TEI (``/rerank`` with ``texts``)::

    {"query": "q", "texts": ["a", "b"], "raw_scores": false, "return_text": false, "truncate": true}
    → [{"index", "score", "text"?}]
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from .common import (
    DocumentText,
    Instruction,
    ModelName,
    PositiveInt,
    QueryText,
    ResponseModel,
    StrictModel,
    Text,
    Usage,
)


class _RerankFields(StrictModel):
    model: ModelName | None = Field(None, description="served model name; default: the first reranker")
    query: QueryText = Field(description="the query (not empty)")
    top_n: PositiveInt | None = Field(None, description="keep the best N results (default: all)")
    return_documents: bool = Field(True, description="include each document's text in the results")
    instruction: Instruction | None = Field(
        None, description="the reranker's instruction: a Qwen3 reranker's task (default: models.reranker_instruction "
        "or the model's; ignored by cross-encoders)"
    )
    truncate: bool | None = Field(None, description="truncate over-long documents (default: the server's setting)")
    max_tokens_per_doc: PositiveInt | None = Field(
        None, description="accepted for Cohere compatibility; documents are truncated to the model's max_length"
    )


class RerankRequest(_RerankFields):
    """vLLM / Jina / Cohere rerank body."""

    documents: Annotated[list[DocumentText], Field(min_length=1)] = Field(
        description="strings, or objects with a 'text' field"
    )


class AnyRerankRequest(_RerankFields):
    """``/rerank``: the vLLM/Jina/Cohere body, or TEI's (``texts`` instead of ``documents``)."""

    # one of the two lists is required: published so that clients (and schemathesis) know it
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["documents"], "properties": {"documents": {"type": "array"}}},
                {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
            ]
        }
    )

    documents: Annotated[list[DocumentText], Field(min_length=1)] | None = Field(
        None, description="vLLM/Jina/Cohere: strings or objects with a 'text' field"
    )
    texts: Annotated[list[Text], Field(min_length=1)] | None = Field(None, description="TEI: the documents")
    raw_scores: bool = Field(False, description="TEI: return logits instead of probabilities")
    return_text: bool = Field(False, description="TEI: include each text in the results")


class RerankDocument(ResponseModel):
    text: str


class RerankResultItem(ResponseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(ResponseModel):
    id: str
    model: str
    results: list[RerankResultItem]
    usage: Usage


class TEIRerankItem(ResponseModel):
    index: int
    score: float
    text: str | None = None
