"""Error classes shared by every door (API, CLI, server, UI).

Each error names the offending ``field`` so that a door can point the user at it; the server maps
classes to HTTP status codes in one place (``qrank.server``).
"""

from __future__ import annotations


class QrankError(Exception):
    """Base class of every error qrank raises on purpose.

    >>> isinstance(InvalidInput("query", "must not be empty"), QrankError)
    True
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict:
        """A JSON-ready description: ``{"type", "message", "field"}``."""
        return {"type": type(self).__name__, "message": self.message, "field": self.field}


class InvalidInput(QrankError, ValueError):
    """The caller's input is wrong; ``field`` names which part.

    >>> str(InvalidInput("documents", "must not be empty"))
    'documents: must not be empty'
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


class ModelNotFound(QrankError, LookupError):
    """A model name or path could not be resolved or loaded."""

    def __init__(self, message: str, *, field: str | None = "model") -> None:
        super().__init__(message, field=field)


class CollectionNotFound(QrankError, LookupError):
    """No collection of that name exists (under ``settings.home``).

    >>> CollectionNotFound("docs").field
    'collection'
    """

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"no collection named {name!r}", field="collection")
        self.name = name


class UnsupportedModel(QrankError):
    """The model exists but is not a kind qrank knows for the requested role."""

    def __init__(self, message: str, *, field: str | None = "model") -> None:
        super().__init__(message, field=field)


class TooLarge(QrankError):
    """A request exceeds a configured limit (documents, tokens, body size)."""


class Overloaded(QrankError):
    """The service is busy (queue full); try again later."""

    def __init__(self, message: str = "server overloaded, retry later", *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MissingExtra(QrankError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, extra: str, package: str) -> None:
        super().__init__(
            f"{package!r} is not installed; install it with: pip install 'qrank[{extra}]'", field=None
        )
        self.extra = extra
        self.package = package


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise :class:`MissingExtra` naming the extra.

    >>> require("json", "core").__name__
    'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # re-raised with the install hint
        raise MissingExtra(extra, module.split(".")[0]) from exc
