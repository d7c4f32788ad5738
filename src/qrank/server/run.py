"""Running the app under uvicorn with qrank's limits: header size and time, open connections (``connections``),
graceful shutdown, no proxy trust.

``serve(app, settings)`` runs until SIGINT/SIGTERM (``qrank serve``); tests and examples run one in a thread:

>>> import httpx
>>> from qrank.server import create_app
>>> settings = Settings(server={"rerankers": ["../shared/models/scifact-minilm-ce"]})
>>> with running_server(create_app(settings), settings) as running:
...     httpx.get(running.url + "/health").status_code
200
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from ..errors import QrankError
from ..settings import Settings
from .connections import protocol_class


def uvicorn_config(app, settings: Settings, **overrides) -> uvicorn.Config:
    """The uvicorn configuration for ``app`` under ``settings.server``."""
    s = settings.server
    options = dict(
        host=s.host,
        port=s.port,
        # h11 enforces max_header_bytes (the incomplete-event limit); qrank's subclass the header deadline and the
        # connection cap
        http=protocol_class(s),
        h11_max_incomplete_event_size=s.max_header_bytes,
        timeout_graceful_shutdown=math.ceil(s.shutdown_timeout_s),
        proxy_headers=False,  # never take the client address or scheme from a header
        server_header=False,
        access_log=s.access_log,
        lifespan="on",
        log_level=None,
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` now, before models load or anything is announced: a busy port or
    an unknown address is one clear error (``QrankError``), not a traceback after "serving on ...".

    >>> sock = bind_socket("127.0.0.1", 0); sock.getsockname()[0]
    '127.0.0.1'
    >>> bind_socket("127.0.0.1", sock.getsockname()[1])  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.QrankError: cannot listen on 127.0.0.1:...: address already in use ...
    >>> sock.close()
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise QrankError(f"cannot listen on {host}:{port}: unknown address ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    # like uvicorn: a port left in TIME_WAIT by the previous run is free; one that is listening is not
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        # listen now too: with SO_REUSEADDR a second process could bind the same port until one listens
        # (connections made while models load wait in the backlog and are answered once the app starts)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise QrankError(f"cannot listen on {host}:{port}: {reason} (is another server running there? choose "
                         "another port with --port)") from None
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    """``http://host:port`` (IPv6 literals in brackets).

    >>> url_of("::1", 8000), url_of("127.0.0.1", 80)
    ('http://[::1]:8000', 'http://127.0.0.1:80')
    """
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app, settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests get ``shutdown_timeout_s`` to finish. ``sock``: a
    socket from :func:`bind_socket` (bound before the models loaded); without it one is bound here."""
    sock = sock or bind_socket(settings.server.host, settings.server.port)
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.run(sockets=[sock])
    if not server.started:
        raise QrankError("the server did not start (see the log above)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    """A server started by :func:`running_server`."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def begin_shutdown(self) -> None:
        """What SIGTERM does: stop accepting, let in-flight requests finish (up to the grace period)."""
        self.server.should_exit = True


@contextlib.contextmanager
def running_server(app, settings: Settings, *, startup_timeout: float = 120.0, **overrides) -> Iterator[RunningServer]:
    """Run ``app`` in a background thread on a free local port; yields it (``.url``); stops on exit."""
    port = free_port(settings.server.host)
    config = uvicorn_config(app, settings, port=port, log_config=None, **overrides)
    server = uvicorn.Server(config)
    exit_codes: list = []

    def run() -> None:
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits when the app's start-up fails
            exit_codes.append(exc.code)

    thread = threading.Thread(target=run, name="qrank-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise QrankError(
                f"the server exited during start-up (exit code {exit_codes[0] if exit_codes else '?'}; see the log)"
            )
        if time.monotonic() > deadline:
            server.should_exit = True
            raise QrankError(f"the server did not start within {startup_timeout}s")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://{settings.server.host}:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
