"""The one place where errors become HTTP answers.

Every error body has the same shape, readable by OpenAI-style clients (``error.message``), Cohere-style
ones (top-level ``message``) and humans (``error.field`` names the offending part of the request)::

    {"error": {"type": "InvalidInput", "message": "documents[2]: ...", "field": "documents[2]",
               "param": "documents[2]", "code": 422}, "message": "documents[2]: ..."}

>>> status_for(TooLarge("too big", field="body"))
413
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    CollectionNotFound,
    InvalidInput,
    MissingExtra,
    ModelNotFound,
    Overloaded,
    QrankError,
    TooLarge,
    UnsupportedModel,
)
from ..index.store import StoreUnavailable

log = logging.getLogger(__name__)


class Unauthorized(QrankError):
    """Missing or wrong API key."""

    def __init__(self, message: str = "missing or invalid API key; send 'Authorization: Bearer <key>'") -> None:
        super().__init__(message, field="authorization")


class MalformedBody(InvalidInput):
    """The body is not JSON, not UTF-8, or not the content type we read."""

    def __init__(self, message: str) -> None:
        super().__init__("body", message)


class HostNotAllowed(QrankError):
    """The Host header names a host this server does not answer for (DNS rebinding)."""

    def __init__(self, host: str) -> None:
        super().__init__(f"host {host!r} is not allowed; the server answers for its own (loopback) names "
                         "(set server.allowed_hosts to accept others)", field="host")


class ShuttingDown(Overloaded):
    """The server is stopping; the request was not started."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down", retry_after=5.0)


class NonFiniteOutput(QrankError):
    """The model produced NaN or infinity for this request (only this one fails)."""


class HeadersTooLarge(TooLarge):
    """The request line and headers exceed ``max_header_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"headers: {size} bytes, more than the limit of {limit}", field="headers")


class BodyTimeout(QrankError):
    """The body did not arrive within ``server.body_timeout_s`` (a slow or stalled client)."""

    def __init__(self, received: int, seconds: float) -> None:
        super().__init__(f"body: only {received} bytes arrived in {seconds:g} s; send the whole body promptly",
                         field="body")


class ClientGone(QrankError):
    """The caller disconnected while its request waited; nobody reads the answer."""


# first match wins, so subclasses come before their bases
STATUS_CODES: list[tuple[type[BaseException], int]] = [
    (ClientGone, 499),  # nginx's "client closed request": only metrics and logs see it
    (Unauthorized, 401),
    (BodyTimeout, 408),
    (HostNotAllowed, 400),
    (ShuttingDown, 503),
    (StoreUnavailable, 503),  # a collection's Milvus server cannot be reached: the server and the others are fine
    (Overloaded, 429),
    (HeadersTooLarge, 431),
    (TooLarge, 413),
    (MalformedBody, 400),
    (ModelNotFound, 404),
    (CollectionNotFound, 404),
    (UnsupportedModel, 400),
    (InvalidInput, 422),
    (MissingExtra, 500),
    (QrankError, 500),
]


def status_for(exc: BaseException) -> int:
    for cls, status in STATUS_CODES:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(status: int, type_: str, message: str, field: str | None) -> dict:
    return {
        "error": {"type": type_, "message": message, "field": field, "param": field, "code": status},
        "message": message,
    }


def hide_paths(message: str, paths: dict[str, str]) -> str:
    """``message`` with each private path replaced by its public placeholder (longest first).

    >>> hide_paths("no collection under /srv/q/collections", {"/srv/q": "$QRANK_HOME"})
    'no collection under $QRANK_HOME/collections'
    """
    for path in sorted(paths, key=len, reverse=True):
        if path and path != "/":
            message = message.replace(path, paths[path])
    return message


def private_paths(settings) -> dict[str, str]:
    """Server-side folders that error bodies must not reveal: the data home (as given and resolved)."""
    home = settings.home.expanduser()
    return {str(settings.home): "$QRANK_HOME", str(home): "$QRANK_HOME", str(home.resolve()): "$QRANK_HOME"}


def error_response(exc: QrankError, hidden: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer for one qrank error (with ``Retry-After`` / ``WWW-Authenticate`` where they apply);
    ``hidden`` maps private paths to what the client sees instead."""
    status = status_for(exc)
    headers = {}
    if isinstance(exc, (Overloaded, StoreUnavailable)):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, BodyTimeout):
        headers["Connection"] = "close"  # the rest of the body may still trickle in: never read it
    message = hide_paths(exc.message, hidden) if hidden else exc.message
    return JSONResponse(
        error_body(status, type(exc).__name__, message, exc.field), status_code=status, headers=headers
    )


def field_of(loc: tuple | list) -> str:
    """A pydantic error location as the field a client wrote: ``('body', 'documents', 3)`` → ``documents[3]``.

    >>> field_of(("body", "documents", 3, "text"))
    'documents[3].text'
    >>> field_of(("body",))
    'body'
    """
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "body"


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "invalid"}
    loc = tuple(first.get("loc") or ("body",))
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        pos = loc[1] if len(loc) > 1 else "?"
        return error_response(MalformedBody(f"not valid JSON ({ctx.get('error', 'decode error')} at character {pos})"))
    field = field_of(loc)
    message = first.get("msg", "invalid value")
    if field == "body" and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        ctype = request.headers.get("content-type", "")
        if "json" not in ctype:
            return error_response(
                MalformedBody(f"send a JSON object with 'Content-Type: application/json' (got {ctype or 'none'!r})")
            )
        message = "must be a JSON object with the documented fields"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_response(InvalidInput(field, message))


def _http_exception_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        return error_response(MalformedBody(f"not valid UTF-8 (byte {cause.start})"))
    if exc.status_code == 400:
        return error_response(MalformedBody(str(exc.detail)))
    names = {404: "NotFound", 405: "MethodNotAllowed", 413: "TooLarge"}
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs"
    resp = JSONResponse(
        error_body(exc.status_code, names.get(exc.status_code, "HTTPError"), message, None), status_code=exc.status_code
    )
    for k, v in (exc.headers or {}).items():
        resp.headers[k] = v
    return resp


def install_error_handlers(app: FastAPI, settings=None) -> None:
    """Register the handlers: qrank errors, schema errors, HTTP errors and, last, anything unexpected.
    With ``settings``, error bodies never show the server's data folder (the log keeps the full message)."""
    hidden = private_paths(settings) if settings is not None else None

    async def on_qrank_error(request: Request, exc: QrankError):
        if status_for(exc) >= 500:
            log.error("request %s %s failed: %s", request.method, request.url.path, exc)
        return error_response(exc, hidden)

    async def on_validation_error(request: Request, exc: RequestValidationError):
        return _validation_response(request, exc)

    async def on_http_error(request: Request, exc: StarletteHTTPException):
        return _http_exception_response(request, exc)

    async def on_unexpected(request: Request, exc: Exception):
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        # Starlette re-raises after this answer and uvicorn then drops the connection: say so, or a pooled
        # client (httpx, the SDKs) sends its next request down a dead connection and fails it too
        return JSONResponse(error_body(500, "InternalError", "internal server error (logged)", None), status_code=500,
                            headers={"connection": "close"})

    app.add_exception_handler(QrankError, on_qrank_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
