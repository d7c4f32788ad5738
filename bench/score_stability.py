"""Does a pair's score depend on what else shares its forward pass? (issue 20, "measure first")

For a seeded sample of SciFact test claims, each claim's BM25 top-``depth`` abstracts are scored three ways
with the same loaded reranker:

* ``alone``   — every (claim, abstract) pair in a call of its own (one pair per forward pass);
* ``request`` — the claim's ``depth`` pairs in one call (what ``rerank()`` / one HTTP request does);
* ``mixed``   — ``group`` claims' pairs in one call (what a server batch of several requests does).

It reports the largest |score difference| against ``alone`` and the claims whose top-10 (order included)
changes. Run from the repository root (CPU, the shared cross-encoder by default)::

    python bench/score_stability.py --claims 20 --depth 100 --out bench/logs/score_stability_cpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("score_stability")


def top10(scores: np.ndarray) -> list[int]:
    """Indices of the 10 best scores, best first, ties by index (the facade's rule).

    >>> top10(np.array([0.1, 0.9, 0.5]))
    [1, 2, 0]
    """
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:10]


def compare(reference: list[np.ndarray], other: list[np.ndarray]) -> dict:
    """Largest |difference|, pairs that differ at all, and claims whose top-10 changed.

    >>> compare([np.array([0.5, 0.25])], [np.array([0.5, 0.25])])
    {'max_abs_diff': 0.0, 'pairs_differing': 0, 'claims_top10_changed': 0}
    """
    diffs = np.concatenate([np.abs(a.astype(np.float64) - b.astype(np.float64)) for a, b in zip(reference, other)])
    changed = sum(top10(a) != top10(b) for a, b in zip(reference, other))
    return {"max_abs_diff": float(diffs.max()), "pairs_differing": int((diffs > 0).sum()),
            "claims_top10_changed": int(changed)}


def main(argv=None) -> dict:
    from qrank import Reranker
    from qrank.eval.data import load_dataset
    from qrank.index.bm25 import BM25Index

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="../shared/datasets/scifact")
    ap.add_argument("--reranker", default="../shared/models/scifact-minilm-ce")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--claims", type=int, default=20)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--group", type=int, default=4, help="claims per mixed call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    ds = load_dataset(args.dataset)
    qids = sorted(random.Random(args.seed).sample(sorted(ds.queries), args.claims))
    bm25 = BM25Index(Path(tempfile.mkdtemp()))
    bm25.ensure(0, lambda: zip(ds.doc_ids, ds.doc_texts, strict=False))
    text_of = dict(zip(ds.doc_ids, ds.doc_texts, strict=False))
    work = [(ds.queries[q], [text_of[d] for d, _ in bm25.search(ds.queries[q], args.depth)]) for q in qids]
    rr = Reranker.from_pretrained(args.reranker, device=args.device, dtype=args.dtype)

    t0 = time.perf_counter()
    alone = [np.array([rr.score(q, [d])[0] for d in docs], dtype=np.float32) for q, docs in work]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    request = [np.array(rr.score(q, docs), dtype=np.float32) for q, docs in work]
    t_request = time.perf_counter() - t0
    t0 = time.perf_counter()
    mixed: list[np.ndarray] = []
    for start in range(0, len(work), args.group):
        part = work[start : start + args.group]
        ranked = rr.batch_rerank([q for q, _ in part], [docs for _, docs in part], return_documents=False)
        for (_, docs), results in zip(part, ranked):
            scores = np.empty(len(docs), dtype=np.float32)
            for r in results:
                scores[r.index] = r.score
            mixed.append(scores)
    t_mixed = time.perf_counter() - t0
    pairs = sum(len(d) for _, d in work)
    result = {
        "reranker": args.reranker, "info": rr.info.to_dict(), "machine": platform.processor() or platform.machine(),
        "claims": len(work), "pairs": pairs, "depth": args.depth, "group": args.group, "seed": args.seed,
        "request_vs_alone": compare(alone, request), "mixed_vs_alone": compare(alone, mixed),
        "mixed_vs_request": compare(request, mixed),
        "seconds": {"alone": round(t_alone, 2), "request": round(t_request, 2), "mixed": round(t_mixed, 2)},
    }
    log.info("%s", json.dumps(result, indent=2, default=str))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
