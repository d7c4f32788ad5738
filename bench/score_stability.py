"""Does a pair's score depend on what else shares its forward pass? (issue 20, "measure first")

For a seeded sample of SciFact claims, each claim's top-``depth`` abstracts are scored three ways with the same
loaded reranker backend:

* ``alone``   — every (claim, abstract) pair in a call of its own (one pair per forward pass);
* ``request`` — the claim's ``depth`` pairs in one call (what ``rerank()`` / one HTTP request does);
* ``mixed``   — ``group`` claims' pairs in one call (what a server batch of several requests does).

It reports the largest |score difference| against ``alone`` and the claims whose top-10 (order included)
changes. Run from the repository root.

CPU, the shared cross-encoder, BM25 candidates::

    python bench/score_stability.py --claims 20 --depth 100 --out bench/logs/score_stability_cpu.json

GPU (``--gpu``): Qwen3-Reranker 0.6B/8B shapes with random bf16 weights, the real Qwen tokenizer, the fast
engine, candidates from bench/data/scifact_candidates.json (BM25 and dense top-100 per claim, written on a CPU
with ``--write-candidates``: the device has neither bm25s nor the MiniLM weights). ``--deterministic`` measures
both modes and the time per request of each; ``--smoke`` runs the GPU path with tiny shapes on the CPU::

    python bench/score_stability.py --gpu --sizes 0.6b,8b --claims 10 --deterministic --out /tmp/out/stab
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
CANDIDATES = Path(__file__).resolve().parent / "data" / "scifact_candidates.json"


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


def measure(score_pairs, work: list[tuple[str, list[str]]], group: int) -> dict:
    """The three ways of scoring ``work`` (claims and their documents) with ``score_pairs(pairs) -> scores``,
    compared, with the seconds per request (one claim's documents) of each way.

    >>> fake = lambda pairs: np.array([len(q) + len(d) for q, d in pairs], np.float32)
    >>> m = measure(fake, [("q", ["a", "bb"]), ("qq", ["c"])], group=2)
    >>> m["mixed_vs_alone"]["max_abs_diff"], sorted(m["seconds_per_request"])
    (0.0, ['alone', 'mixed', 'request'])
    """
    t0 = time.perf_counter()
    alone = [np.concatenate([score_pairs([(q, d)]) for d in docs]).astype(np.float32) for q, docs in work]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    request = [np.asarray(score_pairs([(q, d) for d in docs]), dtype=np.float32) for q, docs in work]
    t_request = time.perf_counter() - t0
    t0 = time.perf_counter()
    mixed: list[np.ndarray] = []
    for start in range(0, len(work), group):
        part = work[start : start + group]
        scores = np.asarray(score_pairs([(q, d) for q, docs in part for d in docs]), dtype=np.float32)
        for _, docs in part:
            mixed.append(scores[: len(docs)])
            scores = scores[len(docs) :]
    t_mixed = time.perf_counter() - t0
    n = len(work)
    return {"request_vs_alone": compare(alone, request), "mixed_vs_alone": compare(alone, mixed),
            "mixed_vs_request": compare(request, mixed),
            "seconds_per_request": {"alone": round(t_alone / n, 4), "request": round(t_request / n, 4),
                                    "mixed": round(t_mixed / n, 4)}}


def bm25_work(dataset: str, claims: int, depth: int, seed: int) -> list[tuple[str, list[str]]]:
    """Seeded claims with their BM25 top-``depth`` abstracts (qrank's BM25 index: needs bm25s)."""
    from qrank.eval.data import load_dataset
    from qrank.index.bm25 import BM25Index

    ds = load_dataset(dataset)
    qids = sorted(random.Random(seed).sample(sorted(ds.queries), claims))
    bm25 = BM25Index(Path(tempfile.mkdtemp()))
    bm25.ensure(0, lambda: zip(ds.doc_ids, ds.doc_texts, strict=False))
    text_of = dict(zip(ds.doc_ids, ds.doc_texts, strict=False))
    return [(ds.queries[q], [text_of[d] for d, _ in bm25.search(ds.queries[q], depth)]) for q in qids]


def write_candidates(dataset: str, embedder: str, claims: int, depth: int, seed: int, out: Path) -> dict:
    """BM25 and dense (the shared MiniLM embedder, exact cosine) top-``depth`` ids per seeded claim, as JSON."""
    from qrank import Embedder
    from qrank.eval.data import load_dataset
    from qrank.index.bm25 import BM25Index

    ds = load_dataset(dataset)
    qids = sorted(random.Random(seed).sample(sorted(ds.queries), claims))
    bm25 = BM25Index(Path(tempfile.mkdtemp()))
    bm25.ensure(0, lambda: zip(ds.doc_ids, ds.doc_texts, strict=False))
    em = Embedder.from_pretrained(embedder, device="cpu")
    docs = em.model.embed_batch(list(ds.doc_texts))
    queries = em.model.embed_batch([ds.queries[q] for q in qids], is_query=True)
    dense = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :depth]
    data = {"dataset": "scifact", "seed": seed, "depth": depth, "embedder": Path(embedder).name, "claims": [
        {"id": q, "text": ds.queries[q], "bm25": [d for d, _ in bm25.search(ds.queries[q], depth)],
         "dense": [ds.doc_ids[i] for i in row]} for q, row in zip(qids, dense)]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data) + "\n")
    return data


