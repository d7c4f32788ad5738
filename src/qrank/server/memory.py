"""Allocator settings of a long-running server: a cap on glibc's malloc arenas.

glibc gives each thread that allocates its own arena (up to 8 per core). A server's threads (the event
loop, the tokenizer pool, the batch workers, torch's) each free memory into their own arena, and freed
space in one arena is not reused by another, so RSS grew about 3x over 2,500 mixed requests while the
live objects did not (632 → 1,910 MB; flat with ``MALLOC_ARENA_MAX=2``). ``qrank serve`` caps the arenas
at ``server.malloc_arena_max`` before any model or worker thread starts.

Why ``mallopt`` and not a re-exec with ``MALLOC_ARENA_MAX`` set: both set the same glibc parameter
(``M_ARENA_MAX``), and a call made before the worker threads exist caps every arena they create, while a
re-exec would start the process twice, change its pid under a supervisor and lose the console state.

>>> limit_malloc_arenas(0)
'left as the C library chose'
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc malloc.h


def limit_malloc_arenas(n: int) -> str:
    """Cap glibc's malloc arenas at ``n`` (0 = leave them alone); returns what was done, for the log.

    An operator's own ``MALLOC_ARENA_MAX`` wins (glibc read it at start-up). Other C libraries (musl,
    macOS) have no arenas to cap: nothing is done there.
    """
    if n <= 0:
        return "left as the C library chose"
    if "MALLOC_ARENA_MAX" in os.environ:
        return f"left at MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']} from the environment"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc: nothing to cap"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc.mallopt(M_ARENA_MAX, int(n)) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) failed; the allocator keeps its default arenas", n)
        return "mallopt failed: default arenas"
    return f"capped at {n} malloc arenas"


def malloc_arenas() -> int:
    """How many arenas glibc's allocator has now (from ``malloc_info``); 0 where that is not available.

    >>> malloc_arenas() >= 0
    True
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return 0
    import tempfile

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
        fp = libc.fopen(tmp.name.encode(), b"w")
        if not fp:
            return 0
        try:
            libc.malloc_info(0, fp)
        finally:
            libc.fclose(fp)
        return open(tmp.name, encoding="utf-8").read().count("<heap nr=")
