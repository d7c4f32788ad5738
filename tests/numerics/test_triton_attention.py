"""qrank's Triton attention kernel on the CPU: runs tests/numerics/interpreted_triton_attention.py in a
fresh pytest process under Triton's interpreter (see that file for what is checked and why)."""

from __future__ import annotations

import pytest
from triton_interpreter import run_interpreted

pytest.importorskip("triton", reason="Triton comes with the test extra")


def test_the_kernel_under_the_interpreter():
    print(run_interpreted("interpreted_triton_attention.py"))
