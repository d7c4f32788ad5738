"""GPU benchmark: official recipe vs transformers best effort vs qrank's fast engine, Qwen3 0.6B/4B/8B shapes.

Run on the device (random bf16 weights of the real shapes, built on the GPU):
    PYTHONPATH=src:bench python bench/gpu_bench.py run --sizes 0.6b,4b,8b --out $OUT
then here, to fold the figures into bench/logs/history-gpu-engine.md (<!-- gpu-bench -->) and bench/results.json:
    .venv/bin/python bench/gpu_bench.py merge --from bench/logs/gpu_run3 bench/logs/gpu_run1 ...  (newest first)
bench/device_run.sh is the one command sent to the device (tests + this benchmark).

Workloads: ``rerank-1x100`` one query (~80 prefix tokens) x 100 documents of 50-450 tokens;
``batch-rerank-32x100`` 32 such queries through ``batch_rerank``; ``embed-1000`` 1,000 passages of
50-450 tokens. Tokens/s count the tokens the official recipe feeds (prefix repeated per pair); the
floor counts what must be computed (each query's prefix once) at 800 TFLOP/s plus attention FLOPs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- gpu-bench -->", "<!-- /gpu-bench -->"
log = logging.getLogger("gpu_bench")


def timed(fn, repeats: int, warmup: int = 1, warm=None):
    """Median wall seconds over ``repeats`` (after ``warmup`` runs, or one call of ``warm``), peak GPU GiB,
    and every timed run's seconds (a median hides a slow first run; the report keeps min and max)."""
    if warm is not None:
        warm()
    return timed_rounds({"fn": fn}, repeats, warmup=warmup)["fn"]


def timed_rounds(fns: dict, repeats: int, warmup: int = 1):
    """Several systems timed interleaved: each is warmed ``warmup`` times, then every round times each
    system once (A B C A B C ...), so a drift in the machine's speed (seen on freshly started devices: a
    whole phase of a run 1.5-2x slower) hits every system alike. {name: (median, peak GiB, runs)}."""
    import torch

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times = {k: [] for k in fns}
    peak = dict.fromkeys(fns, 0.0)
    for _ in range(repeats):
        for k, fn in fns.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
            if cuda:
                peak[k] = max(peak[k], torch.cuda.max_memory_allocated() / 2**30)
    return {k: (statistics.median(v), peak[k], v) for k, v in times.items()}


class Report:
    def __init__(self, device: str) -> None:
        self.device, self.rows, self.lines = device, [], []
        self.date = dt.date.today().isoformat()

    def add(self, model, system, workload, seconds, pairs, fed_tokens, floor_s, mem_gb, times=(), **extra):
        extra.setdefault("quantization", "none")  # bench/fp8_bench.py adds 'fp8' rows
        row = dict(
            device=self.device, model=model, system=system, workload=workload, date=self.date,
            tokens_per_s=round(fed_tokens / seconds), ms_per_100_pairs=round(seconds / pairs * 100 * 1000, 2),
            pairs_per_s=round(pairs / seconds, 1), peak_mem_gib=round(mem_gb, 2),
            floor_fraction=round(floor_s / seconds, 3), seconds=round(seconds, 4),
            run_seconds=[round(t, 4) for t in times], **extra,
        )
        self.rows.append(row)
        log.info("%s", row)
        return row


def with_kernel(**attrs):
    """Run ``fn`` with ``TritonAttention``'s class attributes set to ``attrs`` (the tile shape, the tile order:
    read when a pass runs or is captured), restored afterwards, so variants never see each other's settings."""
    from qrank.engine.attention import TritonAttention

    def run(fn):
        shipped = {name: getattr(TritonAttention, name) for name in attrs}
        for name, value in attrs.items():
            setattr(TritonAttention, name, value)
        try:
            return fn()
        finally:
            for name, value in shipped.items():
                setattr(TritonAttention, name, value)

    return run


def qrank_reranker(model, tok, **engine):
    from qrank.models.qwen3_reranker import Qwen3Reranker
    from qrank.settings import EngineSettings
    from qrank.types import ModelInfo

    info = ModelInfo(id="random", kind="qwen3-reranker", role="reranker", max_length=8192,
                     dtype=str(model.dtype).replace("torch.", ""), device=str(model.device))
    return Qwen3Reranker(model, tok, info, EngineSettings(engine="fast", **engine))


