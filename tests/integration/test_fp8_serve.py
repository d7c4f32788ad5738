"""``qrank serve --quantization fp8`` as a user meets it on a machine without FP8 matrix units (a one-line error
that says why, no traceback), and the FP8 gate's line in the CLI's log at the default verbosity (the gate run
on the CPU through the float32 emulation of the FP8 products, which is what the CPU has)."""

from __future__ import annotations

import logging
import re

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")

from qrank.server.run import free_port  # noqa: E402

from test_server_cli import qrank  # noqa: E402


def test_serve_fp8_on_cpu_says_why(qwen3_reranker_dir):
    proc = qrank("serve", "--reranker", str(qwen3_reranker_dir), "--port", str(free_port()), "--quantization", "fp8")
    out, err = proc.communicate(timeout=120)
    text = " ".join(err.split())
    assert proc.returncode == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert "error:" in text and "FP8 matrix units" in text and "device 'cpu' is not a CUDA GPU" in text, text
    assert "use quantization='none'" in text


def test_gate_line_logged_at_default_verbosity(qwen3_reranker_dir, caplog):
    """The CLI's logging shows the gate's verdict when it passes too (it was logged only on failure)."""
    import torch
    from transformers.utils import logging as hf_logging

    from qrank.cli.common import configure_logging
    from qrank.models import quantization as qz
    from qrank.models.base import resolve_model
    from qrank.models.qwen3_reranker import Qwen3Reranker
    from qrank.settings import EngineSettings, ModelSettings

    loggers = [logging.getLogger(n) for n in ("qrank.models.quantization", "qrank.progress")]
    levels, hf_level = [lg.level for lg in loggers], hf_logging.get_verbosity()
    hf_bar = hf_logging.is_progress_bar_enabled()
    try:
        configure_logging(0)  # what `qrank serve` / `qrank rerank` set up without -v
        s = ModelSettings(device="cpu")
        rr = Qwen3Reranker.load(resolve_model(str(qwen3_reranker_dir), s), s)
        build = lambda: Qwen3Reranker(rr.model, rr.tokenizer, rr.info, EngineSettings())  # noqa: E731
        # thresholds any agreement meets: the line of a *passing* gate is the one under test (the tiny
        # model's scores crowd near 0.5, so the default thresholds would fail it and log a warning)
        lax = ModelSettings(quantization="fp8", quantization_min_tau=-1, quantization_min_top1=0,
                            quantization_max_delta=1)
        with torch.inference_mode():
            out = qz.quantize_backend(build, rr.model.model, lax)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        hf_logging.set_verbosity(hf_level)
        if hf_bar:
            hf_logging.enable_progress_bar()
    lines = [r for r in caplog.records if r.name == "qrank.models.quantization"]
    assert [r.levelno for r in lines] == [logging.INFO]
    line = lines[0].getMessage()
    print(line)
    q = out.info.extra["quantization"]
    assert q["check"] == "passed"
    pattern = (r": fp8 \(14 projections\) vs bfloat16 on the probe set: "
               r"Kendall tau mean -?\d\.\d{3} \(min -?\d\.\d{3}\), "
               r"top-1 agreement \d\.\d{2}, max \|Δ score\| \d\.\d{4} over 10 queries / 80 pairs$")
    assert re.search(pattern, line), line
    assert f"Kendall tau mean {q['tau_mean']:.3f}" in line  # the numbers logged are the ones in the model's info
