"""The engine's one host-to-device copy: int arrays planned on the host, moved without making the host wait."""

from __future__ import annotations

import numpy as np


def to_device(arrays: list[np.ndarray], device, *, out=None) -> list:
    """``arrays`` as int64 tensors on ``device``, moved in one copy; ``out``: copy into this flat tensor instead.

    On CUDA the host side is pinned and the copy asynchronous, so the host plans the next pass while the
    GPU works (torch's pinned-memory allocator keeps the buffer alive until the copy has run). The parts
    come back as views of one flat tensor, in order.

    >>> [t.tolist() for t in to_device([np.array([1, 2]), np.array([3])], "cpu")]
    [[1, 2], [3]]
    """
    import torch

    sizes = [int(a.size) for a in arrays]
    host = torch.from_numpy(np.concatenate(arrays).astype(np.int64, copy=False) if arrays else np.zeros(0, np.int64))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        host = host.pin_memory()
    if out is None:
        flat = host.to(device, non_blocking=cuda)
    else:
        flat = out.copy_(host, non_blocking=cuda)
    return list(torch.split(flat, sizes))