def rerank_1x100(size: str = "0.6b"):
    """The R100 workload of the diagnostics (bench/r100_*.py): a random Qwen3 reranker of ``size`` on the GPU,
    one query with 100 documents; returns (model, tokenizer, pairs, qrank backend)."""
    import gpu_systems as gs

    model, _ = gs.build_model("reranker", size, "cuda")
    tok = gs.tokenizer_for("reranker")
    query = gs.queries_for(tok, 1, seed=1)[0]
    pairs = [(query, d) for d in gs.documents(tok, 100, seed=10)]
    return model, tok, pairs, qrank_reranker(model, tok)


def qrank_embedder(model, tok, **engine):
    from qrank.models.qwen3_embedder import Qwen3Embedder
    from qrank.settings import EngineSettings
    from qrank.types import ModelInfo

    info = ModelInfo(id="random", kind="qwen3-embedding", role="embedder", max_length=8192,
                     dtype=str(model.dtype).replace("torch.", ""), device=str(model.device),
                     dim=model.config.hidden_size)
    return Qwen3Embedder(model, tok, info, EngineSettings(engine="fast", **engine))


def min_work(engine, seqs):
    """Tokens that must be computed (each shared prefix once) and the attention rows, for the floor."""
    rows, tokens = [], 0
    for g in engine.groups(seqs):
        if g.prefix_len:
            rows.append((0, g.prefix_len))
            tokens += g.prefix_len
        for m in g.members:
            rows.append((g.prefix_len, len(seqs[m]) - g.prefix_len))
            tokens += len(seqs[m]) - g.prefix_len
    return tokens, rows


