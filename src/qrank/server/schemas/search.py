"""Search over collections (the :class:`~qrank.pipeline.Pipeline` behind ``qrank index``).

POST /v1/search {"collection": "docs", "query": "q", "k": 10, "hybrid": false, "rerank": true}
→ {"object": "list", "collection", "results": [{"id", "score", "text", "title", "rank", ...}]}

POST /v1/collections/{name}/documents {"documents": ["text", {"id", "text", "title", "metadata"}]}
→ {"collection", "added", "replaced", "unchanged", "passages", "embedded", "count"}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from .common import Instruction, ModelName, PositiveInt, QueryText, ResponseModel, StrictModel, Text

# the rule of qrank.index.collection.check_name, published (ECMA-262 "$" is the end of the text: no newline)
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CollectionName = Annotated[
    str, Field(min_length=1, max_length=128), WithJsonSchema({"type": "string", "pattern": COLLECTION_PATTERN})
]
# documents must not be blank (the pipeline refuses them naming the field)
NonBlankText = Annotated[Text, WithJsonSchema({"type": "string", "pattern": r"\S"})]
Scalar = str | int | float | bool


class SearchRequest(StrictModel):
    collection: CollectionName = Field(description="collection name (see GET /v1/collections)")
    query: QueryText
    k: PositiveInt = Field(10, description="results to return")
    candidates: PositiveInt | None = Field(None, description="first-stage candidates (default: the index setting)")
    mode: Literal["dense", "hybrid", "bm25"] | None = Field(None, description="first stage; 'bm25' returns BM25 alone")
    hybrid: bool = Field(False, description="fuse dense and BM25 rankings (same as mode='hybrid')")
    rerank: bool | None = Field(None, description="rerank the candidates (default: when a reranker is available)")
    reranker: ModelName | None = Field(None, description="served reranker (default: the collection's, else the first)")
    filter: dict[str, Scalar | list[Scalar]] | None = Field(
        None, description="metadata filter {key: value or [values]}"
    )
    # the body addresses two models, so each gets its own field (issue 15.4)
    reranker_instruction: Instruction | None = Field(
        None, description="the reranker's task (Qwen3 rerankers; default: models.reranker_instruction or the model's)"
    )
    query_task: Instruction | None = Field(
        None, description="the query task of a Qwen3-Embedding collection (default: models.query_task or the model's)"
    )
    query_prompt: Instruction | None = Field(
        None, description="the raw query prefix of a sentence-transformers collection (default: models.query_prompt "
        "or the model's 'query' prompt)"
    )
    min_score: float | None = Field(
        None, allow_inf_nan=False, description="qrank: leave out documents whose rerank score is below this "
        "(P(relevant) when the server runs calibrated rerankers); needs reranking"
    )
    instruction: Instruction | None = Field(
        None, description="deprecated: one value for each of reranker_instruction and the query task/prompt not given",
        json_schema_extra={"deprecated": True},
    )


class SearchHitItem(ResponseModel):
    id: str
    score: float
    text: str
    title: str | None = None
    metadata: dict[str, Any] = {}
    rank: int


class SearchResponse(ResponseModel):
    object: str = "list"
    collection: str
    results: list[SearchHitItem]


class AddDocumentsRequest(StrictModel):
    documents: Annotated[list[NonBlankText | dict[str, Any]], Field(min_length=1)] = Field(
        description="strings, or objects {id, text, title?, metadata?}"
    )
    ids: list[Text] | None = Field(None, description="ids for string documents (default: a hash of the text)")
    metadata: list[dict[str, Any] | None] | None = Field(None, description="one metadata object per document")
    embedder: ModelName | None = Field(None, description="served embedder for a NEW collection (default: the first)")
