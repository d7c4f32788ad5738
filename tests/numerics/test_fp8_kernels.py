"""The fused FP8 quantization kernels (:mod:`qrank.engine.fp8_kernels`) under Triton's interpreter, run as a
fresh pytest process of interpreted_fp8_kernels.py (see that file for what is checked and why)."""

from __future__ import annotations

import pytest
from triton_interpreter import run_interpreted

pytest.importorskip("triton", reason="Triton comes with the test extra")


def test_the_kernels_under_the_interpreter():
    print(run_interpreted("interpreted_fp8_kernels.py"))
