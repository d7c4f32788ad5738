"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of either.

Every write goes to a temporary file in the target's own folder (a rename is only atomic within one file
system), is flushed and fsynced, renamed over the target with :func:`os.replace`, and then the folder is
fsynced so the rename itself survives a power cut. A failure at any step removes the temporary file and
leaves the old target untouched. JSON is written with ``allow_nan=False``: ``NaN``/``Infinity`` are not
JSON, and a stored NaN would come back as a score or a metric nobody can compare.

Temporary names end in ``.tmp-<pid>`` so a cleaner can tell a file a live process is still writing
from one a crashed process left behind (see ``qrank.index.faiss_store``).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "state.json"
>>> atomic_write_json(path, {"generation": 1})
>>> atomic_write_json(path, {"generation": 2})
>>> json.loads(path.read_text())
{'generation': 2}
>>> atomic_write_json(path, {"score": float("nan")})  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
ValueError: Out of range float values are not JSON compliant
>>> sorted(p.name for p in path.parent.iterdir())
['state.json']
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "fsync_dir"]


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, make_parents: bool = False) -> None:
    """Replace ``path`` atomically with what ``write(tmp_path)`` writes to the temporary file it is given.

    For libraries that write to a path themselves (``faiss.write_index``, ``Figure.savefig``); the file
    they leave is fsynced before the rename. Use the ``atomic_write_*`` functions for data in memory.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=f".tmp-{os.getpid()}")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:  # the writer may have replaced or reopened the file: sync what is there now
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, make_parents: bool = False) -> None:
    """Replace ``path`` atomically with ``data``."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, write, make_parents=make_parents)


def atomic_write_text(path: str | os.PathLike, text: str, *, make_parents: bool = False) -> None:
    """Replace ``path`` atomically with ``text`` in UTF-8 (written as given: no newline translation)."""
    atomic_write_bytes(path, text.encode("utf-8"), make_parents=make_parents)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None, sort_keys: bool = False,
                      make_parents: bool = False) -> None:
    """Replace ``path`` atomically with ``obj`` as UTF-8 JSON; ``NaN``/``Infinity`` raise ``ValueError``.

    The value is serialized before anything is written, so a value that cannot be stored leaves no trace.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n" if indent is not None else text, make_parents=make_parents)
