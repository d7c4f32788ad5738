"""Running the app under uvicorn with qrank's limits: header size, graceful shutdown, no proxy trust.

>>> serve(settings, pool)                                       # doctest: +SKIP
>>> with running_server(create_app(settings, pool), settings) as running:  # doctest: +SKIP
...     httpx.get(running.url + "/health")
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


def uvicorn_config(app, settings: Settings, **overrides) -> uvicorn.Config:
    """The uvicorn configuration for ``app`` under ``settings.server``."""
    s = settings.server
    options = dict(
        host=s.host,
        port=s.port,
        http="h11",  # h11 enforces max_header_bytes (the incomplete-event limit)
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


def serve(app, settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests get ``shutdown_timeout_s`` to finish."""
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.run()
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
