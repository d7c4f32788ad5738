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
