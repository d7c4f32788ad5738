"""Where does the 0.6B rerank-1x100 time go? Same process, interleaved rounds (a diagnostic, not a benchmark).

Systems: ``default`` (score_pairs as shipped), ``all-first`` (tokenize everything, then one engine call),
``encode-only`` (host tokenizing alone); then a kernel profile. (The 2026-12-04 A/B also ran the 59aea02
chunking here: 67.7 ms against 68.5 ms for the default; see bench/logs/r100_ab_h200/README.md.)
"""

from __future__ import annotations

import logging
import sys

import torch

import gpu_bench as gb

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
size = sys.argv[1] if len(sys.argv) > 1 else "0.6b"
model, tok, one, qr = gb.rerank_1x100(size)


def all_first():
    return torch.sigmoid(qr.engine.last_hidden(qr.encode(one)) @ qr.head)


systems = {"default": lambda: qr.score_pairs(one), "all-first": all_first,
           "encode-only": lambda: qr.encode(one)}
for name, (s, mem, ts) in gb.timed_rounds(systems, 9).items():
    print(f"{size} {name}: median {s * 1000:.2f} ms  runs {[round(t * 1000, 1) for t in ts]}")
notes: list[str] = []
gb.profile(f"Qwen3-Reranker-{size}", qr, one, notes)
print("\n".join(notes))
