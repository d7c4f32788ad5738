"""Progress reaches logs when stderr is not a terminal (issue 16.10): periodic lines with count, rate, ETA."""

from __future__ import annotations

import io
import logging
import re

import numpy as np
import pytest

from qrank.progress import LogProgress, progress, progress_line


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_tty_writes_log_lines_with_count_rate_and_eta(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="qrank.progress"):
        bar = progress(total=10, desc="indexing demo", unit="doc", stream=stream, log_interval=0)
        for _ in range(4):
            bar.update(1)
        bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "qrank.progress"]
    assert stream.getvalue() == ""  # nothing drawn into the pipe
    assert lines[0].startswith("indexing demo: 0/10 docs (0%)")
    mid = [line for line in lines if line.startswith("indexing demo: 4/10 docs (40%)")]
    assert mid and re.search(r"docs/s|s/doc", mid[0]) and "ETA" in mid[0]


def test_non_tty_lines_are_throttled(caplog):
    with caplog.at_level(logging.INFO, logger="qrank.progress"):
        bar = progress(total=1000, desc="x", unit="doc", stream=io.StringIO(), log_interval=3600)
        for _ in range(1000):
            bar.update(1)
        bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "qrank.progress"]
    # the opening line and the closing one, nothing per update
    assert len(lines) == 2 and lines[-1].startswith("x: 1000/1000 docs (100%)")


def test_terminal_gets_a_bar_and_disabled_gets_nothing(caplog):
    tty = _Tty()
    with caplog.at_level(logging.INFO, logger="qrank.progress"):
        bar = progress(total=3, desc="bar", stream=tty)
        bar.update(3)
        bar.close()
        off = progress(total=3, desc="off", enabled=False, stream=io.StringIO(), log_interval=0)
        off.update(3)
        off.close()
    assert not isinstance(bar, LogProgress) and "3/3" in tty.getvalue()
    assert not [r for r in caplog.records if r.name == "qrank.progress"]


def test_progress_line_eta_matches_rate():
    # the average rate (30 in 60 s), not tqdm's smoothed recent one: steadier ETAs between far-apart lines
    line = progress_line({"desc": "d", "n": 30, "total": 90, "elapsed": 60.0, "unit": "pair", "rate": 5.0})
    assert line == "d: 30/90 pairs (33%), 2.0 s/pair, elapsed 1m00s, ETA 2m00s"


def test_eval_stage_reports_through_the_helper(caplog):
    """The corpus encoding of ``qrank eval`` logs its progress when stderr is not a terminal."""
    from qrank.eval import stages

    class DS:
        def __init__(self) -> None:
            self.doc_texts = [f"doc {i}" for i in range(stages.ENCODE_WINDOW + 5)]

    ds = DS()

    with caplog.at_level(logging.INFO, logger="qrank.progress"):
        vectors, _ = stages.encode_corpus(ds, lambda texts: (np.zeros((len(texts), 2), np.float32), 0.1))
    assert vectors.shape == (len(ds.doc_texts), 2)
    lines = [r.getMessage() for r in caplog.records if r.name == "qrank.progress"]
    # pytest's captured stderr is not a terminal: the helper logs instead of drawing
    assert lines and lines[-1].startswith(f"dense: encode corpus: {len(ds.doc_texts)}/{len(ds.doc_texts)} docs")


@pytest.mark.parametrize("seconds,text", [(5, "5s"), (75, "1m15s"), (3700, "1h01m")])
def test_duration(seconds, text):
    from qrank.progress import _duration

    assert _duration(seconds) == text


def test_a_finished_bar_says_done_once(caplog):
    with (
        caplog.at_level(logging.INFO, logger="qrank.progress"),
        progress(total=3, desc="x", unit="doc", stream=io.StringIO(), log_interval=0) as bar,
    ):
        for _ in range(3):
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records if r.name == "qrank.progress"]
    assert [line for line in lines if line.endswith("done")] == [lines[-1]] and lines[-1].startswith("x: 3/3 docs")


def _clocked_bar(total: int, desc: str):
    """A log-line bar (no terminal) on a fake clock that starts at 0 s: ``clock[0]`` is now."""
    clock = [0.0]
    bar = progress(total=total, desc=desc, unit="doc", stream=io.StringIO(), log_interval=0)
    bar._time = lambda: clock[0]
    bar.start_t = bar.last_print_t = 0.0
    return bar, clock


def test_eta_counts_from_the_first_finished_unit_not_the_warm_up(caplog):
    """A first window that takes 60 s (model load, compile), then 10 units a second: at 110 of 200 the ETA is 9 s
    for the 90 left, not the 57 s the average since the start (110 in 70 s) gave; early lines were worse still
    (at 20 of 200: 9 minutes for 18 s of work)."""
    with caplog.at_level(logging.INFO, logger="qrank.progress"):
        bar, clock = _clocked_bar(200, "w")
        clock[0] = 60.0
        bar.update(10)  # the warm-up window
        for _ in range(10):
            clock[0] += 1.0
            bar.update(10)
        bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "qrank.progress"]
    last = [line for line in lines if line.startswith("w: 110/200 docs")][0]
    assert "10.0 docs/s" in last and "ETA 9s" in last and "elapsed 1m10s" in last


def test_no_eta_from_the_first_unit_alone(caplog):
    """The first line of a piped index add came when 1 of 800 documents was committed after 32 s of warm-up: its
    rate said "ETA 7h03m" for a 2.5-minute run. With only the first unit done no rate or ETA is shown; the next
    line has the steady one."""
    with caplog.at_level(logging.INFO, logger="qrank.progress"):
        bar, clock = _clocked_bar(800, "i")
        clock[0] = 32.0
        bar.update(1)
        clock[0] = 62.0
        bar.update(299)
        bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "qrank.progress" and not r.getMessage().startswith(
        "i: 0/")]
    assert lines[0] == "i: 1/800 docs (0%), elapsed 32s, ETA at the next line"
    assert "10.0 docs/s" in lines[1] and "ETA 50s" in lines[1]
