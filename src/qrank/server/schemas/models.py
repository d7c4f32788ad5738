"""``GET /v1/models`` (OpenAI/vLLM list shape, with qrank details under ``qrank``)."""

from __future__ import annotations

from .common import ResponseModel


class ModelCard(ResponseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "qrank"
    root: str
    max_model_len: int
    qrank: dict


class ModelList(ResponseModel):
    object: str = "list"
    data: list[ModelCard]
