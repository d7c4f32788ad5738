"""The HTTP connection layer under the app: uvicorn's h11 protocol with the limits it lacks.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but nothing bounds how long
a client may take to send a request's *headers*, and nothing bounds how many connections are open: a client
that opens connections and sends a few header bytes now and then (slowloris) keeps each one forever, until the
process runs out of file descriptors and stops answering everyone. :func:`protocol_class` adds both bounds
(``server.header_timeout_s``, ``server.max_connections``), and answers the HTTP-level errors that uvicorn
answers in plain text (a request line or header h11 cannot parse) with qrank's JSON error body. The request
body has its own deadline in the app (``LimitsMiddleware``, ``server.body_timeout_s``).

>>> from qrank.settings import ServerSettings
>>> cls = protocol_class(ServerSettings(header_timeout_s=5, max_connections=100))
>>> cls.header_timeout_s, cls.max_connections
(5.0, 100)
"""

from __future__ import annotations

import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def _raw_response(status: int, reason: str, type_: str, message: str, extra: tuple[str, ...] = ()) -> bytes:
    """A whole HTTP/1.1 response with qrank's JSON error body, written without h11 (whose state machine allows
    no response before a complete request) and followed by closing the connection."""
    from .errors import error_body

    body = json.dumps(error_body(status, type_, message, None)).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class LimitedH11Protocol(H11Protocol):
    """:class:`H11Protocol` with a deadline on each request's headers and a cap on open connections."""

    header_timeout_s: float = 10.0
    max_connections: int = 1000

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer = None
        self._got_bytes = False  # of the request now awaited (an idle connection times out silently)

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d open, server.max_connections is %d", len(self.connections) - 1,
                        self.max_connections)
            transport.write(_raw_response(503, "Service Unavailable", "Overloaded",
                                          f"too many open connections (server.max_connections = "
                                          f"{self.max_connections}); retry later", ("retry-after: 1",)))
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._awaiting_request()
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request's headers arrived: the app's deadlines take over
            self._cancel_header_timer()
        elif waiting:
            self._got_bytes = True
            if self._header_timer is None:  # the first bytes after a keep-alive pause
                self._arm_header_timer()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        if self.cycle is cycle:  # no pipelined request started: the next one's headers are awaited (uvicorn's own
            self._got_bytes = False  # keep-alive timer closes the connection if nothing comes)
        else:
            self._cancel_header_timer()

    def send_400_response(self, msg: str) -> None:
        # what h11 could not parse (a bad request line, header or Content-Length): qrank's JSON error body
        self._cancel_header_timer()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.write(_raw_response(400, "Bad Request", "MalformedRequest", msg))
        self.transport.close()

    # ------------------------------------------------------------------------------------------ the timer
    def _awaiting_request(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._on_header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_request():
            return
        if self._got_bytes:  # part of a request came, never all of its headers
            log.info("closed a connection whose request headers took more than %.0f s (server.header_timeout_s)",
                     self.header_timeout_s)
            self.transport.write(_raw_response(408, "Request Timeout", "Timeout",
                                               f"request headers not complete within {self.header_timeout_s:g} s "
                                               "(server.header_timeout_s)"))
        self.transport.close()


def protocol_class(settings) -> type[LimitedH11Protocol]:
    """The protocol class for uvicorn's ``http=`` under ``settings`` (a :class:`~qrank.settings.ServerSettings`)."""
    return type("QrankH11Protocol", (LimitedH11Protocol,), {
        "header_timeout_s": float(settings.header_timeout_s), "max_connections": int(settings.max_connections)})
