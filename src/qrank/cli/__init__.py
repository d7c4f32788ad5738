"""The ``qrank`` command: one sub-command module per verb, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from ..deprecation import QrankDeprecationWarning
from ..errors import QrankError
from .common import add_verbose_anywhere, configure_logging, fail

# each module adds its verbs; adding a verb is one module and one line here
COMMAND_MODULES = (
    "qrank.cli.core",
    "qrank.cli.index",
    "qrank.cli.serve",
    "qrank.cli.ui",
    "qrank.cli.eval",
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="qrank",
        description="Two-stage retrieval: embed, search, rerank (Qwen3-Reranker, Qwen3-Embedding, cross-encoders).",
    )
    parser.add_argument("--version", action="version", version=f"qrank {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    add_verbose_anywhere(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qrank`` script.

    >>> main(["models", "../shared/models/scifact-minilm-ce"])   # doctest: +ELLIPSIS
    ┏━...
    │ cross-encoder │ reranker │ ../shared/models/scifact-minilm-ce │
    ...
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    configure_logging(args.verbose + getattr(args, "verbose_after", 0))
    # Python hides DeprecationWarning outside __main__; a user of a deprecated flag or env var must see it
    warnings.simplefilter("default", QrankDeprecationWarning)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that went away (`| head -1`) is caught below
        return status
    except QrankError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """The reader of stdout closed the pipe (``qrank index list --json | head -1``): stop quietly, as a
    SIGPIPE'd Unix tool does (status 141 = 128 + SIGPIPE)."""
    # what is still buffered would fail again when Python flushes stdout at exit; send it nowhere
    # (the recipe of the Python docs' note on SIGPIPE)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests): nothing to redirect
        pass
    return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
