"""Progress of long work (indexing, evaluation stages) for terminals and for logs alike.

On a terminal, :func:`progress` is an ordinary tqdm bar. When stderr is not a terminal (a pipe, a CI log,
``nohup``), a bar would print nothing (tqdm's auto mode) or thousands of ``\\r`` updates; there the same
object writes one log line through ``logging`` every ``log_interval`` seconds instead, with the count, the
rate and the time left:

    indexing scifact: 1536/5183 docs (30%), 12.1 docs/s, elapsed 2m07s, ETA 5m01s

The lines go to the ``qrank.progress`` logger at INFO; the CLI lets that logger through at its default
verbosity (see :func:`qrank.cli.common.configure_logging`), so a piped ``qrank index add`` still shows it is alive.

>>> bar = progress(total=3, desc="demo", unit="doc", enabled=False)
>>> bar.update(3); bar.close()
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("qrank.progress")

LOG_INTERVAL_S = 30.0  # one line every 30 s: about 16 lines for the demo's 8 minutes, not thousands


class _NullFile:
    """Where a logging bar's own terminal output goes: nowhere (its lines go through ``logging``)."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        return None


class LogProgress(tqdm):
    """A tqdm bar that reports through ``logging`` (one line per ``mininterval`` seconds) instead of drawing.

    Its rate counts from the first finished unit, not from the start: the first unit carries the warm-up (a
    model loaded, kernels compiled, a first window of documents embedded whole), and averaged over the start it
    made the early ETAs several times too long."""

    _first: tuple[float, float] | None = None  # (n, time) at the first update that finished something

    def update(self, n: float | None = 1) -> bool | None:
        # noted before tqdm displays this update, so that the line it prints knows it is the first
        if self._first is None and self.n + (n or 0) > 0:
            self._first = (self.n + (n or 0), self._time())
        return super().update(n)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        d = self.format_dict
        if self._first is not None:
            n0, t0 = self._first
            if self.n > n0 and self._time() > t0:
                d = {**d, "steady_rate": (self.n - n0) / (self._time() - t0)}
            elif self.total and self.n < self.total:
                # only the first unit is done, and it carries the warm-up: a rate from it alone said "ETA 7h03m"
                # for a run of 2.5 minutes; the next line has a steady rate
                d = {**d, "rate_pending": True}
        line = progress_line(d)
        # close() displays once more: a finished bar whose last update was just logged says "done" once
        if not (self.total and self.n >= self.total and getattr(self, "_logged_n", None) == self.n):
            log.info("%s", line)
        self._logged_n = self.n
        return True


def progress_line(d: dict[str, Any]) -> str:
    """One log line from a tqdm ``format_dict``: count, share, rate, elapsed and time left. A ``steady_rate``
    (:class:`LogProgress`: the rate since the first finished unit) wins over the average since the start.

    >>> progress_line({"desc": "indexing", "n": 50, "total": 200, "elapsed": 10.0, "unit": "doc", "rate": None})
    'indexing: 50/200 docs (25%), 5.0 docs/s, elapsed 10s, ETA 30s'
    >>> progress_line({"desc": "", "n": 7, "total": None, "elapsed": 0.0, "unit": "q", "rate": None})
    '7 qs'
    """
    n, total, elapsed = d["n"], d.get("total"), float(d.get("elapsed") or 0.0)
    unit = (d.get("unit") or "it") + "s"
    # the average since the start: lines are far apart and work comes in bursts (a window committed at a
    # time), so tqdm's smoothed recent rate swings the ETA by 2x between lines
    rate = None if d.get("rate_pending") else (
        d.get("steady_rate") or (n / elapsed if elapsed > 0 and n else d.get("rate")))
    parts = [f"{n}/{total} {unit} ({100 * n / total:.0f}%)" if total else f"{n} {unit}"]
    if rate:
        parts.append(f"{rate:.1f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit[:-1]}")
    if elapsed > 0:
        parts.append(f"elapsed {_duration(elapsed)}")
    if rate and total and n < total:
        parts.append(f"ETA {_duration((total - n) / rate)}")
    elif d.get("rate_pending"):
        parts.append("ETA at the next line")
    elif total and n >= total and elapsed > 0:
        parts.append("done")
    desc = d.get("prefix") or d.get("desc") or ""  # tqdm names it "prefix"
    return (f"{desc}: " if desc else "") + ", ".join(parts)


def _duration(seconds: float) -> str:
    """``75`` → ``'1m15s'``; ``3700`` → ``'1h01m'``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool | None = True,
    log_interval: float = LOG_INTERVAL_S,
    stream=None,
) -> tqdm:
    """A progress bar on a terminal, periodic log lines elsewhere, nothing when ``enabled`` is False.

    ``enabled=None`` means "when someone may be watching": the same as True (a log line is cheap). ``stream``
    is where a bar would draw (default ``sys.stderr``); only whether it is a terminal matters here.
    """
    if enabled is False:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True)
    stream = stream if stream is not None else sys.stderr
    if _is_tty(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    # mininterval throttles display(); maxinterval (tqdm's monitor thread) must not force it sooner
    return LogProgress(
        iterable, total=total, desc=desc, unit=unit, file=_NullFile(), mininterval=log_interval,
        maxinterval=max(log_interval, 10.0), miniters=1,
    )


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or file-like without isatty: not a terminal
        return False
