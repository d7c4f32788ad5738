"""FP8 vs bfloat16 on the fast engine, Qwen3 reranker 8B/4B/0.6B and embedder 8B shapes (random weights).

Run on the device (bench/device_run.sh carries the environment; see docs/quantization.md):
    PYTHONPATH=src:bench python bench/fp8_bench.py --sizes 8b,4b,0.6b --embed-sizes 8b --out $OUT/fp8
Output: gpu_bench.md + gpu_results.json in --out (the layout ``gpu_bench.py merge --from`` reads).

Per model, one bf16 model is built on the GPU and a deep copy of it is quantized (qrank.engine.fp8), so
the systems are timed in interleaved rounds in one process (a drift of the machine hits all alike):
``official[batch 8]`` and ``official[one batch]`` (the model card's recipe as written, batches of 8, and every
pair in one batch: the speed-ups are against the faster of the two), ``qrank`` (bf16), ``qrank-fp8`` and, with
``--fast-accum``, ``qrank-fp8[fast_accum]`` (Hopper's FP8 accumulation without float32 promotion: opt-in, it
is less exact over long K), with ``--fp8-attention`` ``qrank-fp8[fp8 attention q k only]`` (``q k^T`` in FP8 as
well; with ``--fast-accum`` also with fast accumulation; ``--fp8-attention all``: also both products in FP8).
Workloads: ``rerank-1x100`` (one query, 100 documents of 50-450 tokens), ``rerank-1x20-long`` (20 documents of
2,000-4,000 tokens), ``embed-500`` (500 passages of 50-450 tokens). Peak memory is the process's peak less the
resident weights of the other copy.
fp8 rows' floor: the projections at 1,580 TFLOP/s (H200 dense FP8) plus attention at 800 (it stays bf16);
bf16 rows keep gpu_bench's floor (everything at 800). The FP8 gate's numbers on the probe set go with the
fp8 rows (on random weights: their scores sit near 0.5 and many probe documents are near-tied, so tau is
lower than a trained model's; real checkpoints have outlier channels random weights lack, which is what
the gate at load is for).
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_bench as gb  # noqa: E402

log = logging.getLogger("fp8_bench")
FP8_TFLOPS = 1580.0  # H200/H100 SXM dense FP8 rate the fp8 floor assumes


def fp8_floor_seconds(cfg, computed_tokens: int, rows) -> float:
    import gpu_systems as gs

    return (2 * gs.non_embedding_params(cfg) * computed_tokens / (FP8_TFLOPS * 1e12)
            + gs.attention_flops(cfg, rows) / (gs.PEAK_TFLOPS * 1e12))


def resident_gib(model) -> float:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())) / 2**30


def fp8_copy(model):
    """A deep copy of ``model`` whose body's projections are FP8 (the original stays bf16)."""
    from qrank.engine.fp8 import quantize_body

    q = copy.deepcopy(model)
    quantize_body(getattr(q, "base_model", q))
    gc.collect()
    return q


def gate(ref_backend, fp8_backend) -> dict:
    from qrank.models import quantization as qz

    probes = qz.load_probes()
    return qz.compare(qz.probe_scores(ref_backend, probes), qz.probe_scores(fp8_backend, probes)).to_dict()


def pair(kind: str, size: str, args, make):
    """A random bf16 model of a real shape, its FP8 copy, a qrank backend over each, and the gate's numbers."""
    import gpu_systems as gs

    model, cfg = gs.build_model(kind, size, args.device, tiny=args.smoke)
    tok = gs.tokenizer_for(kind)
    qmodel = fp8_copy(model)
    ref, fp8 = make(model, tok), make(qmodel, tok)
    return model, cfg, tok, qmodel, ref, fp8, resident_gib(model), resident_gib(qmodel), gate(ref, fp8)


