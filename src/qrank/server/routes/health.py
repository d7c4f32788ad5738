"""``GET /health`` (the process answers), ``GET /ready`` (every model just ran a forward pass),
``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..errors import error_body
from ..metrics import CONTENT_TYPE
from . import state_of

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the server process answers (GET or HEAD; no API key needed)")
async def health() -> dict:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: each model answered a probe through its queue (cached for 1 s) and a request slot is free",
)
async def ready(request: Request) -> JSONResponse:
    state = state_of(request)
    ok = await state.probe()
    reason = state.ready_error
    slots = request.app.state.slots
    if ok and slots.full:  # every data route would answer 429 now: say so, so a balancer sends work elsewhere
        ok, reason = False, f"all {slots.limit} request slots are taken (server.max_concurrent)"
    if not ok:
        body = error_body(503, "NotReady", f"not ready: {reason}", None)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "models": [m.name for m in state.pool.models]})


# load balancers probe with HEAD too (one documented operation per path: GET)
router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/ready", ready, methods=["HEAD"], include_in_schema=False)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(state_of(request).metrics.render(), media_type=CONTENT_TYPE)
