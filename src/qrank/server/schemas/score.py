"""vLLM's score body: ``text_1`` against ``text_2``, one-to-one (equal lengths) or one-to-many.

{"model": "m", "text_1": "q", "text_2": ["a", "b"]}
→ {"id", "object": "list", "model", "data": [{"index", "object": "score", "score"}], "usage"}
"""

from __future__ import annotations

from pydantic import Field

from .common import Instruction, ModelName, QueryList, TextList, Usage
from .rerank import LongDocumentFields, LongDocumentReport, ResponseModel


class ScoreRequest(LongDocumentFields):
    model: ModelName | None = Field(None, description="served model name; default: the first reranker")
    text_1: QueryList = Field(description="query: one string (one-to-many) or a list as long as text_2 (one-to-one)")
    text_2: TextList = Field(description="documents: one string or a list")
    instruction: Instruction | None = Field(
        None, description="the reranker's instruction: a Qwen3 reranker's task (default: models.reranker_instruction "
        "or the model's; ignored by cross-encoders)"
    )
    truncate: bool | None = Field(None, description="truncate over-long inputs (default: the server's setting)")


class ScoreItem(LongDocumentReport):
    index: int
    object: str = "score"
    score: float


class ScoreResponse(ResponseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ScoreItem]
    usage: Usage