def bench_reranker(size: str, rep: gb.Report, args, notes: list[str]) -> None:
    import gpu_systems as gs
    import numpy as np

    name = f"Qwen3-Reranker-{size.upper()}"
    model, cfg, tok, qmodel, qr, q8, bf_gib, fp_gib, agreement = pair("reranker", size, args, gb.qrank_reranker)
    notes.append(f"- {name}: weights resident {bf_gib:.2f} GiB bf16 vs {fp_gib:.2f} GiB fp8 (embeddings and LM head "
                 f"stay bf16); FP8 gate on the probe set (random weights): {agreement}")
    systems = {"qrank": lambda w: qr.score_pairs(w), "qrank-fp8": lambda w: q8.score_pairs(w)}
    profiled = {"bf16": qr, "fp8": q8}  # what --profile-sizes profiles, in this order
    if args.fast_accum:  # the same FP8 tensors; the engine's weights carry the flag (read when it is built)
        from qrank.engine.fp8 import set_fast_accumulation

        set_fast_accumulation(qmodel, True)
        qfast = gb.qrank_reranker(qmodel, tok)
        set_fast_accumulation(qmodel, False)
        systems["qrank-fp8[fast_accum]"] = lambda w: qfast.score_pairs(w)
        profiled["fp8 fast_accum"] = qfast
        notes.append(f"- {name} fast_accum: the gate vs bf16 {gate(qr, qfast)} (default accumulation: {agreement})")
    if args.fp8_attention:  # the same FP8 tensors; the body carries the mark (read when the engine is built)
        from qrank.engine.fp8 import set_fast_accumulation
        from qrank.engine.fp8_attention import set_fp8_attention

        body = getattr(qmodel, "base_model", qmodel)
        # both products in FP8 ran slower than bf16 attention on an H100 (bench/logs/device_2026-12-07h_h100)
        variants = [("fp8 attention", False, "all")] if args.fp8_attention == "all" else []
        variants += [("fp8 attention q k only", False, "qk"), ("fast_accum+fp8 attention q k only", True, "qk")]
        for label, fast, form in variants:
            if fast and not args.fast_accum:
                continue
            set_fp8_attention(body, form)
            set_fast_accumulation(qmodel, fast)
            variant = gb.qrank_reranker(qmodel, tok)
            set_fp8_attention(body, "")
            set_fast_accumulation(qmodel, False)
            assert variant.engine.stack.fp8_attention == form, variant.engine.config.fallbacks
            systems[f"qrank-fp8[{label}]"] = lambda w, b=variant: b.score_pairs(w)
            profiled[f"fp8 {label}"] = variant
            notes.append(f"- {name} {label}: the gate vs bf16 {gate(qr, variant)} (default: {agreement})")
    if args.kernels_ab:  # the same FP8 tensors, inputs quantized by the reference ops (compiled) instead
        from qrank.engine.qwen3_forward import Qwen3Stack

        Qwen3Stack.fp8_kernels = False
        try:
            qref = gb.qrank_reranker(qmodel, tok)
        finally:
            Qwen3Stack.fp8_kernels = True
        systems["qrank-fp8[reference quant]"] = lambda w: qref.score_pairs(w)
    if args.graphs_ab:  # 'auto' replays FP8 passes as CUDA graphs (engine.config.graphs_by_default): time without
        qlaunched = gb.qrank_reranker(qmodel, tok, cuda_graphs="off")
        systems["qrank-fp8[no graphs]"] = lambda w: qlaunched.score_pairs(w)
    sysm = gs.RerankSystems(model, tok)
    query = gs.queries_for(tok, 1, seed=1)[0]
    workloads = {
        "rerank-1x100": [(query, d) for d in gs.documents(tok, 100, seed=10)],
        "rerank-1x20-long": [(query, d) for d in gs.documents(tok, 20, seed=11, lo=2000, hi=4000)],
    }
    for workload in args.workloads.split(","):
        pairs = workloads[workload]
        seqs = qr.encode(pairs)
        work, rows = gb.min_work(qr.engine, seqs)
        fed = sysm.fed_tokens(pairs)
        fns = {k: (lambda f=f: f(pairs)) for k, f in systems.items()}
        if not args.no_official:  # the recipe as written (batches of 8) and all pairs at once: the faster counts
            fns = {"official[batch 8]": lambda: sysm.official(pairs),
                   "official[one batch]": lambda: sysm.official(pairs, batch_size=len(pairs)), **fns}
        ref = np.asarray(qr.score_pairs(pairs))
        for system, f in systems.items():
            if system.startswith("qrank-fp8") and "graphs" not in system and "reference" not in system:
                got = np.asarray(f(pairs))
                same = int(np.argmax(ref) == np.argmax(got))
                notes.append(f"- {name} {workload} {system}: {fed} tokens fed ({work} computed); max |fp8 - bf16| "
                             f"score {np.max(np.abs(ref - got)):.4f}, top-1 same: {same}")
        reps = args.repeats if workload == "rerank-1x100" else max(2, args.repeats - 2)
        timed = gb.timed_rounds(fns, reps)
        # printed as it comes: a step's time limit may cut the run before the tables are written
        print(f"{name} {workload}: " + ", ".join(f"{k} {v[0] * 1e3:.1f} ms" for k, v in timed.items()), flush=True)
        _add_rows(rep, name, workload, timed, len(pairs), fed, cfg, work, rows, bf_gib, fp_gib, agreement)
        if size in args.profile_sizes.split(",") and not args.smoke:  # where FP8's time goes (issue 18)
            for label, reranker in profiled.items():  # FP8 attention's variants too (the 4B 1 x 100 puzzle)
                gb.profile(f"{name} {workload} {label}", reranker, pairs, notes)


