"""Long rows on the GPU: 1 query x 20 documents of 2,000-4,000 tokens, Qwen3 reranker shapes (random bf16 weights).

Same process, interleaved rounds (bench/gpu_bench.py's ``timed_rounds``), medians. Systems: the model card's
recipe as written (batches of 8, and all 20 in one batch: the faster one is the baseline), qrank as shipped, and
qrank with other attention tile shapes / FlashAttention varlen (issue 17 point 4: measure before changing).

    PYTHONPATH=src:bench python bench/longrow_bench.py --sizes 0.6b,8b --out $OUT
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_bench as gb  # noqa: E402

log = logging.getLogger("longrow_bench")
# (block_m, block_n, num_warps, num_stages) tried as the long-row tile shape beside the shipped one
TILES = [(64, 64, 4, 3), (128, 64, 8, 2), (128, 64, 4, 3), (128, 128, 8, 2)]


def main(argv=None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.6b,8b")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--variants", default="tiles,varlen", help="comma list: tiles, varlen, cudnn, heavy, none")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rep = gb.Report(torch.cuda.get_device_name())
    notes: list[str] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes.split(","):
        bench_size(size, args, rep, notes)
        gc.collect()
        torch.cuda.empty_cache()
        # written after every size: a run cut short by a time limit keeps the sizes it measured
        (out / "longrow_results.json").write_text(json.dumps(rep.rows, indent=1))
        (out / "longrow_notes.md").write_text("\n".join(notes) + "\n")
    print("\n".join(notes))


def bench_size(size, args, rep, notes) -> None:
    import gpu_systems as gs

    from qrank.engine.attention import TileShape, TritonAttention

    model, cfg = gs.build_model("reranker", size, "cuda")
    tok = gs.tokenizer_for("reranker")
    sysm = gs.RerankSystems(model, tok)
    name = f"Qwen3-Reranker-{size.upper()}"
    query = gs.queries_for(tok, 1, seed=1)[0]
    pairs = [(query, d) for d in gs.documents(tok, 20, seed=30, lo=2000, hi=4000)]
    qr = gb.qrank_reranker(model, tok)
    seqs = qr.encode(pairs)
    work, rows = gb.min_work(qr.engine, seqs)
    floor = gs.floor_seconds(cfg, work, rows)
    fed = sysm.fed_tokens(pairs)
    systems = {"official[batch 8]": lambda: sysm.official(pairs),
               "official[one batch]": lambda: sysm.official(pairs, batch_size=len(pairs)),
               "qrank": lambda: qr.score_pairs(pairs)}
    ref = sysm.official(pairs)
    diff = max(abs(a - b) for a, b in zip(qr.score_pairs(pairs), ref))
    notes.append(f"- {name}: {fed} fed tokens, {work} computed; floor {floor * 1e3:.1f} ms; max |qrank - official| "
                 f"{diff:.4f}; engine {qr.engine.describe()}")
    variants = args.variants.split(",")
    keep = [qr]
    if "tiles" in variants:
        for tile in TILES:
            # the kernel reads its tile shape from the class when a pass runs (or is captured): set it around
            # every call of this variant, so the variants never see each other's shape
            run = gb.with_kernel(long=TileShape(*tile))
            try:
                v = run(lambda: gb.qrank_reranker(model, tok))
                run(lambda v=v: v.score_pairs(pairs[:2]))
            except Exception as exc:  # a tile shape Triton cannot fit: say so, go on
                notes.append(f"- {name} tiles {tile}: failed {type(exc).__name__}: {str(exc)[:160]}")
                continue
            keep.append(v)
            label = f"qrank[tiles {'x'.join(map(str, tile))}]"
            systems[label] = lambda v=v, run=run: run(lambda: v.score_pairs(pairs))
    if "heavy" in variants:  # the Triton kernel's tiles heaviest first (TritonAttention.heavy_first)
        run = gb.with_kernel(heavy_first=not TritonAttention.heavy_first)
        v = run(lambda: gb.qrank_reranker(model, tok))
        run(lambda v=v: v.score_pairs(pairs[:2]))
        keep.append(v)
        label = "qrank[heavy first]" if not TritonAttention.heavy_first else "qrank[packed order]"
        systems[label] = lambda v=v, run=run: run(lambda: v.score_pairs(pairs))
    for kind in ("varlen", "sdpa-cudnn"):
        if kind.removeprefix("sdpa-") in variants:
            # through the engine's long-row switch, the path that would ship: every pass here has long rows
            v = gb.qrank_reranker(model, tok, long_row_attention=kind)
            assert v.engine.config.long_row_attention == kind, v.engine.config.fallbacks
            keep.append(v)
            systems[f"qrank[long rows {kind}]"] = lambda v=v: v.score_pairs(pairs)
    reps = args.repeats if size == "0.6b" else max(3, args.repeats // 2)
    for system, (s, mem, ts) in gb.timed_rounds(systems, reps).items():
        rep.add(name, system, "rerank-1x20-long", s, len(pairs), fed, floor, mem, times=ts)
        print(f"{name} {system}: {s * 1e3:.1f} ms (floor fraction {floor / s:.3f}) runs "
              f"{[round(t * 1e3, 1) for t in ts]}", flush=True)
    gb.profile(f"{name} long", qr, pairs, notes)


if __name__ == "__main__":
    main()
