"""``POST /v1/rerank``, ``/v2/rerank`` (vLLM, Jina, Cohere) and ``/rerank`` (the same, or TEI's body).

Documents are ranked by their text (:func:`~qrank.server.schemas.common.document_text`); with ``return_documents``
each result returns its document as sent (:meth:`~qrank.server.schemas.rerank.RerankDocument.of`)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...calibration import logit
from ...errors import InvalidInput
from ..inference import Inference, Ranked
from ..schemas.common import Document, Usage, document_text
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


def _standard(ranked: Ranked, documents: list[Document] | None) -> RerankResponse:
    """The vLLM/Jina/Cohere answer; ``documents`` (the request's, None unless return_documents) are returned as
    sent."""
    return RerankResponse(
        id=f"rerank-{uuid.uuid4().hex}",
        model=ranked.model.name,
        results=[
            RerankResultItem(
                index=r.index,
                relevance_score=r.score,
                document=None if documents is None else RerankDocument.of(documents[r.index]),
                raw_score=r.raw_score,
                **LongDocumentReport.fields_of(r),
            )
            for r in ranked.results
        ],
        usage=Usage(total_tokens=ranked.tokens),
    )


async def _rerank(request: Request, body, documents: list[str], field: str, raw_field: str | None = None) -> Ranked:
    """``documents``: the texts to rank (a request's documents go through :func:`_texts`)."""
    if body.return_raw_scores:
        raw_field = "return_raw_scores"
    return await Inference(state_of(request), request).rerank(
        body.model,
        body.query,
        documents,
        top_n=body.top_n,
        instruction=body.instruction,
        truncate=body.truncate,
        field=field,
        long_documents=body.long_document_options(),
        min_score=body.min_score,
        raw_field=raw_field,
    )


def _texts(documents: list[Document]) -> list[str]:
    # the text each document is ranked by: a new list of the same strings, nothing copied
    return [document_text(d) for d in documents]


def _returned(body) -> list[Document] | None:
    return body.documents if body.return_documents else None


@router.post(
    "/v1/rerank", response_model=None, responses=_RESPONSES, summary="Rerank documents (vLLM / Jina / Cohere v1)"
)
async def rerank_v1(request: Request, body: RerankRequest) -> Response:
    ranked = await _rerank(request, body, _texts(body.documents), "documents")
    return json_response(_standard(ranked, _returned(body)))


@router.post("/v2/rerank", response_model=None, responses=_RESPONSES, summary="Rerank documents (Cohere v2)")
async def rerank_v2(request: Request, body: RerankRequest) -> Response:
    ranked = await _rerank(request, body, _texts(body.documents), "documents")
    return json_response(_standard(ranked, _returned(body)))


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
        ranked = await _rerank(request, body, _texts(body.documents), "documents")
        return json_response(_standard(ranked, _returned(body)))
    ranked = await _rerank(request, body, body.texts, "texts", "raw_scores" if body.raw_scores else None)
    items = [
        TEIRerankItem(
            index=r.index, score=_tei_raw(ranked, r.raw_score) if body.raw_scores else r.score,
            text=r.document if body.return_text else None, **LongDocumentReport.fields_of(r),
            raw_score=r.raw_score if body.return_raw_scores else None,
        )
        for r in ranked.results
    ]
    return json_response(items)


def _tei_raw(ranked: Ranked, raw: float) -> float:
    """TEI's ``raw_scores``: the logit, also under a calibration whose model answered sigmoid probabilities
    (``raw`` is then that probability; otherwise it is the logit or a raw head's score already)."""
    calibration = ranked.model.info.extra.get("calibration") or {}
    return logit(raw) if calibration.get("raw_activation") == "sigmoid" else raw
