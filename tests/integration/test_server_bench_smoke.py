"""The GPU server benchmark runs end to end on CPU with a tiny model (its --quick mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_server_bench_quick(tmp_path, shared):
    results, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\nother text\n")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "server_bench.py"),
            "--quick",
            "--device",
            "cpu",
            "--results",
            str(results),
            "--markdown",
            str(markdown),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(results.read_text())
    assert len(rows) == 1 and rows[0]["bench"] == "server" and rows[0]["server_errors"] == 0
    assert rows[0]["server_rps"] > 0 and rows[0]["inproc_sequential_rps"] > 0
    text = markdown.read_text()
    assert "other text" in text and "<!-- server-bench -->" in text and "| tiny-qwen3-reranker" in text
