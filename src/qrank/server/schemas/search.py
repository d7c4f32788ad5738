"""Search over collections (the :class:`~qrank.pipeline.Pipeline` behind ``qrank index``).

POST /v1/search {"collection": "docs", "query": "q", "k": 10, "hybrid": false, "rerank": true}
→ {"object": "list", "collection", "results": [{"id", "score", "text", "title", "rank", "rerank_score", ...}]}

Each result carries ``rerank_score``, null when the search did not rerank (as ``qrank search --json`` prints it);
the other scores are left out when they do not apply:

>>> SearchHitItem(id="a", score=1.5, text="t", rank=1, rerank_score=None).model_dump_json(exclude_none=True)
'{"id":"a","score":1.5,"text":"t","metadata":{},"rank":1,"rerank_score":null}'

POST /v1/collections/{name}/documents {"documents": ["text", {"id", "text", "title", "metadata"}]}
→ {"collection", "added", "replaced", "unchanged", "passages", "embedded", "same_text", "count"}

POST /v1/collections/{name}/documents/delete {"ids": ["a", "b"]}
→ {"collection", "deleted", "not_found", "count"}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, model_serializer
from pydantic_core import PydanticCustomError

from ...index.documents import MAX_ID_CHARS
from .common import Instruction, ModelName, PositiveInt, QueryText, ResponseModel, StrictModel, Text
from .rerank import Span

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
    """One result (qrank.retrieval.SearchHit). rerank_score is always there, null when the search did not rerank
    (as qrank search --json prints it); the other optional fields are left out when they do not apply."""

    id: str
    score: float = Field(description="what the ranking used: the rerank score when reranked, else the fusion score "
                         "(hybrid), the BM25 score (mode 'bm25') or the dense score")
    text: str
    title: str | None = None
    metadata: dict[str, Any] = {}
    dense_score: float | None = Field(None, description="the best passage's cosine similarity to the query")
    rerank_score: float | None = Field(description="the reranker's score; null when the search did not rerank")
    bm25_score: float | None = Field(None, description="BM25 score (hybrid and bm25 modes)")
    fusion_score: float | None = Field(None, description="reciprocal rank fusion score (hybrid)")
    passage: str | None = Field(None, description="the passage that scored best, when the document has several")
    rank: int
    span: Span | None = Field(None, description="characters of the best passage whose rerank score decided the "
                              "document's")
    chunks: int | None = Field(None, description="chunks of the best passage the reranker scored")
    truncated: bool | None = Field(None, description="true when part of the best passage was not scored")

    @model_serializer(mode="wrap")
    def _rerank_score_kept(self, handler):
        # responses leave out None fields (exclude_none); rerank_score stays, null meaning "not reranked"
        data = handler(self)
        if isinstance(data, dict) and "rerank_score" not in data:
            data["rerank_score"] = None
        return data


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


def _id_chars(value: str) -> str:
    # pydantic's own max_length, put after QueryText's validators, would say "at most 512 items"
    if len(value) > MAX_ID_CHARS:
        raise PydanticCustomError("string_too_long", "must be at most {max} characters, got {n}",
                                  {"max": MAX_ID_CHARS, "n": len(value)})
    return value


# a stored document's id, as qrank.index.documents.check_ids accepts it (there a number is turned into a string; here
# the body is strict: a number is a type error naming ids[i])
DocumentId = Annotated[QueryText, AfterValidator(_id_chars), WithJsonSchema(
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": r"\S"})]


class DeleteDocumentsRequest(StrictModel):
    ids: Annotated[list[DocumentId], Field(min_length=1)] = Field(
        description="ids of the documents to delete (at least one; an id not stored is reported in not_found)"
    )


class DeleteDocumentsResponse(ResponseModel):
    collection: str
    deleted: int = Field(description="documents deleted (each id once)")
    not_found: list[str] = Field(description="the requested ids the collection did not hold, in request order")
    count: int = Field(description="documents in the collection afterwards")
