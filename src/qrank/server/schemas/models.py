"""``GET /v1/models`` (OpenAI/vLLM list shape, with qrank details under ``qrank``)."""

from __future__ import annotations

from pydantic import Field

from .common import ResponseModel


class ModelCard(ResponseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "qrank"
    root: str
    max_model_len: int
    qrank: dict = Field(description="role, kind, dim, supports_dims, dtype, device, revision, and engine: the "
                        "choices the model's engine resolved at load (attention, compile, cuda_graphs, "
                        "first_chunk_tokens, fallbacks…), or null for a backend without one")


class ModelList(ResponseModel):
    object: str = "list"
    data: list[ModelCard]


class TEIInfo(ResponseModel):
    """text-embeddings-inference's ``GET /info`` answer (its fields, plus qrank's own under ``qrank``)."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: dict
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_client_batch_size: int
    version: str
    qrank: dict
