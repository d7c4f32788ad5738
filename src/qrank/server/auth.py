"""Optional API key: ``Authorization: Bearer <key>`` on every route of the app, mounted ones included.

It wraps the whole ASGI app, so nothing (docs, metrics, a mounted UI or search route) is reachable
without the key, and it decides on the Authorization header alone: never on the Host header or the client
address. The one exception is by path: ``GET``/``HEAD`` of ``/health`` and ``/ready``, which a load balancer
probes without credentials and which reveal nothing but "up" and the served model names.

>>> ApiKeyMiddleware(app=None, api_key="s3cret").accepts([(b"authorization", b"Bearer s3cret")])
True
>>> ApiKeyMiddleware(app=None, api_key="s3cret").accepts([(b"host", b"localhost")])
False
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import Unauthorized, error_response

OPEN_PATHS = frozenset({"/health", "/ready"})


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str, metrics=None) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.app = app
        self._expected = api_key.encode("utf-8")
        self.metrics = metrics

    def accepts(self, headers) -> bool:
        for name, value in headers:
            if name.lower() == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._expected):
                    return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        probe = scope["type"] == "http" and scope.get("path") in OPEN_PATHS and scope.get("method") in ("GET", "HEAD")
        if scope["type"] not in ("http", "websocket") or probe or self.accepts(scope.get("headers") or []):
            await self.app(scope, receive, send)
            return
        if self.metrics is not None:
            self.metrics.rejected.labels("unauthorized").inc()
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await error_response(Unauthorized())(scope, receive, send)