def bench_embedder(size: str, rep: gb.Report, args, notes: list[str]) -> None:
    import gpu_systems as gs
    import numpy as np

    name = f"Qwen3-Embedding-{size.upper()}"
    model, cfg, tok, qmodel, qe, q8, bf_gib, fp_gib, agreement = pair("embedding", size, args, gb.qrank_embedder)
    texts = gs.documents(tok, args.n_texts, seed=99)
    seqs = qe.encode(texts)
    work, rows = gb.min_work(qe.engine, seqs)
    fed = gs.EmbedSystems(model, tok).fed_tokens(texts)
    a, b = qe.embed_batch(texts[:64]), q8.embed_batch(texts[:64])
    notes.append(f"- {name}: weights resident {bf_gib:.2f} GiB bf16 vs {fp_gib:.2f} GiB fp8; min cosine(fp8, bf16) "
                 f"over 64 texts {float(np.min(np.sum(a * b, axis=1))):.5f}; FP8 gate (random weights): {agreement}")
    fns = {"qrank": lambda: qe.embed_batch(texts), "qrank-fp8": lambda: q8.embed_batch(texts)}
    _add_rows(rep, name, f"embed-{len(texts)}", gb.timed_rounds(fns, max(2, args.repeats - 2)), len(texts), fed, cfg,
              work, rows, bf_gib, fp_gib, agreement)


