"""One layer's attention on the GPU: FlashAttention-2 varlen (keys gathered), length-bucketed SDPA (flash and
cuDNN) and qrank's Triton kernel.

Sweeps the Triton kernel's tile shapes and tile orders (``--orders``: as packed, or heaviest tiles first) on
the issue's workload (one query: an ~80-token prefix, 100 documents of 50-450 tokens + a 10-token suffix,
packed as the engine packs it; ``--long``: 20 documents of 2,000-4,000 tokens) for the Qwen3 0.6B and
4B/8B head shapes, and prints a table (also written to ``--out``/attention_bench.md). ``--fp8``: the kernel's
FP8 form (:func:`qrank.engine.triton_attention.prefix_attention_fp8`) against its bf16 form at the shipped tile
shape: time, the compiled quantization of q/k/v, and the error of each against FlashAttention-2 on the same
bf16 inputs (``attention_bench_fp8[_long].md``).

    python bench/attention_bench.py --out /tmp/out
    python bench/attention_bench.py --long --fp8 --out /tmp/out
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_bench as gb  # noqa: E402


def workload_layout(seed: int = 0, prefix: int = 80, docs: int = 100, lo: int = 50, hi: int = 450):
    from qrank.engine.packing import build_layout

    rng = np.random.default_rng(seed)
    head = rng.integers(0, 1000, prefix).tolist()
    seqs = [head + rng.integers(0, 1000, int(n) + 10).tolist() for n in rng.integers(lo, hi + 1, docs)]
    return build_layout(seqs, [(prefix, list(range(docs)))])


def attention_flops(layout, heads: int, dim: int) -> float:
    """Multiply-adds x 2 of QK^T and PV over the visible keys (prefix all, own causal)."""
    q, p = layout.q_len.astype(np.float64), layout.p_len.astype(np.float64)
    visible = (q * p + q * (q + 1) / 2).sum()
    return 4.0 * visible * heads * dim


def time_ms(fn, iters: int = 30) -> float:
    import torch

    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def main(argv=None) -> None:
    import torch

    from qrank.engine.attention import BucketedAttention, TileShape, TritonAttention, VarlenAttention

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out")
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    ap.add_argument("--block-m", type=ints, default=[32, 64], help="query rows per tile (tokens x GQA heads)")
    ap.add_argument("--block-n", type=ints, default=[16, 32, 64])
    ap.add_argument("--warps", type=ints, default=[2, 4])
    ap.add_argument("--stages", type=ints, default=[2, 3])
    ap.add_argument("--orders", default="packed,heavy", help="tile orders: packed (as shipped before), heavy (first)")
    ap.add_argument("--long", action="store_true", help="20 documents of 2,000-4,000 tokens (issue 17's long rows)")
    ap.add_argument("--fp8", action="store_true", help="the kernel's FP8 form vs its bf16 form (see the docstring)")
    args = ap.parse_args(argv)
    lay = workload_layout(docs=20, lo=2000, hi=4000) if args.long else workload_layout()
    if args.fp8:
        return fp8_table(lay, args)
    lines = [
        f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; one layer, {lay.num_tokens}-token pass "
        f"(1 query prefix + {len(lay.members)} documents), bf16, head size 128, median of 30 (CUDA events).",
        "",
        "| heads/kv | kernel | block_m | block_n | warps | stages | ms | TFLOP/s | max diff vs varlen |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    best = {}
    for heads, kv in ((16, 8), (32, 8)):
        T, D = lay.num_tokens, 128
        q = torch.randn(T, heads, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(T, kv, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(T, kv, D, device="cuda", dtype=torch.bfloat16)
        flops = attention_flops(lay, heads, D)
        var = VarlenAttention.for_layout(lay, "cuda", D**-0.5)
        want = var(q, k, v).float()
        ms = time_ms(lambda: var(q, k, v))
        lines.append(f"| {heads}/{kv} | FA2 varlen (+ key gathers) | | | | | {ms:.3f} | {flops / ms / 1e9:.0f} | 0 |")
        print(lines[-1], flush=True)
        for label, cudnn in (("bucketed SDPA (flash, padded)", False),
                             ("bucketed SDPA cuDNN (padded, k/v repeated)", True)):
            try:
                att = BucketedAttention(lay, "cuda", D**-0.5, max_tokens=16384, cudnn=cudnn)
                diff = (att(q, k, v).float() - want).abs().max().item()
                ms = time_ms(lambda: att(q, k, v))
                lines.append(f"| {heads}/{kv} | {label} | | | | | {ms:.3f} | {flops / ms / 1e9:.0f} | {diff:.1e} |")
            except Exception as exc:  # a backend this torch/GPU lacks: record and go on
                lines.append(f"| {heads}/{kv} | {label} | | | | | failed: {type(exc).__name__} | | |")
            print(lines[-1], flush=True)
        G = heads // kv
        for order, bm, bn, warps, stages in itertools.product(args.orders.split(","), args.block_m, args.block_n,
                                                              args.warps, args.stages):
            if bm // G < 16:
                continue  # the engine raises a tile to 16 tokens: the same as a larger block_m
            try:
                # the tile order is read when the tile table is built
                att = gb.with_kernel(heavy_first=order == "heavy")(lambda: TritonAttention.for_layout(
                    lay, "cuda", D**-0.5, G, shape=TileShape(bm, bn, warps, stages)))
                diff = (att(q, k, v).float() - want).abs().max().item()
                ms = time_ms(lambda: att(q, k, v))
            except Exception as exc:  # a shape Triton cannot fit (shared memory, registers): record and go on
                lines.append(f"| {heads}/{kv} | triton ({order}) | {bm} | {bn} | {warps} | {stages} "
                             f"| failed: {type(exc).__name__} | | |")
                print(lines[-1], str(exc)[:200], flush=True)
                continue
            lines.append(f"| {heads}/{kv} | triton ({order}) | {bm} | {bn} | {warps} | {stages} | {ms:.3f} "
                         f"| {flops / ms / 1e9:.0f} | {diff:.1e} |")
            print(lines[-1], flush=True)
            if diff < 2e-2 and ms < best.get((heads, kv), (1e9,))[0]:
                best[(heads, kv)] = (ms, bm, bn, warps, stages, order)
    lines += ["", "Best: " + "; ".join(f"{h}/{kv}: {b[0]:.3f} ms at block_m {b[1]}, block_n {b[2]}, {b[3]} warps, "
                                        f"{b[4]} stages, {b[5]} order" for (h, kv), b in best.items())]
    print(lines[-1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from qrank.fileio import atomic_write_text

    atomic_write_text(out / ("attention_bench_long.md" if args.long else "attention_bench.md"), "\n".join(lines) + "\n")


def fp8_table(lay, args) -> None:
    """The FP8 kernel over a sweep of tile shapes vs the bf16 kernel as shipped, on one layer of ``lay``."""
    import torch

    from qrank.engine.attention import TileShape, TritonAttention, VarlenAttention
    from qrank.engine.fp8_attention import quantize_attention_inputs
    from qrank.engine.triton_attention import prefix_attention_fp8, tile_table
    from qrank.fileio import atomic_write_text

    rel = lambda got, want: ((got.float() - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt()).item()  # noqa: E731
    quantize = torch.compile(quantize_attention_inputs, dynamic=True)
    lines = [
        f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; one layer, {lay.num_tokens}-token pass "
        f"(1 query prefix + {len(lay.members)} documents), head size 128, median of 30 (CUDA events); inputs "
        "N(0,1) bf16 (q/k scaled by measured maxima); error: RMS of the difference / RMS of FlashAttention-2 "
        "varlen's output on the same bf16 inputs.",
        "",
        "| heads/kv | kernel | tile | ms | TFLOP/s | rel. RMS error | speed-up |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for heads, kv in ((16, 8), (32, 8)):
        T, D, G = lay.num_tokens, 128, heads // kv
        q = torch.randn(T, heads, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(T, kv, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(T, kv, D, device="cuda", dtype=torch.bfloat16)
        flops = attention_flops(lay, heads, D)
        want = VarlenAttention.for_layout(lay, "cuda", D**-0.5)(q, k, v).float()
        att = TritonAttention.for_layout(lay, "cuda", D**-0.5, G)
        base = time_ms(lambda: att(q, k, v))
        lines.append(f"| {heads}/{kv} | bf16 (shipped) | {att.shape} | {base:.3f} | {flops / base / 1e9:.0f} "
                     f"| {rel(att(q, k, v), want):.2e} | 1.00 |")
        print(lines[-1], flush=True)
        q8, k8, fv = quantize(q, k, v)
        ms = time_ms(lambda: quantize(q, k, v))
        lines.append(f"| {heads}/{kv} | quantize q, k, v (compiled) | | {ms:.3f} | | | |")
        print(lines[-1], flush=True)
        qk8 = quantize_attention_inputs(q, k, v, values=False)
        for (label, (qa, ka, va)), bm, bn, warps, stages in itertools.product(
                (("fp8", (q8, k8, fv)), ("fp8 q k only", qk8)), args.block_m, args.block_n, args.warps, args.stages):
            shape = TileShape(bm, bn, warps, stages)
            bt = shape.block_tokens(G)
            tiles = torch.from_numpy(tile_table(lay.q_start, lay.q_len, lay.p_start, lay.p_len, bt)).cuda()
            run = lambda: prefix_attention_fp8(qa, ka, va.vt, va.scales, tiles, D**-0.5,  # noqa: E731
                                               out_dtype=torch.bfloat16, block_t=bt, block_n=bn,
                                               num_warps=warps, num_stages=stages)
            try:
                err = rel(run(), want)
                ms = time_ms(run)
            except Exception as exc:  # a shape Triton cannot fit (shared memory, registers): record and go on
                lines.append(f"| {heads}/{kv} | {label} | {shape} | failed: {type(exc).__name__} | | | |")
                print(lines[-1], str(exc)[:300], flush=True)
                continue
            lines.append(f"| {heads}/{kv} | {label} | {shape} | {ms:.3f} | {flops / ms / 1e9:.0f} | {err:.2e} "
                         f"| {base / ms:.2f} |")
            print(lines[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / ("attention_bench_fp8_long.md" if args.long else "attention_bench_fp8.md"),
                      "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
