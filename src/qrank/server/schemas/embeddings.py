"""Embedding bodies: OpenAI's ``/v1/embeddings`` and TEI's ``/embed``.

OpenAI::

    {"model": "m", "input": ["a", "b"], "dimensions": 256, "encoding_format": "float" | "base64"}
    → {"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}

``base64`` is the little-endian float32 bytes of each vector (what the ``openai`` SDK asks for by default).
qrank extras: ``input_type`` ("query" applies the model's query instruction) and ``instruction`` (for queries:
the task of a Qwen3-Embedding model, or the raw query prefix of a sentence-transformers model).

TEI::

    {"inputs": "a" | ["a", "b"], "truncate": true, "normalize": true, "dimensions": 256} → [[...], ...]
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import (
    Instruction,
    ModelName,
    PositiveInt,
    PromptTokens,
    QueryList,
    ResponseModel,
    StrictModel,
    Usage,
)

# a blank input has nothing to embed: refused (422 naming input[i] / inputs[i]) like a blank query
InputList = QueryList


class EmbeddingRequest(StrictModel):
    model: ModelName | None = Field(None, description="served model name; default: the first embedder")
    input: InputList = Field(
        description="a non-blank string or a list of them (token-id arrays are not supported)"
    )
    dimensions: PositiveInt | None = Field(
        None, description="output dimension (Matryoshka truncation + renormalisation)"
    )
    encoding_format: Literal["float", "base64"] = Field("float", description="'float' lists or 'base64' float32 bytes")
    input_type: Literal["query", "document"] = Field(
        "document", description="qrank: 'query' applies the query instruction"
    )
    instruction: Instruction | None = Field(
        None, description="qrank, with input_type 'query': the task of a Qwen3-Embedding model, or the raw query "
        "prefix of a sentence-transformers model (default: models.query_task / models.query_prompt, else the model's)"
    )
    truncate: bool | None = Field(None, description="truncate over-long inputs (default: the server's setting)")
    truncate_prompt_tokens: PromptTokens | None = Field(
        None, description="vLLM: cut each input (with its instruction and special tokens) to N tokens, keeping its "
        "start; -1 is the model's max_length, more is a 422; it cuts even with truncate=false"
    )
    user: str | None = Field(None, description="accepted for OpenAI compatibility; ignored")


class EmbeddingItem(ResponseModel):
    object: str = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(ResponseModel):
    object: str = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class TEIEmbedRequest(StrictModel):
    inputs: InputList = Field(description="a non-blank string or a list of them")
    model: ModelName | None = Field(None, description="qrank: served model name; default: the first embedder")
    truncate: bool | None = Field(None, description="truncate over-long inputs (default: the server's setting)")
    normalize: bool = Field(True, description="vectors are always L2-normalised; false is refused")
    dimensions: PositiveInt | None = Field(None, description="output dimension (Matryoshka truncation)")
    prompt_name: Literal["query", "document"] | None = Field(None, description="'query' applies the query instruction")
