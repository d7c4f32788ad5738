"""GPU benchmark of classic cross-encoders and ST embedders: qrank vs sentence-transformers vs transformers.

Same process, same weights, interleaved rounds (the systems rotate who goes first), medians. Models:
the real ../shared/models/scifact-minilm-ce, random bf16 weights of the bge-reranker-v2-m3 (XLM-R-large)
shape and of the ModernBERT-base shape, and for embedders random weights of the bge/e5-large shape (BERT,
CLS pooling, normalised). No hub access: the random models use the shared BERT tokenizer (its ids fit
every vocabulary here), saved next to the weights so that every system loads the same folder.

Workloads: 1 query x 100 documents of 50-450 tokens, 32 queries x 100 (SciFact text cut to length, as in
bench/gpu_systems.py); 1,000 passages for embedders. Floor = (2 x non-embedding params x tokens +
bidirectional attention FLOPs) at 790 TFLOP/s (H200 bf16 dense).

    python bench/encoder_gpu_bench.py --out DIR        # CUDA, bf16 (about 4 minutes on an H200)
    python bench/encoder_gpu_bench.py --smoke --out DIR  # CPU, tiny shapes, fp32: checks the script runs

Writes DIR/encoder_gpu.md and DIR/encoder_results.json (rows: system, model, workload, device, date,
pairs_per_s, ms, floor_fraction, max_abs_diff_vs_st); ``--merge bench/results.json`` merges the rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
SHARED = Path(os.environ.get("QRANK_SHARED_DIR") or ROOT.parent / "shared")
PEAK_TFLOPS = 790.0
log = logging.getLogger("encoder_gpu_bench")

# published shapes (config.json of BAAI/bge-reranker-v2-m3, answerdotai/ModernBERT-base, BAAI/bge-large-en-v1.5)
SHAPES = {
    "bge-reranker-v2-m3-shape": dict(
        model_type="xlm-roberta", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, vocab_size=250002, max_position_embeddings=8194, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, layer_norm_eps=1e-5, type_vocab_size=2,  # 2: the shared BERT tokenizer sends segment ids
    ),
    "modernbert-base-shape": dict(
        model_type="modernbert", hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
        intermediate_size=1152, vocab_size=50368, max_position_embeddings=8192, global_attn_every_n_layers=3,
        local_attention=128, pad_token_id=0, classifier_pooling="mean",
    ),
    "bge-large-shape": dict(
        model_type="bert", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
    ),
}
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def bert_tokenizer_dir() -> Path:
    return SHARED / "models" / "scifact-minilm-ce"


def build_random(shape: str, dst: Path, *, role: str, dtype, device: str, tiny: bool = False) -> Path:
    """Random weights of ``shape`` saved in ``dst`` with the shared BERT tokenizer (and an ST layout for embedders)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from qrank.models.st_embedder import write_st_layout

    raw = dict(SHAPES[shape])
    if tiny:
        raw.update(TINY)
        raw["vocab_size"] = min(raw["vocab_size"], 30522)
    mtype = raw.pop("model_type")
    cfg = AutoConfig.for_model(mtype, **raw, num_labels=1)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            cls = AutoModelForSequenceClassification if role == "reranker" else AutoModel
            model = cls.from_config(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    tok = AutoTokenizer.from_pretrained(str(bert_tokenizer_dir()))
    tok.model_max_length = 512 if mtype == "bert" else 8192
    if mtype != "bert":  # XLM-R and ModernBERT tokenizers send no segment ids
        tok.model_input_names = ["input_ids", "attention_mask"]
    tok.save_pretrained(dst)
    if role == "embedder":
        write_st_layout(dst, cfg.hidden_size, "cls")
    del model
    return dst


def non_embedding_params(cfg) -> int:
    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    glu = 2 if cfg.model_type == "modernbert" else 1  # GeGLU: the up projection is twice as wide
    return n * (4 * h * h + (glu + 1) * h * i)


def floor_seconds(cfg, lengths: list[int]) -> float:
    attn = 4 * cfg.hidden_size * cfg.num_hidden_layers * sum(n * n for n in lengths)  # QK^T and PV, bidirectional
    return (2 * non_embedding_params(cfg) * sum(lengths) + attn) / (PEAK_TFLOPS * 1e12)


def workload_pairs(tok, n_queries: int, n_docs: int, seed: int, smoke: bool) -> list[tuple[str, str]]:
    from gpu_systems import _scifact, documents

    _, queries = _scifact()
    rng = random.Random(seed)
    hi = 60 if smoke else 450
    docs = documents(tok, n_docs, seed, lo=min(50, hi), hi=hi)
    return [(q, d) for q in rng.sample(queries, n_queries) for d in docs]


def timed(systems: dict, rounds: int, sync) -> dict:
    """Median seconds per system; each round runs every system once, rotating who goes first."""
    names = list(systems)
    for fn in systems.values():  # warm-up: kernels, allocator, autotuning
        fn()
    sync()
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            sync()
            t = time.perf_counter()
            systems[n]()
            sync()
            times[n].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def padded_transformers(model, tok, pairs, batch_size: int = 32, max_length: int = 512):
    """transformers best effort: length-sorted batches of 32, SDPA, logits of the one label through sigmoid."""
    import torch

    enc = tok([q for q, _ in pairs], [d for _, d in pairs], truncation="longest_first", max_length=max_length)
    ids = enc["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = torch.empty(len(ids), device=model.device)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            batch = tok.pad({k: [enc[k][i] for i in idx] for k in enc.keys()}, return_tensors="pt").to(model.device)
            out[torch.as_tensor(idx, device=out.device)] = torch.sigmoid(model(**batch).logits[:, 0].float())
    return out.cpu().numpy()


def profiled(name: str, workload: str, fn, args, device: str, notes: list[str]) -> None:
    """Kernel time by kind (gpu_bench.kernel_breakdown) of qrank on one workload, for models in ``--profile``."""
    if device != "cuda" or name not in args.profile.split(","):
        return
    import gpu_bench as gb

    notes.extend(gb.breakdown_lines(f"{name} {workload} qrank", gb.kernel_breakdown(fn)))


def bench_reranker(name: str, path: Path, args, device: str, dtype, notes: list[str]) -> list[dict]:
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from qrank import Reranker

    tok = AutoTokenizer.from_pretrained(str(path))
    max_len = 512
    st = CrossEncoder(str(path), device=device, max_length=max_len, model_kwargs={"dtype": dtype})
    hf = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")
    hf = hf.to(device)
    qr = Reranker.from_pretrained(str(path), device=device, dtype="float32" if args.smoke else "bfloat16",
                                  max_length=max_len)
    packed = getattr(qr.model, "packed", None) is not None
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows = []
    for n_q in (1, 2 if args.smoke else 32):
        pairs = workload_pairs(tok, n_q, 8 if args.smoke else 100, seed=n_q, smoke=args.smoke)
        workload = f"{n_q}x{len(pairs) // n_q}"
        ref = st.predict(pairs, batch_size=32)
        got = qr.model.score_pairs(pairs)
        diff = float(np.max(np.abs(np.asarray(got) - ref)))
        systems = {
            "sentence-transformers": lambda p=pairs: st.predict(p, batch_size=32),
            "sentence-transformers one batch": lambda p=pairs: st.predict(p, batch_size=min(len(p), 100)),
            "transformers": lambda p=pairs: padded_transformers(hf, tok, p, max_length=max_len),
            "qrank": lambda p=pairs: qr.model.score_pairs(p),
        }
        if packed and args.variants:  # how the request is cut: tokenize everything first, or small first chunks
            from qrank.engine.pipelining import pipelined_last_hidden
            from qrank.models.packed_runs import PackedRows

            small = PackedRows(qr.model.packed, qr.model.packed.logits, 16384, first_tokens=2048)
            systems["qrank[tokenize first]"] = lambda p=pairs: qr.model.score_encoded(qr.model.encode_pairs(p))
            systems["qrank[first chunk 2048]"] = lambda p=pairs: pipelined_last_hidden(small, p, qr.model.encode_pairs)
        med = timed(systems, args.rounds if n_q == 1 else max(1, args.rounds - 2), sync)  # 32 x 100: fewer rounds
        profiled(name, workload, lambda p=pairs: qr.model.score_pairs(p), args, device, notes)
        lengths = qr.model.count_tokens(pairs)
        floor = floor_seconds(hf.config, lengths)
        for system, sec in med.items():
            rows.append(dict(model=name, workload=f"rerank {workload} (50-450 tok docs)", system=system,
                             ms=round(sec * 1e3, 2), pairs_per_s=round(len(pairs) / sec, 1),
                             floor_fraction=round(floor / sec, 3),
                             speedup_vs_st=round(med["sentence-transformers"] / sec, 2),
                             tokens=sum(lengths), max_abs_diff_vs_st=diff if system == "qrank" else None,
                             qrank_path="packed" if packed else "padded"))
            log.info("%s %s %s: %.1f ms", name, workload, system, sec * 1e3)
    return rows


def bench_embedder(name: str, path: Path, args, device: str, dtype, notes: list[str]) -> list[dict]:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from qrank import Embedder

    tok = AutoTokenizer.from_pretrained(str(path))
    from gpu_systems import documents

    texts = documents(tok, 20 if args.smoke else 1000, seed=7, lo=50, hi=60 if args.smoke else 450)
    st = SentenceTransformer(str(path), device=device, model_kwargs={"dtype": dtype})
    qe = Embedder.from_pretrained(str(path), device=device, dtype="float32" if args.smoke else "bfloat16")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    ref = st.encode(texts, batch_size=32, normalize_embeddings=True)
    got = qe.model.embed_batch(texts)
    diff = float(np.max(np.abs(got - ref)))
    cos = float(np.min(np.sum(got * ref, axis=1)))
    systems = {
        "sentence-transformers": lambda: st.encode(texts, batch_size=32, normalize_embeddings=True),
        "qrank": lambda: qe.model.embed_batch(texts),
    }
    med = timed(systems, args.rounds, sync)
    profiled(name, f"embed {len(texts)}", lambda: qe.model.embed_batch(texts), args, device, notes)
    lengths = qe.model.count_tokens(texts)
    floor = floor_seconds(st[0].auto_model.config, lengths)
    rows = [dict(model=name, workload=f"embed {len(texts)} passages (50-450 tok)", system=s, ms=round(t * 1e3, 2),
                 pairs_per_s=round(len(texts) / t, 1), floor_fraction=round(floor / t, 3),
                 speedup_vs_st=round(med["sentence-transformers"] / t, 2), tokens=sum(lengths),
                 max_abs_diff_vs_st=diff if s == "qrank" else None, min_cosine_vs_st=cos if s == "qrank" else None)
            for s, t in med.items()]
    return rows


def report(rows: list[dict], device_name: str, versions: str, notes: list[str]) -> str:
    lines = [f"## Encoders on {device_name} (bench/encoder_gpu_bench.py)", "", versions, "",
             "| model | workload | system | ms | items/s | x ST | floor fraction | max abs diff vs ST |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        diff = "" if r.get("max_abs_diff_vs_st") is None else f"{r['max_abs_diff_vs_st']:.1e}"
        lines.append(f"| {r['model']} | {r['workload']} | {r['system']} | {r['ms']} | {r['pairs_per_s']} | "
                     f"{r['speedup_vs_st']} | {r['floor_fraction']} | {diff} |")
    if notes:
        lines += ["", "Kernel profiles (qrank):", ""] + notes
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, fp32: only checks that the script runs")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per workload (default 5; smoke 1)")
    p.add_argument("--variants", action="store_true", help="also time qrank's packed path with other request cuts")
    p.add_argument("--only", default=None, help="comma-separated model names to run (default: all)")
    p.add_argument("--merge", type=Path, default=None, help="also merge the rows into this results.json")
    p.add_argument("--profile", default="bge-reranker-v2-m3-shape",
                   help="comma-separated model names whose qrank runs get a kernel profile by kind ('' for none)")
    p.add_argument("--work", type=Path, default=Path("/tmp/qrank-encoder-models"),
                   help="where the random models are saved (GBs: keep it out of --out)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import sentence_transformers
    import torch
    import transformers

    args.rounds = args.rounds or (1 if args.smoke else 5)
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU (or --smoke)")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    device_name = "CPU (smoke)" if args.smoke else torch.cuda.get_device_name(0)
    work = args.work
    wanted = set(args.only.split(",")) if args.only else None
    rows: list[dict] = []
    notes: list[str] = []
    t0 = time.perf_counter()
    plan = [("scifact-minilm-ce", "reranker", None), ("bge-reranker-v2-m3-shape", "reranker", "random"),
            ("modernbert-base-shape", "reranker", "random"), ("bge-large-shape", "embedder", "random")]
    date = dt.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    text = ""
    for name, role, kind in plan:
        if wanted and name not in wanted:
            continue
        path = SHARED / "models" / name if kind is None else build_random(
            name, work / name, role=role, dtype=dtype, device=device, tiny=args.smoke)
        bench = bench_reranker if role == "reranker" else bench_embedder
        new_rows = bench(name, path, args, device, dtype, notes)
        for r in new_rows:
            r.update(device=device_name, date=date, dtype=str(dtype).replace("torch.", ""))
        rows += new_rows
        gc.collect()  # the systems of one model go before the next model loads
        if device == "cuda":
            torch.cuda.empty_cache()
        log.info("%s done at %.0f s", name, time.perf_counter() - t0)
        # written after every model: a run cut short by a time limit keeps the models it measured
        versions = (f"torch {torch.__version__}, transformers {transformers.__version__}, sentence-transformers "
                    f"{sentence_transformers.__version__}; {args.rounds} interleaved rounds per workload, medians; "
                    f"floor at {PEAK_TFLOPS:.0f} TFLOP/s bf16; total {time.perf_counter() - t0:.0f} s.")
        (args.out / "encoder_results.json").write_text(json.dumps(rows, indent=2))
        text = report(rows, device_name, versions, notes)
        (args.out / "encoder_gpu.md").write_text(text)
    print(text)
    if args.merge:
        old = json.loads(args.merge.read_text()) if args.merge.is_file() else []
        key = lambda r: (r.get("device"), r.get("model"), r.get("system"), r.get("workload"))  # noqa: E731
        new = {key(r) for r in rows}
        args.merge.write_text(json.dumps([r for r in old if key(r) not in new] + rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
