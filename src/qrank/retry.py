"""The one retry policy of qrank (on ``tenacity``): capped exponential backoff that honours ``Retry-After``.

Used by the remote clients' :class:`~qrank.models.remote_pool.BalancedTransport` (servers that are down or
overloaded) and by :class:`~qrank.distributed.ray_serve.RayModelProxy` (replicas that died). A call is
tried ``retries + 1`` times; before try ``n + 1`` it waits ``backoff_s * 2**(n - 1)``, or the failed
call's ``retry_after`` (a server's ``Retry-After``) when that is longer, never more than ``max_backoff_s``.
Only the exception types in ``retry_on`` are retried; any other error and the last failure are raised
as they are.

>>> calls = []
>>> def flaky():
...     calls.append(1)
...     if len(calls) < 3:
...         raise ConnectionError("not yet")
...     return "ok"
>>> waits = []
>>> for attempt in retrying(retries=3, retry_on=(ConnectionError,), backoff_s=0.1, sleep=waits.append):
...     with attempt:
...         answer = flaky()
>>> answer, waits
('ok', [0.1, 0.2])
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import InvalidInput, require

log = logging.getLogger(__name__)


def backoff_wait(attempt: int, exc: BaseException | None, *, backoff_s: float, max_backoff_s: float) -> float:
    """Seconds to wait after failed try number ``attempt`` (1-based) that raised ``exc``.

    >>> backoff_wait(3, None, backoff_s=0.2, max_backoff_s=10.0)
    0.8
    >>> backoff_wait(1, type("Busy", (Exception,), {"retry_after": 2.0})(), backoff_s=0.2, max_backoff_s=10.0)
    2.0
    """
    wait = backoff_s * 2 ** (attempt - 1)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, (int, float)):
        wait = max(wait, float(retry_after))
    return min(wait, max_backoff_s)


def retrying(
    *,
    retries: int,
    retry_on: tuple[type[BaseException], ...],
    backoff_s: float = 0.2,
    max_backoff_s: float = 10.0,
    sleep: Callable[[float], None] | None = None,
    describe: Callable[[], str] = lambda: "call",
    log_level: int = logging.INFO,
):
    """A ``tenacity.Retrying`` with qrank's policy: iterate it and run the call ``with attempt:``.

    ``sleep`` defaults to tenacity's (``time.sleep``, looked up at each wait); ``describe()`` names the
    call in the log line (at ``log_level``) written before each wait.
    """
    tenacity = require("tenacity", "server")
    if retries < 0:
        raise InvalidInput("retries", "must be >= 0")

    def wait(state) -> float:
        return backoff_wait(state.attempt_number, state.outcome.exception(), backoff_s=backoff_s,
                            max_backoff_s=max_backoff_s)

    def before_sleep(state) -> None:
        log.log(log_level, "%s failed (%s); retry %d/%d in %.2fs", describe(), state.outcome.exception(),
                state.attempt_number, retries, state.upcoming_sleep)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retries + 1),
        wait=wait,
        retry=tenacity.retry_if_exception_type(retry_on),
        sleep=sleep or tenacity.nap.sleep,
        before_sleep=before_sleep,
        reraise=True,  # the caller sees the last real error, not tenacity's RetryError
    )
