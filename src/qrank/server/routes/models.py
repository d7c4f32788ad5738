"""``GET /v1/models``: every served model under its public name."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..schemas.models import ModelCard, ModelList
from . import json_response, state_of

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=None, responses={200: {"model": ModelList}}, summary="List served models")
async def list_models(request: Request) -> Response:
    state = state_of(request)
    cards = []
    for m in state.pool.models:
        info = m.info
        cards.append(
            ModelCard(
                id=m.name,
                created=int(state.started_at),
                root=info.id,
                max_model_len=int(info.max_length),
                qrank={
                    "role": m.role,
                    "kind": info.kind,
                    "dim": info.dim,
                    "supports_dims": info.supports_dims,
                    "dtype": info.dtype,
                    "device": info.device,
                    "revision": info.revision,
                },
            )
        )
    return json_response(ModelList(data=cards))
