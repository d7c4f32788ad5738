"""One matrix product of each Qwen3-8B projection shape: bf16 vs FP8 (row-wise, tensor-wise, fast accumulation),
and the per-token activation quantization on its own (issue 18: where does the FP8 path lose its 2x?).

    python bench/fp8_gemm_bench.py --out DIR      # CUDA with FP8 units; about 30 s
    python bench/fp8_gemm_bench.py --smoke        # CPU: checks the script runs (tiny shapes, emulated, untimed)
    python bench/fp8_gemm_bench.py --autotune --tokens 16384 --out DIR   # the engine's separate 8B products:
        # torch._scaled_mm row-wise as the engine calls it vs the same call compiled with max-autotune (inductor's
        # Triton FP8 templates, with and without persistent TMA), precise accumulation; ~55 s of autotuning a shape

Writes DIR/fp8_gemm.md: per shape and token count, milliseconds and TFLOP/s of each kernel, the quantization's
milliseconds (eager and compiled) and what a layer would gain at that ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# the products the engine runs (separate q/k/v and gate/up: fused ones measured 5% slower, device_2026-12-06c_h100)
SHAPES_8B_ENGINE = [("q", 4096, 4096), ("k|v", 1024, 4096), ("o", 4096, 4096), ("gate|up", 12288, 4096),
                    ("down", 4096, 12288)]
# (name, N, K) of Qwen3-8B: hidden 4096, 32 q heads and 8 kv heads of 128, intermediate 12288
SHAPES_8B = [("qkv", 4096 + 2 * 1024, 4096), ("o", 4096, 4096), ("gate+up", 2 * 12288, 4096), ("down", 4096, 12288)]
SHAPES_06B = [("qkv", 2048 + 2 * 1024, 1024), ("o", 1024, 2048), ("gate+up", 2 * 3072, 1024), ("down", 1024, 3072)]


def cuda_ms(fn, iters: int = 20) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def operands(m: int, n: int, k: int):
    """bf16 activations (m, k) and weight (n, k), the weight quantized per channel, the activations per row."""
    import torch

    from qrank.engine.fp8 import quantize_rows, quantize_weight

    torch.manual_seed(0)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    wb = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
    return x, wb, quantize_weight(wb), *quantize_rows(x)


def scaled_mm(a, b, scale_a, scale_b, fast: bool = False):
    """The FP8 product as the engine calls it (:func:`qrank.engine.fp8.fp8_linear`), bf16 out."""
    import torch

    return torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16, use_fast_accum=fast)


def main() -> None:
    import torch

    from qrank.engine.fp8 import E4M3_MAX, quantize_rows, quantize_weight

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/out/fp8_gemm")
    p.add_argument("--tokens", default="4096,16384,32768")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--autotune", action="store_true", help="row-wise eager vs compiled with max-autotune")
    args = p.parse_args()
    if args.smoke:
        from qrank.engine.fp8 import fp8_linear

        x = torch.randn(16, 64)
        w = quantize_weight(torch.randn(32, 64))
        print("smoke: emulated product", tuple(fp8_linear(x, w).shape))
        return
    if args.autotune:
        return autotune(args)
    dev = torch.device("cuda")
    lines = [f"# FP8 GEMM microbench: {torch.cuda.get_device_name()}, torch {torch.__version__}", "",
             "| model | shape (N x K) | tokens | bf16 ms (TFLOP/s) | fp8 row ms (TFLOP/s) | fp8 row fast | "
             "fp8 tensor | fp8 tensor fast | quantize eager / compiled ms | row+quant vs bf16 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    # dynamic=True: one compiled kernel serves every shape (dynamic=False hit the recompile limit on 0.6B).
    quant_c = torch.compile(quantize_rows, dynamic=True)
    for model, shapes in (("8B", SHAPES_8B), ("0.6B", SHAPES_06B)):
        for m in [int(t) for t in args.tokens.split(",")]:
            for name, n, k in shapes:
                x, wb, q, x8, sx = operands(m, n, k)
                b, sb = q.data.t(), q.scale[None, :]
                ones_a = torch.ones((), device=dev)
                x8t = (x.float() / (x.float().abs().amax() / E4M3_MAX)).to(torch.float8_e4m3fn)
                flops = 2 * m * n * k

                def tf(ms: float) -> str:
                    return f"{ms:.3f} ({flops / ms / 1e9:.0f})"

                res = {
                    "bf16": cuda_ms(lambda: x @ wb.t()),
                    "row": cuda_ms(lambda: scaled_mm(x8, b, sx, sb)),
                    "row_fast": cuda_ms(lambda: scaled_mm(x8, b, sx, sb, fast=True)),
                    "tensor": cuda_ms(lambda: scaled_mm(x8t, b, ones_a, ones_a)),
                    "tensor_fast": cuda_ms(lambda: scaled_mm(x8t, b, ones_a, ones_a, fast=True)),
                    "quant": cuda_ms(lambda: quantize_rows(x)),
                    "quant_c": cuda_ms(lambda: quant_c(x)),
                }
                ratio = res["bf16"] / (res["row"] + res["quant_c"])
                lines.append(f"| {model} | {name} {n} x {k} | {m} | {tf(res['bf16'])} | {tf(res['row'])} | "
                             f"{tf(res['row_fast'])} | {tf(res['tensor'])} | {tf(res['tensor_fast'])} | "
                             f"{res['quant']:.3f} / {res['quant_c']:.3f} | {ratio:.2f}x |")
                print(lines[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fp8_gemm.md").write_text("\n".join(lines) + "\n")


def autotune(args) -> None:
    """Whether inductor's autotuned FP8 kernels beat the CUTLASS row-wise kernel ``torch._scaled_mm`` picks."""
    import torch
    import torch._inductor.config as ind

    lines = [f"# FP8 GEMM autotune: {torch.cuda.get_device_name()}, torch {torch.__version__}", "",
             "TFLOP/s; eager = torch._scaled_mm row-wise as the engine calls it; max-autotune = the same call under "
             "torch.compile(mode='max-autotune-no-cudagraphs'), best of ATen and inductor's Triton templates; "
             "+TMA = persistent TMA templates allowed too.", "",
             "| shape (N x K) | tokens | bf16 | eager | eager fast | max-autotune | +TMA |",
             "|---|---|---|---|---|---|---|"]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for m in [int(t) for t in args.tokens.split(",")]:
        for name, n, k in SHAPES_8B_ENGINE:
            x, wb, q, x8, sx = operands(m, n, k)
            b, sb = q.data.t(), q.scale[None, :]
            flops = 2 * m * n * k
            cells = [cuda_ms(lambda: x @ wb.t())]
            ref = scaled_mm(x8, b, sx, sb).float()
            for fast in (False, True):
                cells.append(cuda_ms(lambda: scaled_mm(x8, b, sx, sb, fast)))
            for tma in (False, True):  # precise accumulation, the default; fast accumulation's gap is eager's
                ind.triton.enable_persistent_tma_matmul = tma
                torch._dynamo.reset()
                fn = torch.compile(scaled_mm, dynamic=False, mode="max-autotune-no-cudagraphs")
                try:
                    got = fn(x8, b, sx, sb).float()
                    err = (got - ref).abs().max().item() / ref.abs().max().item()
                    cells.append(cuda_ms(lambda: fn(x8, b, sx, sb)))
                    print(f"{name} {m} tma={tma}: max rel diff vs eager {err:.2e}", flush=True)
                except Exception as e:  # an autotune failure is a result here, not a crash of the whole table
                    print(f"{name} {m} tma={tma}: {type(e).__name__}: {e}"[:300], flush=True)
                    cells.append(float("nan"))
            lines.append(f"| {name} {n} x {k} | {m} | " + " | ".join(f"{flops / c / 1e9:.0f}" for c in cells) + " |")
            print(lines[-1], flush=True)
            # after every row: a step's time limit cuts the autotuning short (device_2026-12-07g_h100)
            (out / "fp8_autotune.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