def bench_reranker(size, rep: Report, args, notes):
    import gpu_systems as gs

    model, cfg = gs.build_model("reranker", size, args.device, tiny=args.smoke)
    tok = gs.tokenizer_for("reranker")
    sysm = gs.RerankSystems(model, tok)
    name = f"Qwen3-Reranker-{size.upper()}"
    queries = gs.queries_for(tok, args.n_queries, seed=1)
    docs = [gs.documents(tok, args.n_docs, seed=10 + i) for i in range(args.n_queries)]
    one = [(queries[0], d) for d in docs[0]]
    qr = qrank_reranker(model, tok)
    seqs = qr.encode(one)
    work, rows = min_work(qr.engine, seqs)
    floor = gs.floor_seconds(cfg, work, rows)
    fed = sysm.fed_tokens(one)
    reps = args.repeats if size == "0.6b" else max(2, args.repeats // 2)
    ref = sysm.official(one)
    got = qr.score_pairs(one)
    notes.append(f"- {name}: rerank-1x100 feeds {fed} tokens ({work} must be computed); max |qrank - official| "
                 f"score = {max(abs(a - b) for a, b in zip(got, ref)):.4f} (bf16, random weights: scores ~0.5)")
    systems = {"official": lambda: sysm.official(one), "baseline": lambda: sysm.baseline(one),
               "qrank": lambda: qr.score_pairs(one)}
    for system, (s, mem, ts) in timed_rounds(systems, reps).items():
        rep.add(name, system, "rerank-1x100", s, len(one), fed, floor, mem, times=ts)
    if size in args.variant_sizes:
        variants(name, model, tok, one, fed, floor, rep, reps, notes)
    if size in args.profile_sizes:
        profile(name, qr, one, notes)
    if args.skip_batch:
        return
    # 32 queries: qrank does them all in one batch_rerank; the per-query recipes are timed on a subset
    pairs = [(q, d) for q, ds in zip(queries, docs) for d in ds]
    qseqs = qr.encode(pairs)
    work32, rows32 = min_work(qr.engine, qseqs)
    sub = [(q, d) for q, ds in zip(queries[: args.subset], docs[: args.subset]) for d in ds]
    sub_seqs = qr.encode(sub)
    sub_work, sub_rows = min_work(qr.engine, sub_seqs)
    for system, fn in (("official", lambda: sysm.official(sub)), ("baseline", lambda: sysm.baseline(sub))):
        s, mem, ts = timed(fn, 1, warmup=0)
        rep.add(name, system, "batch-rerank-32x100", s, len(sub), sysm.fed_tokens(sub),
                gs.floor_seconds(cfg, sub_work, sub_rows), mem,
                note=f"timed on {args.subset} of the 32 queries (per-query recipe)")
    from qrank.reranker import Reranker

    facade = Reranker(qr)
    big = size != "0.6b"  # one timed run of ~1M tokens is enough at 4B/8B; warm on a slice
    s, mem, ts = timed(lambda: facade.batch_rerank(queries, docs, top_n=10), 1 if big else 2, warmup=0 if big else 1,
                   warm=(lambda: facade.batch_rerank(queries[:2], docs[:2])) if big else None)
    rep.add(
        name,
        "qrank",
        "batch-rerank-32x100",
        s,
        len(pairs),
        sysm.fed_tokens(pairs),
        gs.floor_seconds(cfg, work32, rows32),
        mem,
        times=ts,
    )


def variants(name, model, tok, one, fed, floor, rep, reps, notes):
    """The choices the engine makes, measured: attention kernel, compile, prefix sharing, budget."""
    import torch

    from qrank.engine.attention import make_attention
    from qrank.engine.packing import build_layout, plan_passes

    combos = [
        dict(cuda_graphs="off"), dict(compile="off"), dict(compile="off", cuda_graphs="off"),
        dict(attention="varlen"), dict(attention="varlen", cuda_graphs="off"), dict(attention="sdpa"),
        dict(attention="sdpa-cudnn"), dict(prefix_sharing=False),
        dict(max_batch_tokens=8192), dict(max_batch_tokens=32768),
    ]
    for c in combos:
        try:
            qr = qrank_reranker(model, tok, **c)
            if qr.engine.config.fallbacks:  # the engine ran something else than the variant asks for: say so
                notes.append(f"- {name} variant {c}: fell back at load: {'; '.join(qr.engine.config.fallbacks)}")
            s, mem, ts = timed(lambda: qr.score_pairs(one), reps)
        except Exception as exc:  # a kernel this GPU/torch lacks: record it, keep going
            notes.append(f"- {name} variant {c}: failed ({type(exc).__name__}: {str(exc)[:160]})")
            continue
        label = ",".join(f"{k}={v}" for k, v in c.items())
        rep.add(name, f"qrank[{label}]", "rerank-1x100", s, len(one), fed, floor, mem, times=ts, variant=True)
    # tokenizing everything first instead of overlapping it with the GPU
    qr = qrank_reranker(model, tok)
    no_overlap = lambda: torch.sigmoid(qr.engine.last_hidden(qr.encode(one)) @ qr.head).numpy()  # noqa: E731
    s, mem, ts = timed(no_overlap, reps)
    rep.add(name, "qrank[tokenize all first]", "rerank-1x100", s, len(one), fed, floor, mem, times=ts, variant=True)
    # the defaults once more, last: shows how far the machine's speed drifted during the variants
    qr = qrank_reranker(model, tok)
    s, mem, ts = timed(lambda: qr.score_pairs(one), reps)
    rep.add(
        name, "qrank[defaults, timed again last]", "rerank-1x100", s, len(one), fed, floor, mem, times=ts, variant=True
    )
    # attention alone, on the first pass of the workload, 0.6B/8B head shapes
    seqs = qr.encode(one)
    lengths = [len(x) for x in seqs]
    plan = plan_passes(qr.engine.groups(seqs), lengths, 16384, 256)[0]
    lay = build_layout(seqs, plan)
    st = qr.engine.stack
    q = torch.randn(lay.num_tokens, st.heads, st.head_dim, device=st.device, dtype=st.dtype)
    k = torch.randn(lay.num_tokens, st.kv_heads, st.head_dim, device=st.device, dtype=st.dtype)
    v = torch.randn_like(k)
    outs = {}
    for kind in ("triton", "varlen", "sdpa", "sdpa-cudnn"):
        try:
            att = make_attention(kind, lay, st.device, st.scale, group=st.heads // st.kv_heads)
            outs[kind] = att(q, k, v)
            s, _, _ = timed(lambda: att(q, k, v), 20, warmup=3)
            notes.append(f"- {name} attention only ({kind}), one layer, {lay.num_tokens}-token pass: {s * 1e3:.3f} ms")
        except Exception as exc:
            notes.append(f"- {name} attention only ({kind}): failed ({type(exc).__name__}: {str(exc)[:160]})")
    if "varlen" in outs:
        for kind, o in outs.items():
            notes.append(f"  - max |{kind} - varlen| = {(o.float() - outs['varlen'].float()).abs().max().item():.4f}")


KERNEL_KINDS = ("gemm", "attention", "fused element-wise (triton)", "other")


def kernel_breakdown(fn) -> dict:
    """Run ``fn`` once under the profiler (after one warm call): wall seconds, GPU kernel microseconds by kind
    (:data:`KERNEL_KINDS`, from the kernel names), launches, and the kernels by time (the rest of wall time is
    launch gaps and synchronisation)."""
    import torch
    from torch.profiler import ProfilerActivity, profile as tprofile

    cuda = torch.cuda.is_available()  # on a CPU (a smoke run) every kind stays 0 and all time is "gaps"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn()
    sync()
    with tprofile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        t = time.perf_counter()
        fn()
        sync()
        wall = time.perf_counter() - t
    cats = dict.fromkeys(KERNEL_KINDS, 0.0)
    launches, kernels = 0, []
    for e in prof.key_averages():
        dev = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if not dev or e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        n = e.key.lower()
        launches += e.count
        kernels.append((dev, e.count, e.key[:90]))
        if any(s in n for s in ("flash", "fmha", "cudnn", "attention")):
            cats["attention"] += dev
        elif any(s in n for s in ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas")):
            cats["gemm"] += dev
        elif "triton" in n:
            cats["fused element-wise (triton)"] += dev
        else:
            cats["other"] += dev
    return {"wall": wall, "cats": cats, "launches": launches, "kernels": sorted(kernels, reverse=True)}


def breakdown_lines(name: str, b: dict, top: int = 8) -> list[str]:
    """Notes lines for :func:`kernel_breakdown`'s result: the kinds, the gaps, the ``top`` kernels."""
    kern = sum(b["cats"].values()) / 1e6
    parts = ", ".join(f"{k} {v / 1e3:.1f} ms" for k, v in b["cats"].items())
    lines = [f"- {name}: wall {b['wall'] * 1e3:.1f} ms; GPU kernels {kern * 1e3:.1f} ms ({parts}; {b['launches']} "
             f"launches) -> launch gaps/sync {max(b['wall'] - kern, 0) * 1e3:.1f} ms"]
    return lines + [f"  - {dev / 1e3:.2f} ms in {count} x `{key}`" for dev, count, key in b["kernels"][:top]]


def profile(name, qr, one, notes):
    """Kernel time by kind vs wall time, and the host-only preparation time."""
    import torch

    from qrank.engine.packing import build_layout, plan_passes, varlen_plan

    eng = qr.engine
    t = time.perf_counter()
    seqs = qr.encode(one)
    t_tok = time.perf_counter() - t
    t = time.perf_counter()
    lengths = [len(x) for x in seqs]
    passes = plan_passes(eng.groups(seqs), lengths, eng.max_batch_tokens, eng.max_batch_size)
    lays = [build_layout(seqs, p) for p in passes]
    [varlen_plan(lay) for lay in lays]
    t_plan = time.perf_counter() - t
    lines = breakdown_lines(f"{name} profile ({len(passes)} pass(es))", kernel_breakdown(lambda: qr.score_pairs(one)))
    lines[0] += (f"; host: tokenize {t_tok * 1e3:.1f} ms, grouping+packing {t_plan * 1e3:.1f} ms (overlaps the GPU "
                 "except for the first pass)")
    notes.extend(lines)
    # the engine alone (pre-tokenized) timed by CUDA events: GPU time vs host-side time per request
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        start.record()
        eng.last_hidden(seqs)
        end.record()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t, start.elapsed_time(end) / 1e3))
    w, g = sorted(ts)[2]
    notes.append(f"  - engine alone on the tokenized request: {w * 1e3:.1f} ms wall ({len(seqs) / w:.0f} pairs/s, "
                 f"{sum(lengths) / w:,.0f} fed tokens/s)")


def bench_embedder(size, rep: Report, args, notes):
    import numpy as np
    import torch

    import gpu_systems as gs

    model, cfg = gs.build_model("embedding", size, args.device, tiny=args.smoke)
    tok = gs.tokenizer_for("embedding")
    sysm = gs.EmbedSystems(model, tok)
    name = f"Qwen3-Embedding-{size.upper()}"
    texts = gs.documents(tok, args.n_texts, seed=99)
    qe = qrank_embedder(model, tok)
    seqs = qe.encode(texts)
    work, rows = min_work(qe.engine, seqs)
    floor = gs.floor_seconds(cfg, work, rows)
    fed = sysm.fed_tokens(texts)
    reps = 3 if size == "0.6b" else 2
    ref = sysm.official(texts[:64])
    got = qe.embed_batch(texts[:64])
    notes.append(f"- {name}: embed-1000 = {fed} tokens; min cosine(qrank, official) over 64 texts = "
                 f"{float(np.min(np.sum(ref * got, axis=1))):.5f}")
    systems = [("official", lambda: sysm.official(texts)), ("qrank", lambda: qe.embed_batch(texts))]
    if size in args.st_sizes:
        st = sysm.sentence_transformers(Path("/tmp") / f"st-{size}")
        systems.insert(1, ("sentence-transformers", lambda: st.encode(texts, batch_size=32)))
    for system, fn in systems:
        if system == "official" and size != "0.6b":  # ~20 s a run at 8B: warm on a slice, time once
            s, mem, ts = timed(fn, 1, warmup=0, warm=lambda: sysm.official(texts[:16]))
        else:
            s, mem, ts = timed(fn, reps)
        rep.add(name, system, "embed-1000", s, len(texts), fed, floor, mem, times=ts)
    qe = sysm = model = systems = None  # rebinding, not del: the closures above read these names
    torch.cuda.empty_cache()


def run(args) -> None:
    import torch
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = False
    # dynamo's recompile limit stays at its default: each kind of engine compiles its own code objects
    # (qrank.engine.qwen3_forward.layer_segments), so three model shapes never pile onto one
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke run)"
    rep = Report(dev)
    notes = []
    try:
        import sentence_transformers

        st_version = sentence_transformers.__version__
    except ImportError:
        st_version = "absent"
    mem = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0
    header = (
        f"Device: {dev} ({mem:.0f} GiB); torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, transformers {transformers.__version__}, sentence-transformers {st_version}; "
        f"bf16, random weights of the real shapes built on the GPU (speed only; scores are meaningless)."
    )
    log.info(header)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        for part, fn in (("rerank", bench_reranker), ("embed", bench_embedder)):
            if part in args.parts:
                try:
                    fn(size, rep, args, notes)
                except Exception as exc:  # keep the other sizes' figures; the failure is reported
                    log.exception("%s %s failed", part, size)
                    notes.append(f"- {part} {size}: FAILED ({type(exc).__name__}: {str(exc)[:200]})")
                gc.collect()
                torch.cuda.empty_cache()
        from qrank.fileio import atomic_write_json, atomic_write_text

        atomic_write_json(out / "gpu_results.json", rep.rows, indent=1)
        atomic_write_text(out / "gpu_bench.md", render(header, rep.rows, notes))
    print(render(header, rep.rows, notes))