def candidate_work(candidates: Path, corpus: Path, claims: int, depth: int) -> dict[str, list]:
    """Per retriever ('bm25', 'dense'), the first ``claims`` claims with their top-``depth`` texts."""
    data = json.loads(candidates.read_text())
    text_of = {}
    for line in corpus.open():
        r = json.loads(line)
        text_of[str(r["_id"])] = (r.get("title", "") + " " + r["text"]).strip()
    rows = data["claims"][:claims]
    return {ret: [(c["text"], [text_of[d] for d in c[ret][:depth]]) for c in rows] for ret in ("bm25", "dense")}


def gpu_rows(args, on_row=None) -> list[dict]:
    """Qwen3 reranker shapes (random bf16 weights) on the fast engine: each retriever's work in each mode, and
    with ``--fp8`` the same model's FP8 copy (qrank.engine.fp8) too. ``on_row(rows)`` sees the rows so far
    (the caller saves them: a run cut short by a time limit keeps what it measured)."""
    import copy
    import gc

    import torch
    from gpu_systems import build_model, tokenizer_for

    from qrank.models.qwen3_reranker import Qwen3Reranker
    from qrank.settings import EngineSettings
    from qrank.types import ModelInfo

    device = "cpu" if args.smoke else "cuda"
    work = candidate_work(Path(args.candidates), Path(args.dataset) / "corpus.jsonl", args.claims, args.depth)
    tok = tokenizer_for("reranker")
    modes = [False, True] if args.deterministic else [False]
    rows = []
    for size in args.sizes.split(","):
        model, _ = build_model("reranker", size, device=device, tiny=args.smoke)
        if args.smoke:
            model = model.float()
        variants = [("bf16" if not args.smoke else "fp32", model)]
        if args.fp8:
            from qrank.engine.fp8 import quantize_body

            q = copy.deepcopy(model)
            quantize_body(getattr(q, "base_model", q))
            variants.append(("fp8", q))
        for precision, m in variants:
            for det in modes:  # the default mode first: deterministic mode sets process-wide kernel switches
                info = ModelInfo(id=f"random-{size}", kind="qwen3-reranker", role="reranker",
                                 max_length=args.max_length, dtype=str(model.dtype).replace("torch.", ""),
                                 device=device)
                backend = Qwen3Reranker(m, tok, info, EngineSettings(engine="fast", deterministic=det))
                for retriever, items in work.items():
                    log.info("%s %s %s %s: %d claims", size, precision, "deterministic" if det else "default",
                             retriever, len(items))
                    rows.append({"model": f"Qwen3-Reranker-{size} shape" + (" (tiny smoke)" if args.smoke else ""),
                                 "precision": precision, "mode": "deterministic" if det else "default",
                                 "candidates": retriever, "claims": len(items),
                                 "pairs": sum(len(d) for _, d in items), "engine": backend.info.extra["engine"],
                                 **measure(backend.score_pairs, items, args.group)})
                    if on_row:
                        on_row(rows)
                del backend
        del model, variants, m
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as the table BENCHMARKS.md shows.

    >>> row = {"model": "m", "mode": "default", "candidates": "bm25", "claims": 1, "pairs": 2,
    ...        "request_vs_alone": {"max_abs_diff": 0.0, "pairs_differing": 0, "claims_top10_changed": 0},
    ...        "mixed_vs_alone": {"max_abs_diff": 1e-3, "pairs_differing": 1, "claims_top10_changed": 1},
    ...        "seconds_per_request": {"alone": 1.0, "request": 0.1, "mixed": 0.1}}
    >>> markdown([row]).splitlines()[2]
    '| m | default | bm25 | 1 / 2 | 0 (0/2) | 0 | 1.0e-03 (1/2) | 1 | 0.1000 | 1.0000 |'
    """
    out = ["| model | mode | candidates | claims / pairs | request vs alone: max abs diff (pairs differing) "
           "| top-10 changed | mixed vs alone: max abs diff (pairs differing) | top-10 changed | s/request "
           "| s/request one pair per call |", "|" + "---|" * 10]
    for r in rows:
        ra, ma = r["request_vs_alone"], r["mixed_vs_alone"]

        def diff(c: dict) -> str:
            d = c["max_abs_diff"]
            return f"{d:.1e} ({c['pairs_differing']}/{r['pairs']})" if d else f"0 (0/{r['pairs']})"

        model = r["model"] + (f" {r['precision']}" if r.get("precision") else "")
        out.append(f"| {model} | {r['mode']} | {r['candidates']} | {r['claims']} / {r['pairs']} | {diff(ra)} "
                   f"| {ra['claims_top10_changed']} | {diff(ma)} | {ma['claims_top10_changed']} "
                   f"| {r['seconds_per_request']['request']:.4f} | {r['seconds_per_request']['alone']:.4f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="../shared/datasets/scifact")
    ap.add_argument("--reranker", default="../shared/models/scifact-minilm-ce")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--claims", type=int, default=20)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--group", type=int, default=4, help="claims per mixed call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deterministic", action="store_true", help="measure deterministic mode too (and its cost)")
    ap.add_argument("--gpu", action="store_true", help="Qwen3 shapes with random bf16 weights on the fast engine")
    ap.add_argument("--smoke", action="store_true", help="--gpu's path with tiny shapes on the CPU")
    ap.add_argument("--fp8", action="store_true", help="--gpu: each model's FP8 copy too (qrank.engine.fp8)")
    ap.add_argument("--sizes", default="0.6b,8b", help="--gpu: Qwen3-Reranker shapes")
    ap.add_argument("--max-length", type=int, default=1024, help="--gpu: tokens per pair (SciFact fits)")
    ap.add_argument("--candidates", default=str(CANDIDATES), help="--gpu: claims and top-100 ids (JSON)")
    ap.add_argument("--write-candidates", action="store_true", help="write --candidates (CPU: bm25s, MiniLM)")
    ap.add_argument("--embedder", default="../shared/models/all-MiniLM-L6-v2", help="--write-candidates' dense model")
    ap.add_argument("--out", default=None, help="a .json file, or a folder for --gpu (JSON + markdown)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.write_candidates:
        data = write_candidates(args.dataset, args.embedder, args.claims, args.depth, args.seed, Path(args.candidates))
        return {"written": args.candidates, "claims": len(data["claims"])}
    if args.gpu or args.smoke:
        import torch
        import transformers

        out = Path(args.out) if args.out else None
        device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu"

        def save(rows: list[dict]) -> dict:
            result = {"rows": rows, "torch": torch.__version__, "transformers": transformers.__version__,
                      "device": device, "depth": args.depth, "group": args.group, "max_length": args.max_length}
            if out:
                out.mkdir(parents=True, exist_ok=True)
                (out / "score_stability_gpu.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
                (out / "score_stability_gpu.md").write_text(markdown(rows))
            return result

        result = save(gpu_rows(args, on_row=save))
        print(markdown(result["rows"]))
        return result
    from qrank import Reranker

    work = bm25_work(args.dataset, args.claims, args.depth, args.seed)
    modes = [False, True] if args.deterministic else [False]
    rows = []
    for det in modes:
        rr = Reranker.from_pretrained(args.reranker, device=args.device, dtype=args.dtype, deterministic=det)
        rows.append({"model": Path(args.reranker).name, "mode": "deterministic" if det else "default",
                     "candidates": "bm25", "claims": len(work), "pairs": sum(len(d) for _, d in work),
                     "info": rr.info.to_dict(), **measure(rr.model.score_pairs, work, args.group)})
    result = {"reranker": args.reranker, "machine": platform.processor() or platform.machine(), "depth": args.depth,
              "group": args.group, "seed": args.seed, "rows": rows}
    print(markdown(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
