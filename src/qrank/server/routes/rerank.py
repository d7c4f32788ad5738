"""``POST /v1/rerank``, ``/v2/rerank`` (vLLM, Jina, Cohere) and ``/rerank`` (the same, or TEI's body)."""

from __future__ import annotations

import math
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import InvalidInput
from ..inference import Inference, Ranked
from ..schemas.common import Usage
from ..schemas.rerank import (
    AnyRerankRequest,
    LongDocumentReport,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResultItem,
    TEIRerankItem,
)
from . import json_response, state_of

router = APIRouter(tags=["rerank"])

_RESPONSES = {200: {"model": RerankResponse}}


def _standard(ranked: Ranked, return_documents: bool) -> RerankResponse:
    return RerankResponse(
        id=f"rerank-{uuid.uuid4().hex}",
        model=ranked.model.name,
        results=[
            RerankResultItem(
                index=r.index,
                relevance_score=r.score,
                document=RerankDocument(text=r.document) if return_documents else None,
                **LongDocumentReport.fields_of(r),
            )
            for r in ranked.results
        ],
        usage=Usage(total_tokens=ranked.tokens),
    )


async def _rerank(request: Request, body, documents: list[str], field: str) -> Ranked:
    return await Inference(state_of(request), request).rerank(
        body.model,
        body.query,
        documents,
        top_n=body.top_n,
        instruction=body.instruction,
        truncate=body.truncate,
        field=field,
        long_documents=body.long_document_options(),
    )


@router.post(
    "/v1/rerank", response_model=None, responses=_RESPONSES, summary="Rerank documents (vLLM / Jina / Cohere v1)"
)
async def rerank_v1(request: Request, body: RerankRequest) -> Response:
    ranked = await _rerank(request, body, body.documents, "documents")
    return json_response(_standard(ranked, body.return_documents))


@router.post("/v2/rerank", response_model=None, responses=_RESPONSES, summary="Rerank documents (Cohere v2)")
async def rerank_v2(request: Request, body: RerankRequest) -> Response:
    ranked = await _rerank(request, body, body.documents, "documents")
    return json_response(_standard(ranked, body.return_documents))


@router.post(
    "/rerank",
    response_model=None,
    responses={200: {"model": RerankResponse | list[TEIRerankItem]}},
    summary="Rerank documents (vLLM/Jina body, or TEI's body with 'texts')",
)
async def rerank_any(request: Request, body: AnyRerankRequest) -> Response:
    if body.texts is not None and body.documents is not None:
        raise InvalidInput("texts", "give either 'documents' (vLLM/Jina/Cohere) or 'texts' (TEI), not both")
    if body.texts is None:
        if body.documents is None:
            raise InvalidInput("documents", "is required (or 'texts' for the TEI protocol)")
        ranked = await _rerank(request, body, body.documents, "documents")
        return json_response(_standard(ranked, body.return_documents))
    ranked = await _rerank(request, body, body.texts, "texts")
    raw = body.raw_scores and _scores_are_probabilities(ranked)
    items = [
        TEIRerankItem(
            index=r.index, score=_logit(r.score) if raw else r.score, text=r.document if body.return_text else None,
            **LongDocumentReport.fields_of(r),
        )
        for r in ranked.results
    ]
    return json_response(items)


def _scores_are_probabilities(ranked: Ranked) -> bool:
    # Qwen3 rerankers and sigmoid cross-encoders answer probabilities; identity/tanh heads are raw already
    return ranked.model.info.score_activation == "sigmoid"


def _logit(p: float) -> float:
    """The raw score behind a probability (TEI's ``raw_scores``), clipped where float32 saturates.

    >>> round(_logit(0.5), 6)
    0.0
    """
    eps = 2.0**-24
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p) - math.log1p(-p)
