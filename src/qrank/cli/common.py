"""What every sub-command shares: flags derived from :class:`~qrank.settings.Settings`, logging, output."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, QrankError
from ..settings import Settings

if TYPE_CHECKING:
    import pydantic


def add_settings_flags(parser: argparse.ArgumentParser, section: str, fields: list[str] | None = None) -> None:
    """Add ``--field-name`` flags for the fields of one settings section (all, or ``fields``).

    Flags default to ``None`` so that an unset flag leaves the env var (``QRANK_<SECTION>__<FIELD>``) or
    the default in charge; the help text comes from the field's description.
    """
    model = Settings.model_fields[section].annotation
    title = f"{section} settings (env QRANK_{section.upper()}__<NAME>)"
    # a verb that adds a section's flags in two calls shows them under one heading
    group = next((g for g in parser._action_groups if g.title == title), None) or parser.add_argument_group(title)
    for name, field in model.model_fields.items():
        if fields is not None and name not in fields:
            continue
        # a section's on/off switch is named after the section: --cache/--no-cache, not --enabled/--no-enabled
        flag = "--" + (section if name == "enabled" else name).replace("_", "-")
        help_text = (field.description or name) + _default_text(field)
        ann = field.annotation
        origin_args = typing.get_args(ann)
        if ann is bool:
            group.add_argument(
                flag, dest=f"{section}__{name}", action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        choices = list(origin_args) if typing.get_origin(ann) is typing.Literal else None
        base = next((a for a in origin_args if a is not type(None)), ann) if origin_args and choices is None else ann
        conv = base if base in (int, float) else str
        group.add_argument(
            flag,
            dest=f"{section}__{name}",
            type=conv,
            choices=choices,
            default=None,
            metavar=None if choices else name.upper(),
            help=help_text,
        )


def _default_text(field: Any) -> str:
    """`` (default: X)`` for a flag's help, or nothing: when the description states its default itself, or the
    default is an empty list.

    >>> from qrank.settings import ServerSettings
    >>> [_default_text(ServerSettings.model_fields[f]) for f in ("port", "rerankers", "batch_workers")]
    [' (default: 8000)', '', '']
    """
    if "default:" in (field.description or "").lower():
        return ""
    default = field.get_default(call_default_factory=True)
    return "" if default in ([], {}, ()) else f" (default: {default})"


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from env/defaults, overridden by the flags the user actually gave."""
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "__" in key and value is not None:
            section, name = key.split("__", 1)
            overrides.setdefault(section, {})[name] = value
    import pydantic
    from pydantic_settings import SettingsError

    try:
        base = Settings()
    except pydantic.ValidationError as exc:
        raise env_error(exc) from None
    except SettingsError as exc:  # a whole section given as JSON that does not parse (QRANK_MODELS='{…')
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "<SECTION>"
        raise InvalidInput(f"QRANK_{field.upper()}", "is not valid JSON") from None
    update: dict[str, Any] = {}
    for section, values in overrides.items():
        current = getattr(base, section)
        try:
            update[section] = type(current).model_validate({**current.model_dump(), **values})
        except pydantic.ValidationError as exc:
            # one line naming the flag (``--chunk-tokens: ...``), never a pydantic traceback
            err = exc.errors()[0]
            msg = err["msg"].removeprefix("Value error, ")
            # a check across fields (overlap < chunk size) has no location: name the first flag its message names
            name = str(err["loc"][0]) if err.get("loc") else next((k for k in values if msg.startswith(k)), section)
            got = f", got {values[name]!r}" if err.get("loc") and name in values else ""
            raise InvalidInput("--" + name.replace("_", "-"), f"{msg[0].lower()}{msg[1:]}{got}") from None
    if getattr(args, "home", None):
        update["home"] = args.home
    update.update(extra)
    settings = base.model_copy(update=update)
    if "models" in overrides:
        from ..long_documents import LongDocuments

        try:  # fields that only make sense together (overlap < chunk size): checked before a model loads
            LongDocuments.from_settings(settings.models)
        except InvalidInput as exc:
            field = exc.field or "long_documents"
            raise InvalidInput("--" + field.replace("_", "-"), str(exc).split(": ", 1)[-1]) from None
    return settings


