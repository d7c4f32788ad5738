"""``POST /v1/score`` and ``/score`` (vLLM): relevance of ``text_2`` items to ``text_1``."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import InvalidInput
from ..inference import Inference
from ..schemas.common import Usage
from ..schemas.rerank import LongDocumentReport
from ..schemas.score import ScoreItem, ScoreRequest, ScoreResponse
from . import json_response, state_of

router = APIRouter(tags=["rerank"])


def score_pairs_of(text_1: list[str], text_2: list[str]) -> list[tuple[str, str]]:
    """vLLM's pairing: one-to-many when ``text_1`` has one item, else one-to-one (equal lengths).

    >>> score_pairs_of(["q"], ["a", "b"])
    [('q', 'a'), ('q', 'b')]
    """
    if len(text_1) == 1:
        return [(text_1[0], t) for t in text_2]
    if len(text_1) != len(text_2):
        raise InvalidInput(
            "text_2", f"has {len(text_2)} items but text_1 has {len(text_1)}; give one text_1 or equal lengths"
        )
    return list(zip(text_1, text_2))


async def _score(request: Request, body: ScoreRequest) -> Response:
    pairs = score_pairs_of(body.text_1, body.text_2)
    scored = await Inference(state_of(request), request).score_pairs(
        body.model, pairs, instruction=body.instruction, truncate=body.truncate, field="text_2", query_field="text_1",
        long_documents=body.long_document_options(),
    )
    return json_response(
        ScoreResponse(
            id=f"score-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=scored.model.name,
            data=[ScoreItem(index=i, score=float(s), **LongDocumentReport.fields_of(report))
                  for i, (s, report) in enumerate(zip(scored.scores.tolist(), scored.reports))],
            usage=Usage(prompt_tokens=scored.tokens, total_tokens=scored.tokens),
        )
    )


@router.post(
    "/v1/score", response_model=None, responses={200: {"model": ScoreResponse}}, summary="Score text pairs (vLLM)"
)
async def score_v1(request: Request, body: ScoreRequest) -> Response:
    return await _score(request, body)


@router.post(
    "/score", response_model=None, responses={200: {"model": ScoreResponse}}, summary="Score text pairs (vLLM alias)"
)
async def score_plain(request: Request, body: ScoreRequest) -> Response:
    return await _score(request, body)
