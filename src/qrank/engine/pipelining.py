"""Overlap tokenizing with the GPU: cut a request into chunks, submit each as soon as it is encoded.

A tokenizer thread encodes the request in slabs; encoded sequences gather into a chunk, and the chunk's forward
passes are queued on the device (``engine.submit``) once its exact computed token count (a shared query
prefix counted once per pass, :meth:`~qrank.engine.fast.FastEngine.computed_tokens`) fills the chunk's
size, so the host tokenizes the next items while the GPU runs. The first chunk is small (the GPU idles
until it is ready) and each next one ``growth`` times bigger, up to the engine's pass budget, so the host
has the next chunk ready before the GPU runs dry; an engine can ask for a big first chunk
(``first_chunk_tokens``: a big model loses more to small passes than it gains from starting a few
milliseconds sooner). No token count is guessed: every cut is made on encoded sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate

# items in each of the tokenizer thread's first two slabs: small, so the first (small) chunk is not held up by
# encoding items it will not take (slab_bounds)
FIRST_SLAB_ITEMS = 8


class ChunkSizer:
    """The computed-token size of each next chunk: ``first_tokens``, then ``growth`` times more, up to a pass.

    A chunk is the longest run of sequences whose computed tokens stay within the wanted size (at least one
    sequence), so a full-size chunk is exactly one pass.

    >>> s = ChunkSizer(target_tokens=1000, first_tokens=250, growth=2.0)
    >>> counts = [0, 100, 200, 300, 400]       # computed tokens of the first 0, 1, 2, 3, 4 sequences
    >>> s.cut(lambda k: counts[k] <= s.want, 0, 4)   # 200 <= 250 < 300: the chunk is the first 2 sequences
    2
    >>> s.want, s.cut(lambda k: counts[k] <= s.want, 0, 4)  # the next chunk wants 500: all 4 may still grow
    (500, None)
    """

    def __init__(self, target_tokens: int, first_tokens: int | None = None, growth: float = 2.0) -> None:
        if target_tokens < 1 or growth < 1.0:
            raise ValueError("target_tokens >= 1 and growth >= 1 are required")
        self.target = int(target_tokens)
        self.want = min(first_tokens or self.target, self.target)
        # 2: from a 1/8-pass first chunk the full pass size comes at the fourth chunk, and the host tokenizes
        # each chunk while the GPU runs the previous, half-size one (the ramp measured in BENCHMARKS.md, run 4a).
        # 3 was faster in one quiet H100 call (71.6 vs 75.1 ms) and not in a noisy one (bench/logs/
        # device_2026-12-05_h100*): unconfirmed, so 2 stays (the engine the full GPU suite passed with)
        self.growth = growth

    def cut(self, fits: Callable[[int], bool], lo: int, hi: int) -> int | None:
        """Where the chunk ends among ``hi`` encoded sequences, or None while they may still grow it.

        ``fits(k)``: whether the first ``k`` sequences' computed tokens are within ``want``; ``fits(lo)`` is
        known. The chunk is complete once ``fits(hi)`` is false: it takes the first ``k`` with ``fits(k)`` and
        not ``fits(k + 1)`` (or ``k = 1``), and the next chunk's size grows.
        """
        if hi <= lo or fits(hi):
            return None
        while hi - lo > 1:  # bisection: fits(lo), not fits(hi)
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        self.grow()
        return max(lo, 1)

    def grow(self) -> None:
        """A chunk was cut: the next one wants ``growth`` times more, up to a pass."""
        self.want = min(int(self.want * self.growth), self.target)


def pipelined_last_hidden(engine, items: Sequence, encode: Callable[[Sequence], list], *,
                          chunk_tokens: int | None = None, first_tokens: int | None = None,
                          overlap: bool | None = None):
    """``engine.last_hidden(encode(items))``, but on a GPU the tokenizing of each chunk of ``items``
    overlaps the forward passes of the chunks before it.

    ``engine.submit(seqs)`` returns a pending result whose ``result()`` waits
    (:class:`~qrank.engine.fast.Pending`) and ``engine.computed_tokens(seqs)`` counts a chunk. ``overlap``:
    None chunks on CUDA only (a CPU gains nothing: the host *is* the device); engines without ``submit``
    (the reference path) and single items always take everything at once.

    >>> import torch
    >>> class Echo:  # an engine whose "hidden state" is the sequence length
    ...     def last_hidden(self, seqs): return torch.tensor([[float(len(s))] for s in seqs])
    >>> pipelined_last_hidden(Echo(), ["ab", "c"], lambda xs: [list(x) for x in xs]).flatten().tolist()
    [2.0, 1.0]
    """
    import torch

    submit = getattr(engine, "submit", None)
    if overlap is None:
        overlap = getattr(getattr(engine, "device", None), "type", "cpu") == "cuda"
    if submit is None or not overlap or len(items) < 2:
        return engine.last_hidden(encode(items))
    first = first_tokens or getattr(engine, "first_chunk_tokens", None)
    sizer = ChunkSizer(chunk_tokens or engine.max_batch_tokens, first)
    pending, chunk, raw = [], [], [0]

    def fits(k: int) -> bool:  # within the wanted size: exact, and counted only where the plain lengths exceed it
        return raw[k] <= sizer.want or engine.computed_tokens(chunk[:k]) <= sizer.want

    # a tokenizer thread encodes slab after slab (the Rust tokenizer lets go of the GIL) while this thread cuts
    # chunks and queues their passes: encoding no longer waits for a submit, nor a submit for the next slab
    # (same-process variants on an H100: bench/logs/r100_2026-12-05)
    pool = ThreadPoolExecutor(1, thread_name_prefix="qrank-tokenize")
    try:
        slabs = [pool.submit(encode, items[a:b]) for a, b in slab_bounds(len(items))]
        for i, slab in enumerate(slabs):
            known = len(chunk)  # the sequences carried over do not fill a chunk yet
            chunk += slab.result()
            raw = list(accumulate((len(s) for s in chunk), initial=0))  # tokens without sharing: an upper bound
            if i == 0 and len(slabs) > 1 and fits(len(chunk)):
                # the GPU idles until a first chunk comes: the first slab goes at once when it fits, rather than
                # waiting for the second to show where the longest run within the first size ends
                pending.append(submit(chunk))
                sizer.grow()
                chunk, raw = [], [0]
                continue
            while (k := sizer.cut(fits, known, len(chunk))) is not None:
                pending.append(submit(chunk[:k]))  # returns at once: the GPU works while the next items encode
                chunk, known = chunk[k:], 0
                raw = [n - raw[k] for n in raw[k:]]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an error or an interrupt leaves no encoding behind
    if chunk:
        pending.append(submit(chunk))
    return torch.cat([p.result() for p in pending])


def slab_bounds(n: int, first: int = FIRST_SLAB_ITEMS) -> list[tuple[int, int]]:
    """The item ranges the tokenizer thread encodes: two small slabs (the first chunk must not wait for
    items it will not take), then each twice the one before (fewer calls once the GPU is busy).

    >>> slab_bounds(50)
    [(0, 8), (8, 16), (16, 32), (32, 50)]
    """
    bounds, start, size = [], 0, first
    while start < n:
        bounds.append((start, min(start + size, n)))
        start += size
        if len(bounds) > 1:
            size *= 2
    return bounds
