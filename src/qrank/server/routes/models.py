"""``GET /v1/models``: every served model under its public name; ``GET /v1/models/{id}``: one of them (OpenAI's
retrieve); ``GET /info``: one model, TEI's way."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ... import __version__
from ..schemas.models import ModelCard, ModelList, TEIInfo
from . import json_response, state_of

router = APIRouter(tags=["models"])


def _card(state, m) -> ModelCard:
    info = m.info
    return ModelCard(
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
            "score_activation": info.score_activation,
            "engine": info.extra.get("engine"),  # what the engine decided at load (None: no local engine)
            # the FP8 gate's agreement with bfloat16 on the probe set (null when not quantized)
            "quantization": info.extra.get("quantization"),
            # engine.deterministic: scores bit-identical whatever shares the batch (docs/deterministic.md)
            "deterministic": bool(info.extra.get("deterministic")),
        },
    )


@router.get("/v1/models", response_model=None, responses={200: {"model": ModelList}}, summary="List served models")
async def list_models(request: Request) -> Response:
    state = state_of(request)
    return json_response(ModelList(data=[_card(state, m) for m in state.pool.models]))


@router.get("/v1/models/{model_id:path}", response_model=None, responses={200: {"model": ModelCard}},
            summary="Describe one served model (OpenAI's retrieve model)")
async def retrieve_model(request: Request, model_id: str) -> Response:
    """The card ``/v1/models`` lists for ``model_id`` (a hub name's ``/`` included); 404 naming ``model``."""
    state = state_of(request)
    served = state.pool.named(model_id)
    return json_response(_card(state, served))


@router.get("/info", response_model=None, responses={200: {"model": TEIInfo}},
            summary="Describe one model (text-embeddings-inference's /info)")
async def info(
    request: Request,
    model: str | None = Query(None, description="served name (default: the first reranker, else the first embedder)"),
) -> Response:
    """TEI clients read the model, its dtype and its input limit here. TEI serves one model; qrank
    describes the default reranker (or embedder), or the one ``?model=`` names."""
    state = state_of(request)
    if model is None:
        served = next((m for m in state.pool.models if m.role == "reranker"), state.pool.models[0])
    else:
        served = state.pool.named(model)
    info = served.info
    s = state.settings
    kind = (
        {"reranker": {"id2label": {"0": "LABEL_0"}}}
        if served.role == "reranker"
        # TEI's names for sentence-transformers' pooling modes (TEI: cls, mean, splade, last_token)
        else {"embedding": {"pooling": {"lasttoken": "last_token"}.get(pool, pool)
                            if (pool := info.extra.get("pooling")) else "unknown"}}
    )
    return json_response(TEIInfo(
        model_id=served.name,
        model_sha=info.revision or None,
        model_dtype=info.dtype,
        model_type=kind,
        max_concurrent_requests=s.server.max_concurrent,
        max_input_length=int(info.max_length),
        max_batch_tokens=s.engine.max_batch_tokens,
        max_client_batch_size=s.server.max_documents if served.role == "reranker" else s.server.max_inputs,
        version=__version__,
        qrank={"role": served.role, "kind": info.kind, "dim": info.dim, "root": info.id,
               "score_activation": info.score_activation},
    ))
