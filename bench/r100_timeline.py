"""Host/GPU timeline of one 0.6B rerank-1x100 call: when each chunk is encoded and submitted on the host, when
its passes start and end on the GPU (a diagnostic for the pipelining of tokenizing with the GPU, not a benchmark).

Wraps the reranker's ``encode`` and its engine's ``submit`` (present in every version since the pipelining
landed), so the same script times any commit's tree: copy it into that tree's ``bench/`` and run it there.

    PYTHONPATH=/tmp/site:$TREE/src:$TREE/bench python $TREE/bench/r100_timeline.py 0.6b label
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import gpu_bench as gb

size = sys.argv[1] if len(sys.argv) > 1 else "0.6b"
label = sys.argv[2] if len(sys.argv) > 2 else "tree"
model, tok, one, qr = gb.rerank_1x100(size)
events: list[tuple] = []
base: dict = {}
encode, submit = qr.encode, qr.engine.submit


def timed_encode(pairs, **kw):
    t = time.perf_counter()
    out = encode(pairs, **kw)
    events.append(("enc", len(pairs), t - base["t"], time.perf_counter() - base["t"], None, None))
    return out


def timed_submit(seqs):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t = time.perf_counter()
    a.record()
    out = submit(seqs)
    b.record()
    events.append(("sub", len(seqs), t - base["t"], time.perf_counter() - base["t"], a, b))
    return out


qr.encode, qr.engine.submit = timed_encode, timed_submit
rounds = []
for r in range(12):
    events.clear()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    base["t"] = time.perf_counter()
    start.record()
    qr.score_pairs(one)
    total = time.perf_counter() - base["t"]
    torch.cuda.synchronize()
    rows = []
    for kind, n, h0, h1, a, b in events:
        g = (start.elapsed_time(a), start.elapsed_time(b)) if a is not None else (None, None)
        rows.append((kind, n, h0 * 1e3, h1 * 1e3, *g))
    rounds.append((total * 1e3, rows))
times = [t for t, _ in rounds[2:]]
med = statistics.median(times)
print(f"{label} {size}: total median {med:.2f} ms over {len(times)} rounds {[round(t, 1) for t in times]}")
t, rows = min(rounds[2:], key=lambda x: abs(x[0] - med))
print(f"{label}: the median round ({t:.2f} ms): kind, items, host start-end ms, GPU (event before..after submit) ms")
for kind, n, h0, h1, g0, g1 in rows:
    g = f"  gpu {g0:7.2f} .. {g1:7.2f}" if g0 is not None else ""
    print(f"  {kind} {n:4d}  host {h0:7.2f} .. {h1:7.2f}{g}")
subs = [r for r in rows if r[0] == "sub"]
gaps = [max(0.0, subs[i + 1][4] - subs[i][5]) for i in range(len(subs) - 1)]
print(f"{label}: chunks {len(subs)}, GPU idle between chunks {sum(gaps):.2f} ms {[round(g, 2) for g in gaps]}, "
      f"GPU start of first chunk {subs[0][4]:.2f} ms, host encode total "
      f"{sum(r[3] - r[2] for r in rows if r[0] == 'enc'):.2f} ms, host submit total "
      f"{sum(r[3] - r[2] for r in subs):.2f} ms")
