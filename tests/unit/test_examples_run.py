"""Every docstring example in src/qrank runs (``--doctest-modules``): none may be skipped or faked.

A ``+SKIP`` directive or a ``>>> #`` pseudo-example would sit in the docs looking like a checked example
while nothing runs it; an example that cannot run here is written as prose naming the test that covers it.
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "qrank"
SKIP = re.compile(r"doctest:.*\+SKIP")
PSEUDO = re.compile(r"^\s*>>>\s*#")


def test_no_skipped_or_commented_out_examples():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SKIP.search(line) or PSEUDO.match(line):
                found.append(f"{path.relative_to(SRC.parent)}:{number}: {line.strip()}")
    assert not found, "examples that do not run (make them run, or turn them into prose):\n" + "\n".join(found)


def test_the_check_sees_its_targets():
    # the patterns above must match the spellings they forbid, or the test would pass vacuously
    assert SKIP.search(">>> f()  # doctest: +SKIP") and SKIP.search(">>> f()  # doctest: +ELLIPSIS, +SKIP")
    assert PSEUDO.match("    >>> # engine.last_hidden(x)") and not PSEUDO.match(">>> x  # a comment")
    assert len(list(SRC.rglob("*.py"))) > 50
