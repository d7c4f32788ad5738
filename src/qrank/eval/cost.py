"""Measuring what a system costs: wall time per query, percentiles, throughput and peak memory, and the
machine they were measured on (:func:`environment`).

>>> with PeakMemory() as mem:
...     data = bytearray(10 * 1024 * 1024)
>>> mem.peak_mb > 0
True
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..settings import Settings


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """p50/p99/mean latency and single-stream throughput of one query loop.

    Throughput is queries per second of wall time spent answering them one at a time.

    >>> latency_summary([10.0, 20.0, 30.0])["throughput_qps"]
    50.0
    """
    if len(latencies_ms) == 0:
        return {"latency_p50_ms": None, "latency_p99_ms": None, "latency_mean_ms": None, "throughput_qps": None}
    arr = np.asarray(latencies_ms, dtype=np.float64)
    total_s = float(arr.sum()) / 1000.0
    return {
        "latency_p50_ms": float(np.percentile(arr, 50)),
        "latency_p99_ms": float(np.percentile(arr, 99)),
        "latency_mean_ms": float(arr.mean()),
        "throughput_qps": float(len(arr) / total_s) if total_s > 0 else None,
    }


def rss_mb() -> float:
    """Resident memory of this process now, in MiB (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is KiB on Linux, bytes on macOS
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class PeakMemory:
    """Highest resident memory of the process while the block runs (sampled every ``interval`` s).

    Memory is per process, so the figure includes whatever was loaded before the block (models,
    other indexes); ``delta_mb`` is the growth over the block's start.
    """

    def __init__(self, interval: float = 0.02) -> None:  # 50 samples/s: catches short peaks; one /proc read each
        self.interval = interval
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> PeakMemory:
        self.start_mb = self.peak_mb = rss_mb()
        self._thread = threading.Thread(target=self._sample, name="qrank-eval-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())

    @property
    def delta_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.ms`` / ``sw.s``.

    >>> with Stopwatch() as sw:
    ...     pass
    >>> sw.ms >= 0
    True
    """

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.s = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self._t0

    @property
    def ms(self) -> float:
        return self.s * 1000.0


def environment(settings: Settings) -> dict:
    """What the costs were measured on: versions, machine, device, load and the numerics ``settings`` choose."""
    import torch

    from .. import __version__
    from ..models.base import pick_device

    device = pick_device(settings.models.device)
    return {
        "qrank": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU",
        # on a shared machine the other processes' load is part of every latency measured
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        # a report read later must say which numerics produced it (int8/fp8 scores are not fp32's)
        "dtype": settings.models.dtype,
        "quantization": settings.models.quantization,
        "deterministic": settings.engine.deterministic,
    }
