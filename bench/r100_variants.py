"""0.6B rerank 1x100: host-side variants of the pipelined path, same process, interleaved (a diagnostic).

Variants (patched in here, so one process times them all on the same engine): ``head`` (as shipped),
``fastenc`` (tokenize without offsets; offsets only for the rare over-long pair), ``thread`` (a tokenizer
thread encodes slab after slab while the main thread cuts chunks and submits), ``thread+fastenc``, and
``engine-only`` (the already tokenized request: the bound the pipelining aims at).

    PYTHONPATH=src:bench python bench/r100_variants.py 0.6b
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate

import torch

import gpu_bench as gb
import qrank.models.qwen3_reranker as q3
from qrank.engine import pipelining as pl

size = sys.argv[1] if len(sys.argv) > 1 else "0.6b"
model, tok, one, qr = gb.rerank_1x100(size)
enc = qr.encoder
shipped_encode = enc.encode
shipped_pipeline = q3.pipelined_last_hidden


def fast_encode(pairs, instruction):
    budget = enc.max_length - len(enc.prefix_ids) - len(enc.suffix_ids)
    texts = [q3.format_user_turn(instruction, q, d) for q, d in pairs]
    fast = enc.text_tok.encode_batch_fast(texts, add_special_tokens=False)
    out = [enc.prefix_ids + e.ids + enc.suffix_ids for e in fast]
    long = [i for i, ids in enumerate(out) if len(ids) - len(enc.prefix_ids) - len(enc.suffix_ids) > budget]
    if long:
        for i, ids in zip(long, shipped_encode([pairs[i] for i in long], instruction)):
            out[i] = ids
    return out


def threaded_pipeline(engine, items, encode, *, chunk_tokens=None, first_tokens=None, overlap=None):
    first = first_tokens or getattr(engine, "first_chunk_tokens", None)
    sizer = pl.ChunkSizer(chunk_tokens or engine.max_batch_tokens, first)
    bounds, a, n = [], 0, pl.FIRST_SLAB_ITEMS
    while a < len(items):
        bounds.append((a, min(a + n, len(items))))
        a, n = a + n, n * 2 if len(bounds) > 1 else n
    pending, chunk, raw = [], [], [0]

    def fits(k):
        return raw[k] <= sizer.want or engine.computed_tokens(chunk[:k]) <= sizer.want

    with ThreadPoolExecutor(1) as pool:
        futures = [pool.submit(encode, items[a:b]) for a, b in bounds]
        for fut in futures:
            known = len(chunk)
            chunk += fut.result()
            raw = list(accumulate((len(s) for s in chunk), initial=0))
            while (k := sizer.cut(fits, known, len(chunk))) is not None:
                pending.append(engine.submit(chunk[:k]))
                chunk, known = chunk[k:], 0
                raw = [m - raw[k] for m in raw[k:]]
    if chunk:
        pending.append(engine.submit(chunk))
    return torch.cat([p.result() for p in pending])


def variant(encode, pipeline):
    def run():
        enc.encode, q3.pipelined_last_hidden = encode, pipeline
        try:
            return qr.score_pairs(one)
        finally:
            enc.encode, q3.pipelined_last_hidden = shipped_encode, shipped_pipeline
    return run


seqs = qr.encode(one)
ref = qr.score_pairs(one)
systems = {"head": variant(shipped_encode, shipped_pipeline), "fastenc": variant(fast_encode, shipped_pipeline),
           "thread": variant(shipped_encode, threaded_pipeline),
           "thread+fastenc": variant(fast_encode, threaded_pipeline),
           "engine-only": lambda: qr.engine.last_hidden(seqs)}
for name in ("fastenc", "thread", "thread+fastenc"):
    got = systems[name]()
    print(f"{name}: max |score - head| {abs(got - ref).max():.2e}")
print("fast_encode == encode:", fast_encode(one, q3.DEFAULT_INSTRUCTION) == seqs)
for rnd in range(2):
    for name, (s, mem, ts) in gb.timed_rounds(systems, 9).items():
        print(f"round {rnd} {size} {name}: median {s * 1000:.2f} ms  runs {[round(t * 1000, 1) for t in ts]}")
import time  # noqa: E402
for name, fn in (("encode", lambda: shipped_encode(one, q3.DEFAULT_INSTRUCTION)),
                 ("fast_encode", lambda: fast_encode(one, q3.DEFAULT_INSTRUCTION))):
    ts = []
    for _ in range(15):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    print(f"host {name}: median {sorted(ts)[7] * 1000:.2f} ms")
