"""CPU benchmark: qrank's cross-encoder path vs sentence-transformers ``CrossEncoder.predict``.

The real ../shared/models/scifact-minilm-ce on 100 SciFact (claim, abstract) pairs, fp32, on this
machine's cores. The two systems run alternately, round after round, so that a noisy shared machine
slows both alike; the table gives each one's median and the median of the per-round ratios.

    .venv/bin/python bench/cpu_bench.py            # writes bench/logs/history-cpu.md (<!-- cpu-bench -->), results rows
    .venv/bin/python bench/cpu_bench.py --no-write # print only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QRANK_SHARED_DIR") or ROOT.parent / "shared")
MARK_BEGIN, MARK_END = "<!-- cpu-bench -->", "<!-- /cpu-bench -->"


def scifact_pairs(n_queries: int = 10, docs_per_query: int = 10, seed: int = 0) -> list[tuple[str, str]]:
    """Each test claim with its cited abstracts plus random others, 100 pairs in all by default."""
    base = SHARED / "datasets" / "scifact"
    corpus = {}
    for line in (base / "corpus.jsonl").open(encoding="utf-8"):
        d = json.loads(line)
        corpus[d["_id"]] = (d["title"] + " " + d["text"]).strip()
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"] for line in (base / "queries.jsonl").open(encoding="utf-8")
    }
    qrels: dict[str, list[str]] = {}
    for row in (base / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, did, _ = row.split("\t")
        qrels.setdefault(qid, []).append(did)
    rng = random.Random(seed)
    ids = list(corpus)
    pairs = []
    for qid in list(qrels)[:n_queries]:
        docs = [d for d in qrels[qid] if d in corpus][:docs_per_query]
        docs += rng.sample(ids, docs_per_query - len(docs))
        pairs += [(queries[qid], corpus[d]) for d in docs]
    return pairs


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(rounds: int, write: bool) -> None:
    from qrank.models.packed_encoder import CPU_RUN_TOKENS

    import numpy as np
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    from qrank import Reranker

    model_dir = SHARED / "models" / "scifact-minilm-ce"
    pairs = scifact_pairs()
    st = CrossEncoder(str(model_dir), device="cpu")
    rr = Reranker.from_pretrained(str(model_dir), device="cpu")
    padded = Reranker.from_pretrained(str(model_dir), device="cpu", engine="reference")
    int8 = Reranker.from_pretrained(str(model_dir), device="cpu", quantization="int8")
    ref = st.predict(pairs)
    got = rr.model.score_pairs(pairs)
    diff = float(np.max(np.abs(np.asarray(got) - np.asarray(ref))))
    diff8 = float(np.max(np.abs(np.asarray(int8.model.score_pairs(pairs)) - np.asarray(ref))))
    tokens = sum(rr.model.count_tokens(pairs))
    systems = (("st", lambda: st.predict(pairs)), ("qrank", lambda: rr.model.score_pairs(pairs)),
               ("padded", lambda: padded.model.score_pairs(pairs)), ("int8", lambda: int8.model.score_pairs(pairs)))
    runs: dict[str, list[float]] = {name: [] for name, _ in systems}
    ratios, ratios8 = [], []
    for r in range(rounds):
        times = {}
        k = r % len(systems)
        for name, fn in systems[k:] + systems[:k]:  # rotate who goes first
            t = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - t
        for name in runs:
            runs[name].append(times[name])
        ratios.append(times["st"] / times["qrank"])
        ratios8.append(times["st"] / times["int8"])
        print(f"round {r}: " + ", ".join(f"{n} {t * 1e3:.0f} ms" for n, t in times.items()), flush=True)
    t_st, t_q = runs["st"], runs["qrank"]
    med_st, med_q, med_ratio = statistics.median(t_st), statistics.median(t_q), statistics.median(ratios)
    med_pad, med_8 = statistics.median(runs["padded"]), statistics.median(runs["int8"])
    med_ratio8 = statistics.median(ratios8)
    device = f"CPU: {cpu_name()} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"
    date = dt.date.today().isoformat()
    rows = [
        dict(device=device, model="scifact-minilm-ce", system=s, workload="ce-100-scifact-pairs", date=date,
             tokens_per_s=round(tokens / t), ms_per_100_pairs=round(t / len(pairs) * 100 * 1000, 1),
             pairs_per_s=round(len(pairs) / t, 1), quantization="int8" if "int8" in s else "none")
        for s, t in (("sentence-transformers", med_st), ("qrank", med_q), ("qrank padded (engine=reference)", med_pad),
                     ("qrank int8 (quantization=int8)", med_8))
    ]
    engine = rr.model.engine_settings
    assert rr.model.packed is not None and padded.model.packed is None and int8.model.packed is not None
    section = "\n".join([
        "## CPU: classic cross-encoder (bench/cpu_bench.py)",
        "",
        f"{device}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}. Model: ../shared/models/scifact-minilm-ce "
        f"(BERT, 6 layers, fp32); {len(pairs)} SciFact (claim, title + abstract) pairs, {tokens} tokens after "
        f"truncation to 512. Median of {rounds} alternating rounds; the machine is shared and noisy.",
        "",
        "| system | ms / 100 pairs | pairs/s | tokens/s |",
        "|---|---:|---:|---:|",
        *[f"| {r['system']} | {r['ms_per_100_pairs']} | {r['pairs_per_s']} | {r['tokens_per_s']:,} |" for r in rows],
        "",
        f"qrank / sentence-transformers speed ratio, median of the per-round ratios: **{med_ratio:.2f}x**; "
        f"max |score difference| = {diff:.2e}. With `quantization=\"int8\"` (opt-in, not exact): "
        f"**{med_ratio8:.2f}x**, "
        f"max |score difference| = {diff8:.2e} (quality: nDCG@10 in BENCHMARKS.md).",
        f"qrank packs the pairs without padding (runs of at most {min(engine.max_batch_tokens, CPU_RUN_TOKENS)} "
        "tokens; projections, feed-forward and LayerNorm on the packed tokens, attention per pair, the pairs shared "
        "among the cores: src/qrank/models/packed_encoder.py); "
        "int8 = torch dynamic int8 Linear layers except each feed-forward output and the head (models/hf_encoder.py); "
        "`engine=reference` is qrank's padded path (length-sorted batches under the same token budget); "
        "sentence-transformers runs `predict(batch_size=32)` (batches of 32 sorted by characters). "
        "Each round runs all four, rotating who goes first; rounds: "
        f"{', '.join(f'{a * 1e3:.0f}/{b * 1e3:.0f}' for a, b in zip(t_st, t_q))} "
        "ms (sentence-transformers/qrank).",
    ]) + "\n"
    print(section)
    if write:
        write_results(section, rows)


def write_results(section: str, rows: list[dict]) -> None:
    from qrank.fileio import atomic_write_json, atomic_write_text

    bm = ROOT / "bench" / "logs" / "history-cpu.md"  # BENCHMARKS.md's headline is edited by hand
    text = bm.read_text() if bm.is_file() else "# Benchmarks\n"
    block = f"{MARK_BEGIN}\n{section.rstrip()}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(bm, text)
    res = ROOT / "bench" / "results.json"
    old = json.loads(res.read_text()) if res.is_file() else []
    key = lambda r: (r.get("device"), r.get("model"), r.get("system"), r.get("workload"))  # noqa: E731
    keys = {key(r) for r in rows}
    atomic_write_json(res, [r for r in old if key(r) not in keys] + rows, indent=2)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    if not (SHARED / "models" / "scifact-minilm-ce").is_dir():
        sys.exit(f"{SHARED}/models/scifact-minilm-ce is missing")
    run(args.rounds, not args.no_write)


if __name__ == "__main__":
    main()
