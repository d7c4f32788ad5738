"""Run one test file of Triton kernels in a fresh pytest process under Triton's interpreter (``TRITON_INTERPRET=1``).

The interpreter must be switched on before Triton is first imported (its library functions are decorated
then), which another test of this process may already have done; hence a child process per file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_interpreted(filename: str) -> str:
    """Run ``tests/numerics/<filename>`` interpreted; fail unless every test passed. Returns pytest's summary."""
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / filename)],
        cwd=here.parent.parent, env=env, capture_output=True, text=True, timeout=900,
    )
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "failed" not in summary, tail
    return summary


def mend_scalar_index():
    """Triton 3.6's interpreter turns a scalar into an index with int() of a 1-element array, which numpy >= 2.4
    refuses; kernels' loops over loaded or runtime bounds need it. Mends it; returns the undo."""
    import triton.runtime.interpreter as interpreter

    patch_tensor = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patched
    return lambda: setattr(interpreter, "_patch_lang_tensor", patch_tensor)


def gpu_float_casts():
    """Triton 3.6's interpreter truncates float32 to bfloat16 and rounds float8 half-up without carrying into the
    exponent (``interpreter._convert_float``), where the GPU's ``cvt.rn`` rounds to nearest even like torch.
    Swaps in torch's casts, so kernels are checked with the GPU's rounding; returns the undo."""
    import numpy as np
    import torch
    import triton.language as tl
    import triton.runtime.interpreter as interpreter

    torch_types = {tl.float32: (torch.float32, np.float32), tl.bfloat16: (torch.bfloat16, np.uint16),
                   tl.float16: (torch.float16, np.float16), tl.float8e4nv: (torch.float8_e4m3fn, np.uint8)}
    storage = {np.uint16: torch.uint16, np.uint8: torch.uint8, np.float32: torch.float32, np.float16: torch.float16}
    original = interpreter._convert_float

    def convert(values, in_type, out_type, rounding_mode):
        (t_in, np_in), (t_out, np_out) = torch_types[in_type], torch_types[out_type]
        raw = torch.from_numpy(np.ascontiguousarray(values).view(np_in).copy())
        out = raw.view(storage[np_in]).view(t_in).to(t_out)
        return out.view(storage[np_out]).numpy().view(np_out)

    interpreter._convert_float = convert
    return lambda: setattr(interpreter, "_convert_float", original)
