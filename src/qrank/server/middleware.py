"""ASGI middleware around the whole app: request metrics, concurrency limit, body size and encoding.

They are plain ASGI (not Starlette's BaseHTTPMiddleware) so that the body can be checked before any
parsing and a client's disconnect still reaches the route that waits for a model.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import Overloaded, TooLarge
from ..settings import ServerSettings
from .errors import BodyTimeout, HeadersTooLarge, HostNotAllowed, MalformedBody, error_response
from .metrics import Metrics

# cheap routes that must answer even when the server is saturated
UNLIMITED_PATHS = frozenset({"/health", "/ready", "/metrics"})


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Is ``host`` (a bind address or a Host header name) this machine's loopback?

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.3.4.5", "0.0.0.0", "example.com")]
    [True, True, True, True, False, False]
    """
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(s: ServerSettings) -> frozenset[str] | None:
    """The Host names the server answers (None: any): ``s.allowed_hosts`` when given ('*' = any), else
    loopback names for a loopback bind, else any (a server on the network is reached by many names).

    >>> sorted(allowed_hosts(ServerSettings()))
    ['127.0.0.1', '::1', 'localhost']
    >>> allowed_hosts(ServerSettings(host="0.0.0.0")) is None
    True
    >>> allowed_hosts(ServerSettings(allowed_hosts=["*"])) is None
    True
    """
    if "*" in s.allowed_hosts:
        return None
    if s.allowed_hosts:
        return frozenset(host_name(h.encode()) for h in s.allowed_hosts)
    return LOOPBACK_NAMES if is_loopback(s.host) else None


def host_name(value: bytes) -> str:
    """The name in a Host header: no port, no IPv6 brackets, lower case, no trailing dot.

    >>> host_name(b"LocalHost.:8000"), host_name(b"[::1]:8000"), host_name(b"127.0.0.1")
    ('localhost', '::1', '127.0.0.1')
    """
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return text.rstrip(".")


class HostCheckMiddleware:
    """Answers 400 (``field: host``) to a request whose Host header names another host: a web page that
    re-points its own domain at 127.0.0.1 (DNS rebinding) must not reach a keyless local server. Requests
    without a Host header (HTTP/1.0 tools; browsers always send one) pass."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str], metrics: Metrics | None = None) -> None:
        self.app = app
        self.allowed = allowed
        self.metrics = metrics

    def accepts(self, name: str) -> bool:
        return name in self.allowed or ("localhost" in self.allowed and is_loopback(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v for k, v in scope.get("headers") or [] if k == b"host"), None)
            if host is not None and not self.accepts(host_name(host)):
                if self.metrics is not None:
                    self.metrics.rejected.labels("host").inc()
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await error_response(HostNotAllowed(host.decode("latin-1")[:100]))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestMetricsMiddleware:
    """Counts every answer by route template, method and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, known_paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 499  # if no answer starts, the client went away

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        except Exception:
            status = 500
            raise
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe_request(self._route(scope), scope["method"], status, time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None) or scope.get("path", "")
        # unknown paths share one label so that scanners cannot blow up the metric's cardinality
        return path if (route is not None or path in self.known_paths) else "other"


@dataclass
class Slots:
    """The ``max_concurrent`` slots of the data routes, shared with ``/ready`` (which says when all are taken).

    >>> s = Slots(1); s.used += 1; s.full
    True
    """

    limit: int
    used: int = 0

    @property
    def full(self) -> bool:
        return self.used >= self.limit


class LimitsMiddleware:
    """Headers of at most ``max_header_bytes`` (431), at most ``max_concurrent`` requests at once (429
    beyond), bodies of at most ``max_body_bytes`` (413) that arrive within ``body_timeout_s`` (408, and the
    connection closed), and JSON bodies that are valid UTF-8 (400) — all answered before any parsing."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_concurrent: int,
        max_body_bytes: int,
        max_header_bytes: int,
        body_timeout_s: float = 20.0,
        slots: Slots | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.max_concurrent = max_concurrent
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s
        self.slots = slots if slots is not None else Slots(max_concurrent)
        self.metrics = metrics

    def _reject(self, reason: str, exc, scope: Scope, receive: Receive, send: Send):
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()
        return error_response(exc)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # uvicorn's h11 limit only bites on headers split across reads; this one always does
        header_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        header_bytes += sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or [])
        if header_bytes > self.max_header_bytes:
            await self._reject(
                "header_size", HeadersTooLarge(header_bytes, self.max_header_bytes), scope, receive, send
            )
            return
        if scope.get("path") in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.slots.full:
            await self._reject(
                "concurrency",
                Overloaded(f"more than {self.max_concurrent} requests in flight; retry later"),
                scope,
                receive,
                send,
            )
            return
        self.slots.used += 1
        try:
            await self._checked(scope, receive, send)
        finally:
            self.slots.used -= 1

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._reject("body_size", self._too_large(int(declared)), scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        # a whole-body deadline, not a per-chunk one: a client dribbling one byte a second must not keep its
        # slot (uvicorn has no body timeout of its own)
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                await self._reject("body_timeout", BodyTimeout(size, self.body_timeout_s), scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._reject("body_size", self._too_large(size), scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and b"json" in headers.get(b"content-type", b"").lower():
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                await self._reject(
                    "encoding", MalformedBody(f"not valid UTF-8 (byte {exc.start})"), scope, receive, send
                )
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later messages (the disconnect) come from the client as they happen

        await self.app(scope, replay, send)

    def _too_large(self, size: int) -> TooLarge:
        return TooLarge(f"body: {size} bytes, more than the limit of {self.max_body_bytes}", field="body")