def env_error(exc: pydantic.ValidationError) -> InvalidInput:
    """The first error of a ``Settings()`` that the environment broke, as one line naming the env var.

    >>> import os, pydantic
    >>> os.environ["QRANK_ENGINE__MAX_BATCH_TOKENS"] = "abc"
    >>> try:
    ...     Settings()
    ... except pydantic.ValidationError as exc:
    ...     print(env_error(exc))
    QRANK_ENGINE__MAX_BATCH_TOKENS: input should be a valid integer, got 'abc'
    >>> del os.environ["QRANK_ENGINE__MAX_BATCH_TOKENS"]
    """
    err = exc.errors()[0]
    # list items add an index to the location; the env var is the list's
    loc = [str(part) for part in err.get("loc", ()) if not isinstance(part, int)]
    msg = err["msg"].removeprefix("Value error, ").split(", unable to parse")[0]
    section = Settings.model_fields.get(loc[0]) if len(loc) == 1 else None
    if section is not None and hasattr(section.annotation, "model_fields"):
        # a check across fields (overlap < chunk size) is located at its section: name the field it names first
        named = next((f for f in section.annotation.model_fields if msg.startswith(f)), None)
        loc += [named] if named else []
    var = "QRANK_" + "__".join(part.upper() for part in loc) if loc else "QRANK_* environment"
    value = err.get("input")
    got = f", got {value!r}" if isinstance(value, (str, int, float)) else ""
    return InvalidInput(var, f"{msg[:1].lower()}{msg[1:]}{got}")


def add_verbose_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v``/``--verbose`` after any verb too (``qrank search -v …``), counted into ``verbose_after``.

    A verb that gives ``-v`` a meaning of its own keeps it.
    """
    seen: set[int] = set()

    def walk(p: argparse.ArgumentParser) -> None:
        for action in p._actions:  # argparse keeps sub-parsers only here
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for child in action.choices.values():
                if id(child) in seen:
                    continue
                seen.add(id(child))
                if not {"-v", "--verbose"} & set(child._option_string_actions):
                    child.add_argument("-v", "--verbose", dest="verbose_after", action="count",
                                       default=argparse.SUPPRESS, help="more logging (-v info, -vv debug)")
                walk(child)

    walk(parser)


def configure_logging(verbosity: int) -> None:
    """Log to stderr; ``-v`` for info, ``-vv`` for debug. Only entry points call this."""
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # progress lines (qrank.progress: only written when stderr is not a terminal) show at every verbosity, so
    # that a piped or logged run is never silent for minutes
    logging.getLogger("qrank.progress").setLevel(logging.INFO)
    # the FP8 gate's verdict on a model loaded with --quantization fp8 (its agreement numbers with bfloat16), passed
    # or not: who serves FP8 sees what it costs in ranking quality, not only a failure
    logging.getLogger("qrank.models.quantization").setLevel(logging.INFO)
    if verbosity < 1:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:  # transformers is a core dependency; nothing to quiet without it
            logging.getLogger(__name__).debug("transformers not importable; its logging left as is")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


LOG_WIDTH = 200  # columns of a table written to a file or a CI log (rich assumes 80 off a terminal)


def table_console(stderr: bool = False):
    """A rich Console for tables: the terminal's width on a terminal; off one (a file, a pipe, a CI log) a wide
    fixed width, so numbers are not clipped to ``0.83…`` at rich's default of 80 columns; ``COLUMNS`` wins.

    >>> import contextlib, io, os
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     width = table_console().width
    >>> width == LOG_WIDTH or "COLUMNS" in os.environ
    True
    """
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    on_terminal = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, width=None if on_terminal or os.environ.get("COLUMNS") else LOG_WIDTH)


def fail(exc: QrankError) -> int:
    """Print a one-line error (no traceback) and return the exit status."""
    from rich.console import Console
    from rich.markup import escape

    # soft wrap: a long path or message stays on one line (greppable, copyable), whatever the terminal width
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
    return 2
