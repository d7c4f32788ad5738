"""Several servers behind one client: round-robin load balancing, retries with backoff, cool-down.

:class:`BalancedTransport` has :class:`~qrank.models.remote.HTTPTransport`'s ``request`` / ``close`` so
the remote clients take it unchanged (``RemoteReranker(["http://a:8000", "http://b:8000"])``).

What is retried: a server that cannot be reached, times out or fails (5xx) — the next server gets the
request and the failed one sits out ``cooldown_s``; a server that is overloaded (429, or 503 with
``Retry-After``) — after the longer of the backoff and the server's ``Retry-After``. A client error
(4xx: bad input, unknown model, auth) is never retried: another server would give the same answer.
The backoff policy is qrank's one (:mod:`qrank.retry`, on ``tenacity``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidInput, Overloaded, QrankError
from ..retry import retrying
from .remote import DEFAULT_TIMEOUT, HTTPTransport, ServerUnavailable

log = logging.getLogger(__name__)


class BalancedTransport:
    """Round-robin over ``base_urls`` with retries.

    Nothing listens on these two ports, so every try fails and the last error is raised after the retries
    (tests/integration/test_remote_pool.py runs it against live servers):

    >>> t = BalancedTransport(["http://127.0.0.1:9", "http://127.0.0.1:9/"], retries=1, backoff_s=0.0)
    >>> t.request("GET", "/v1/models")
    Traceback (most recent call last):
    qrank.models.remote.ServerUnavailable: cannot reach the server at http://127.0.0.1:9 ...
    >>> t.close()
    """

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        cooldown_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(base_urls, str) or not base_urls:
            raise InvalidInput("base_url", "give one URL or a non-empty list of URLs")
        if retries < 0:
            raise InvalidInput("retries", "must be >= 0")
        self.transports = [HTTPTransport(u, api_key=api_key, timeout=timeout) for u in base_urls]
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cooldown_s = cooldown_s
        self._sleep = sleep
        self._turn = itertools.count()
        self._down_until = [0.0] * len(self.transports)
        self._lock = threading.Lock()
        self.attempts: list[tuple[str, str]] = []  # (server, outcome), kept short, for metrics and tests

    @property
    def base_url(self) -> str:
        return ",".join(t.base_url for t in self.transports)

    def _pick(self) -> int:
        """The next server in turn that is not cooling down (all cooling down: the one back soonest)."""
        now = time.monotonic()
        with self._lock:
            n = len(self.transports)
            start = next(self._turn)
            for k in range(n):
                i = (start + k) % n
                if self._down_until[i] <= now:
                    return i
            return min(range(n), key=lambda i: self._down_until[i])

    def _note(self, i: int, outcome: str) -> None:
        with self._lock:
            self.attempts.append((self.transports[i].base_url, outcome))
            del self.attempts[:-1000]
            if outcome == "down":
                self._down_until[i] = time.monotonic() + self.cooldown_s
            elif outcome == "ok":
                self._down_until[i] = 0.0

    def request(self, method: str, path: str, json: Any = None) -> Any:
        """Send to one server; on a retryable failure, back off and try the next."""
        server = ""
        for attempt in retrying(retries=self.retries, retry_on=(Overloaded, ServerUnavailable),
                                backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s, sleep=self._sleep,
                                describe=lambda: f"{method} {path} on {server}"):
            with attempt:
                i = self._pick()
                server = self.transports[i].base_url
                try:
                    answer = self.transports[i].request(method, path, json)
                except Overloaded:
                    self._note(i, "overloaded")
                    raise
                except ServerUnavailable:
                    self._note(i, "down")
                    raise
                except QrankError:
                    self._note(i, "refused")  # the server is fine; the request is not: never retried
                    raise
                self._note(i, "ok")
                return answer
        raise AssertionError("unreachable: retrying() raises the last error")

    def close(self) -> None:
        for t in self.transports:
            t.close()
