"""0.6B rerank 1x100: chunk-ramp variants of the pipelined path, same process, interleaved (a diagnostic).

Each variant is the shipped ``pipelined_last_hidden`` with one knob moved, so one process times them all on the
same engine: ``head`` (as shipped), ``slab4`` / ``slab16`` (items in the tokenizer thread's first slabs),
``first1024`` / ``first3072`` (computed tokens of the first chunk), ``growth3`` (each next chunk 3x the one
before; 2x is shipped), ``one-chunk`` (no pipelining: encode everything, then one call) and ``engine-only`` (the already
tokenized request: the bound the pipelining aims at). Each variant's chunk sizes are printed.

    PYTHONPATH=src:bench python bench/r100_variants.py 0.6b
"""

from __future__ import annotations

import functools
import sys

import gpu_bench as gb
import qrank.models.qwen3_reranker as q3
from qrank.engine import pipelining as pl

size = sys.argv[1] if len(sys.argv) > 1 else "0.6b"
model, tok, one, qr = gb.rerank_1x100(size)
shipped = q3.pipelined_last_hidden
shipped_bounds, shipped_sizer = pl.slab_bounds, pl.ChunkSizer
chunks: list[int] = []


def variant(slab: int | None = None, first: int | None = None, growth: float | None = None, overlap=None):
    def pipeline(engine, items, encode, **kw):
        if first:
            kw["first_tokens"] = first
        return shipped(engine, items, encode, overlap=overlap, **kw)

    def run():
        if slab:
            pl.slab_bounds = functools.partial(shipped_bounds, first=slab)
        if growth:
            pl.ChunkSizer = functools.partial(shipped_sizer, growth=growth)
        q3.pipelined_last_hidden = pipeline
        try:
            return qr.score_pairs(one)
        finally:
            q3.pipelined_last_hidden, pl.slab_bounds, pl.ChunkSizer = shipped, shipped_bounds, shipped_sizer
    return run


submit = qr.engine.submit


def counting_submit(seqs):
    chunks.append(len(seqs))
    return submit(seqs)


qr.engine.submit = counting_submit
seqs = qr.encode(one)
ref = qr.score_pairs(one)
systems = {"head": variant(), "slab4": variant(slab=4), "slab16": variant(slab=16), "first1024": variant(first=1024),
           "first3072": variant(first=3072), "growth3": variant(growth=3.0), "one-chunk": variant(overlap=False),
           "engine-only": lambda: qr.engine.last_hidden(seqs)}
for name, fn in systems.items():
    chunks.clear()
    got = fn()
    diff = "" if name == "engine-only" else f" max |score - head| {abs(got - ref).max():.2e}"
    print(f"{name}: chunks {list(chunks)}{diff}")
for rnd in range(2):
    for name, (s, mem, ts) in gb.timed_rounds(systems, 9).items():
        print(f"round {rnd} {size} {name}: median {s * 1000:.2f} ms  runs {[round(t * 1000, 1) for t in ts]}")
