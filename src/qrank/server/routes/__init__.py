"""HTTP routes, one module per resource; each module has an ``APIRouter`` called ``router``."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from ..state import ServerState


def state_of(request: Request) -> ServerState:
    return request.app.state.qrank


def json_response(payload: BaseModel | list[BaseModel]) -> Response:
    """Serialise with pydantic's Rust serializer (the response schemas stay in the OpenAPI document)."""
    if isinstance(payload, list):
        from pydantic_core import to_json

        return Response(to_json([p.model_dump(exclude_none=True) for p in payload]), media_type="application/json")
    return Response(payload.model_dump_json(exclude_none=True), media_type="application/json")
