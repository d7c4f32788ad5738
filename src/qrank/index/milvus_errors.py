"""What pymilvus says when a Milvus server cannot be reached, in a few words for :class:`~qrank.index.store.
StoreUnavailable`: the URI as it may be shown (:func:`public_uri`), why (:func:`unreachable_reason`: refused, no answer
within the connect or the request deadline), a job the server is still doing past its deadline
(:func:`gave_up_waiting`), and pymilvus's own duplicate log records of it quieted (:func:`quiet_pymilvus_logs`).
Used by :mod:`qrank.index.milvus_store`; tested in tests/integration/test_milvus_unreachable.py.
"""

from __future__ import annotations

import logging
import sys
import threading

def public_uri(uri: str) -> str:
    """``uri`` as an error message may show it: a password in it and the values of its query parameters (where an
    API key can travel) become ``***``; a user name alone before ``@`` could be a key too, and is hidden likewise.

    >>> public_uri("https://root:Milvus@db.example.com:19530/?token=abc&db=x")
    'https://root:***@db.example.com:19530/?token=***&db=***'
    >>> public_uri("https://my-api-key@db.example.com"), public_uri("http://127.0.0.1:19530")
    ('https://***@db.example.com', 'http://127.0.0.1:19530')
    >>> public_uri("root:Milvus@db.example.com:19530")
    '***@db.example.com:19530'
    """
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return "(an unreadable URI)"
    netloc = parts.netloc
    if not netloc and "@" in uri:  # no scheme: urlsplit finds no host, but a password may still be there
        return "***@" + uri.rsplit("@", 1)[1]
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every error behind it (both links of each: pymilvus raises ``e from e``, so a cause can be the
    error itself)."""
    chain, todo = [], [exc]
    while todo:
        e = todo.pop()
        if e is not None and all(e is not c for c in chain):
            chain.append(e)
            todo += [e.__context__, e.__cause__]
    return chain


def unreachable_reason(exc: BaseException, connect_s: float | None = None,
                       request_s: float | None = None) -> str | None:
    """Why pymilvus's ``exc`` says the server cannot be reached, in a few words ("connection refused", "no answer
    within 5 s"), or None when it says something else (a bad request, a missing collection: not ours to retry).

    pymilvus reports "cannot connect" as a MilvusException with code 2 (CONNECT_FAILED) or as gRPC's UNAVAILABLE
    or DEADLINE_EXCEEDED, often one wrapped in the other: the whole chain of causes is read. A deadline met while
    connecting (or reconnecting) comes wrapped in CONNECT_FAILED and names ``connect_s``; a request's own deadline
    (the server took the connection but did not answer) is a bare DEADLINE_EXCEEDED and names ``request_s``.

    >>> import grpc
    >>> from pymilvus import MilvusException
    >>> unreachable_reason(MilvusException(code=2, message="Fail connecting to server on h:1"))
    'cannot connect'
    >>> unreachable_reason(MilvusException(code=100, message="collection not found")) is None
    True
    >>> class Late(grpc.RpcError):
    ...     def code(self): return grpc.StatusCode.DEADLINE_EXCEEDED
    >>> unreachable_reason(Late(), 5, 60)  # a request without an answer in time
    'no answer within 60 s'
    >>> try:
    ...     try:
    ...         raise Late()
    ...     except Late as e:
    ...         raise MilvusException(code=2, message="Fail connecting to server on h:1") from e
    ... except MilvusException as e:
    ...     unreachable_reason(e, 5, 60)  # the connection (or a reconnect) without an answer in time
    'no answer within 5 s'
    """
    import grpc
    from pymilvus import MilvusException

    chain = _chain(exc)
    timeout = refused = unavailable = connect = False
    for e in chain:
        if isinstance(e, grpc.RpcError) and callable(getattr(e, "code", None)):
            code = e.code()
            details = (e.details() or "") if callable(getattr(e, "details", None)) else ""
        elif isinstance(e, MilvusException):
            code, details = e.code, ""
        else:
            continue
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            timeout = True
        elif code == grpc.StatusCode.UNAVAILABLE:
            unavailable = True
            refused = refused or "refused" in details.lower()
        elif code == _CONNECT_FAILED:
            connect = True
    if timeout:
        timeout_s = connect_s if connect else request_s
        return f"no answer within {timeout_s:g} s" if timeout_s else "no answer in time"
    if refused:
        return "connection refused"
    if unavailable:
        return "server unavailable"
    return "cannot connect" if connect else None


_CONNECT_FAILED = 2  # pymilvus.client.types.Status.CONNECT_FAILED


def gave_up_waiting(exc: BaseException, job: str) -> bool:
    """Whether pymilvus stopped waiting, at its deadline, for a job the server accepted and is still doing: ``job``
    is "loading collection" or "flush" (pymilvus polls their progress, and raises a plain MilvusException naming
    the job when the deadline passes first).

    >>> from pymilvus import MilvusException
    >>> late = MilvusException(message="wait for loading collection timeout, collection: qrank_docs")
    >>> gave_up_waiting(late, "loading collection"), gave_up_waiting(late, "flush")
    (True, False)
    """
    from pymilvus import MilvusException

    return any(isinstance(e, MilvusException) and f"wait for {job} timeout" in str(e) for e in _chain(exc))


class _QuietUnreachable(logging.Filter):
    """Drops pymilvus's own log records (ERROR, with a traceback) about a server that cannot be reached: qrank
    raises :class:`StoreUnavailable` for them, which each door reports once, in one line. Kept at -vv (debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("qrank").isEnabledFor(logging.DEBUG):
            return True
        # pymilvus logs inside its `except` blocks, often without exc_info: the error being handled is the one
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return exc is None or unreachable_reason(exc) is None


_quiet_once = threading.Lock()
_quieted = False


def quiet_pymilvus_logs() -> None:
    global _quieted
    with _quiet_once:
        if not _quieted:
            for name in ("pymilvus.decorators", "pymilvus.client.connection_manager"):
                logging.getLogger(name).addFilter(_QuietUnreachable())
            _quieted = True