def _add_rows(rep, name, workload, timed, n, fed, cfg, work, rows, bf_gib, fp_gib, agreement) -> None:
    import gpu_systems as gs

    for system, (s, peak, ts) in timed.items():
        fp8 = system.startswith("qrank-fp8")
        floor = fp8_floor_seconds(cfg, work, rows) if fp8 else gs.floor_seconds(cfg, work, rows)
        # the other copy's weights sit in memory unused by this system: leave them out of its peak
        alone = peak - (bf_gib if fp8 else fp_gib)
        extra = {"floor": "fp8 projections at 1580 TFLOP/s" if fp8 else "bf16 at 800 TFLOP/s"}
        if fp8:
            extra["gate"] = agreement
        rep.add(name, system, workload, s, n, fed, floor, max(alone, 0.0), times=ts,
                quantization="fp8" if fp8 else "none", **extra)


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="8b,4b,0.6b", help="reranker sizes")
    p.add_argument("--embed-sizes", default="8b", help="embedder sizes")
    p.add_argument("--out", default="bench/out/fp8")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n-texts", type=int, default=500)
    p.add_argument("--no-official", action="store_true", help="leave out the official recipe (saves ~30 s at 8B)")
    p.add_argument("--fast-accum", action="store_true",
                   help="also time qrank-fp8[fast_accum] (FP8 accumulation without float32 promotion; less exact)")
    p.add_argument("--workloads", default="rerank-1x100,rerank-1x20-long",
                   help="the rerankers' workloads, in the order they run")
    p.add_argument("--fp8-attention", nargs="?", const="qk", default="", choices=["qk", "all"],
                   help="also time FP8 attention: q k^T in FP8 ('qk', the default; with --fast-accum also combined "
                   "with fast accumulation), 'all' adds both products in FP8")
    p.add_argument("--graphs-ab", action="store_true",
                   help="also time qrank-fp8[no graphs]: the FP8 engine with cuda_graphs='off' (auto: on for FP8)")
    p.add_argument("--kernels-ab", action="store_true",
                   help="also time qrank-fp8[reference quant]: FP8 inputs quantized by the reference ops that "
                   "torch.compile fuses, instead of qrank's fused kernels (qrank.engine.fp8_kernels)")
    p.add_argument("--profile-sizes", default="8b", help="reranker sizes whose bf16 and FP8 passes get a kernel "
                   "profile by kind (products, attention, element-wise, gaps) on each workload; '' for none")
    p.add_argument("--smoke", action="store_true",
                   help="tiny models on the CPU (FP8 products emulated), seconds: checks the script, measures nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    import torch
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = False
    # no raise of dynamo's recompile limit: each kind of engine (shape, bf16/fp8) compiles its own code objects
    # (qrank.engine.qwen3_forward.layer_segments), so bf16 and fp8 of four models stay far under the default 8
    args.device = "cpu" if args.smoke else "cuda"
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke run)"
    mem = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0
    header = (f"Device: {dev} ({mem:.0f} GiB); torch {torch.__version__}, CUDA {torch.version.cuda}, transformers "
              f"{transformers.__version__}; random bf16 weights of the real shapes built on the GPU, and an FP8 copy "
              f"(e4m3 weights per output channel, activations per token; torch._scaled_mm). Random weights lack the "
              f"outlier channels of real checkpoints: speed here, quality at load (the gate).")
    log.info(header)
    rep, notes = gb.Report(dev), []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(s, bench_reranker) for s in args.sizes.split(",") if s] + [
        (s, bench_embedder) for s in args.embed_sizes.split(",") if s]
    from qrank.fileio import atomic_write_json, atomic_write_text

    text = ""
    for size, fn in jobs:
        try:
            fn(size, rep, args, notes)
        except Exception as exc:  # keep the other sizes' figures; the failure is reported
            log.exception("%s %s failed", fn.__name__, size)
            notes.append(f"- {fn.__name__} {size}: FAILED ({type(exc).__name__}: {str(exc)[:300]})")
        _free()  # the models went with the function's frame
        text = gb.render(header, rep.rows, notes).replace("bench/gpu_bench.py", "bench/fp8_bench.py")
        atomic_write_json(out / "gpu_results.json", rep.rows, indent=1)
        atomic_write_text(out / "gpu_bench.md", text)
    print(speedups(rep.rows))
    print(text)


def speedups(rows: list[dict]) -> str:
    """One line per (model, workload): fp8 against qrank bf16 and the official recipe."""
    lines = ["FP8 speed-ups (median time ratios):"]
    for key in dict.fromkeys((r["model"], r["workload"]) for r in rows):
        by = {r["system"]: r for r in rows if (r["model"], r["workload"]) == key}
        base = by.get("qrank")
        for system, r in by.items():
            if not system.startswith("qrank-fp8") or base is None:
                continue
            offs = {s: o for s, o in by.items() if s.startswith("official")}
            best = min(offs, key=lambda s: offs[s]["seconds"]) if offs else None
            vs_off = "".join(f", {o['seconds'] / r['seconds']:.2f}x {s}" for s, o in offs.items())
            vs_off += f" (the faster: {best})" if best else ""
            lines.append(f"  {key[0]} {key[1]} {system}: {base['seconds'] / r['seconds']:.2f}x qrank bf16{vs_off}; "
                         f"{r['tokens_per_s']:,} tokens/s, fp8 floor fraction {r['floor_fraction']}, "
                         f"peak {r['peak_mem_gib']} GiB (bf16 {base['peak_mem_gib']})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
