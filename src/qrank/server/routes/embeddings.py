"""``POST /v1/embeddings`` (OpenAI) and ``POST /embed`` (TEI)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic_core import to_json

from ...errors import InvalidInput
from ..inference import Inference
from ..schemas.common import Usage
from ..schemas.embeddings import EmbeddingItem, EmbeddingRequest, EmbeddingResponse, TEIEmbedRequest
from . import json_response, state_of

router = APIRouter(tags=["embeddings"])


def encode_base64(row: np.ndarray) -> str:
    """A vector as base64 of little-endian float32 bytes (OpenAI's ``encoding_format="base64"``).

    >>> encode_base64(np.array([1.0], dtype=np.float32))
    'AACAPw=='
    """
    return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")


@router.post(
    "/v1/embeddings", response_model=None, responses={200: {"model": EmbeddingResponse}}, summary="Embed texts (OpenAI)"
)
async def embeddings(request: Request, body: EmbeddingRequest) -> Response:
    out = await Inference(state_of(request), request).embed(
        body.model,
        body.input,
        is_query=body.input_type == "query",
        instruction=body.instruction,
        dim=body.dimensions,
        truncate=body.truncate,
        field="input",
        truncate_prompt_tokens=body.truncate_prompt_tokens,
    )
    if body.encoding_format == "base64":
        data = [EmbeddingItem(index=i, embedding=encode_base64(v)) for i, v in enumerate(out.vectors)]
    else:
        data = [EmbeddingItem(index=i, embedding=v) for i, v in enumerate(out.vectors.tolist())]
    return json_response(
        EmbeddingResponse(
            data=data, model=out.model.name, usage=Usage(prompt_tokens=out.tokens, total_tokens=out.tokens)
        )
    )


@router.post("/embed", response_model=None, responses={200: {"model": list[list[float]]}}, summary="Embed texts (TEI)")
async def embed_tei(request: Request, body: TEIEmbedRequest) -> Response:
    if not body.normalize:
        raise InvalidInput(
            "normalize", "qrank always returns L2-normalised vectors; send normalize=true or leave it out"
        )
    out = await Inference(state_of(request), request).embed(
        body.model,
        body.inputs,
        is_query=body.prompt_name == "query",
        instruction=None,
        dim=body.dimensions,
        truncate=body.truncate,
        field="inputs",
    )
    return Response(to_json(out.vectors.tolist()), media_type="application/json")