def render(header: str, rows: list[dict], notes: list[str]) -> str:
    main = [r for r in rows if not r.get("variant")]
    var = [r for r in rows if r.get("variant")]
    lines = [
        "## GPU: Qwen3 reranker and embedder (bench/gpu_bench.py)",
        "",
        header,
        "",
        "| model | workload | system | ms / 100 pairs | pairs/s | tokens/s | peak GiB | floor fraction | x "
        "official | runs (ms, min-max) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in main:
        # the official recipe's faster form where it was timed in several (fp8_bench: batches of 8, one batch)
        off = min(
            (o for o in main if o["model"] == r["model"] and o["workload"] == r["workload"]
             and o["system"].split("[")[0] == "official"),
            key=lambda o: o["seconds"],
            default=None,
        )
        ratio = f"{r['tokens_per_s'] / off['tokens_per_s']:.2f}" if off else ""
        lines.append(
            f"| {r['model']} | {r['workload']} | {r['system']}{' *' if r.get('note') else ''} | "
            f"{r['ms_per_100_pairs']} | "
            f"{r['pairs_per_s']} | {r['tokens_per_s']:,} | {r['peak_mem_gib']} | {r['floor_fraction']} | "
            f"{ratio} | {spread(r)} |"
        )
    if any(r.get("note") for r in main):
        lines += [
            "",
            "\\* per-query recipes timed on a subset of the 32 queries (their rate does not depend on the count).",
        ]
    if var:
        lines += [
            "",
            "Engine variants (rerank-1x100):",
            "",
            "| model | variant | ms / 100 pairs | tokens/s | floor fraction | runs (ms, min-max) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['model']} | {r['system']} | {r['ms_per_100_pairs']} | {r['tokens_per_s']:,} | "
            f"{r['floor_fraction']} | {spread(r)} |"
            for r in var
        ]
    if notes:
        lines += ["", "Notes and profile:", ""] + notes
    return "\n".join(lines) + "\n"


def spread(row: dict) -> str:
    runs = row.get("run_seconds") or []
    return f"{min(runs) * 1e3:.1f}-{max(runs) * 1e3:.1f}" if runs else ""


def merge(sources: list[Path]) -> None:
    """Fold device runs (newest first) into the gpu-bench section of bench/logs/history-gpu-engine.md and results.json.

    Each source holds a run's gpu_bench.md and gpu_results.json, and optionally label.txt (what code
    it measured). bench/gpu_notes.md, if present, opens the section. A results row is keyed by
    (device, model, system, workload): the newest run's row wins, older runs fill the keys it lacks.
    """
    parts = []
    notes_file = ROOT / "bench" / "gpu_notes.md"
    if notes_file.is_file():
        parts.append(notes_file.read_text().rstrip())
    rows: list[dict] = []
    key = lambda r: (r.get("device"), r.get("model"), r.get("system"), r.get("workload"))  # noqa: E731
    seen: set = set()
    for src in sources:
        label = (src / "label.txt").read_text().strip() if (src / "label.txt").is_file() else src.name
        body = (src / "gpu_bench.md").read_text().split("\n", 1)[1].strip()  # drop the run's own title
        parts.append(f"### {label}\n\n{body}")
        for r in json.loads((src / "gpu_results.json").read_text()):
            if key(r) not in seen:
                seen.add(key(r))
                rows.append({**r, "run": src.name})
    section = "## GPU: Qwen3 reranker and embedder (bench/gpu_bench.py)\n\n" + "\n\n".join(parts)
    bm = ROOT / "bench" / "logs" / "history-gpu-engine.md"  # BENCHMARKS.md's headline is edited by hand
    text = bm.read_text() if bm.is_file() else "# Benchmarks\n"
    block = f"{MARK_BEGIN}\n{section.rstrip()}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    from qrank.fileio import atomic_write_json, atomic_write_text

    atomic_write_text(bm, text)
    res = ROOT / "bench" / "results.json"
    old = json.loads(res.read_text()) if res.is_file() else []
    atomic_write_json(res, [r for r in old if key(r) not in seen] + rows, indent=2)
    print(f"merged {len(rows)} rows into {res} and the gpu-bench section of {bm}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run on a CUDA device")
    r.add_argument("--sizes", default="0.6b,4b,8b")
    r.add_argument("--parts", default="rerank,embed")
    r.add_argument("--out", default="bench/out")
    r.add_argument("--repeats", type=int, default=5)
    r.add_argument(
        "--subset", type=int, default=4, help="queries the per-query recipes are timed on in the 32-query workload"
    )
    r.add_argument("--variant-sizes", default="0.6b,8b")
    r.add_argument("--profile-sizes", default="0.6b,8b")
    r.add_argument("--st-sizes", default="0.6b", help="sizes whose sentence-transformers baseline is saved and loaded")
    r.add_argument("--n-queries", type=int, default=32)
    r.add_argument("--n-docs", type=int, default=100)
    r.add_argument("--n-texts", type=int, default=1000)
    r.add_argument("--skip-batch", action="store_true", help="leave out the 32-query workload")
    r.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the script, measures nothing")
    m = sub.add_parser("merge", help="fold a run's output into bench/logs/history-gpu-engine.md and bench/results.json")
    m.add_argument("--from", dest="src", nargs="+", required=True, help="run folders, newest first")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    if args.cmd == "merge":
        return merge([Path(x) for x in args.src])
    for k in ("sizes", "parts", "variant_sizes", "profile_sizes", "st_sizes"):
        setattr(args, k, [s for s in getattr(args, k).split(",") if s])
    args.device = "cpu" if args.smoke else "cuda"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    run(args)


if __name__ == "__main__":
    main()
