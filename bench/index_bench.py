"""Vector index benchmark: exact FAISS vs HNSW (qrank's settings) vs Milvus Lite on random unit vectors.

Measures build time, memory, single-query latency (p50/p99) for top-k and recall@k against exact search,
prints a table, writes the ``index-bench`` section of bench/logs/history-index.md and rows in bench/results.json
(rows keyed by system, size and parameters; other rows and sections are kept).

    .venv/bin/python bench/index_bench.py --n 200000                 # all systems
    .venv/bin/python bench/index_bench.py --n 1000000 --systems exact # exact search only
    .venv/bin/python bench/index_bench.py --n 100000 --data clustered # vectors with structure, like embeddings

``--data uniform`` (the default) draws i.i.d. Gaussian vectors normalised to the unit sphere: the hardest
case for graph indexes, since in 1024 dimensions all points are nearly equidistant. ``clustered`` draws
points around 1,000 random centres, closer to real embedding collections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from qrank.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from qrank.index.faiss_index import build_index, flat_search, search_params  # noqa: E402
from qrank.index.store import Passage  # noqa: E402
from qrank.settings import IndexSettings  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- index-bench -->", "<!-- /index-bench -->"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def device_name() -> str:
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def make_vectors(n: int, dim: int, seed: int, data: str, centres: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors, generated in blocks to keep the temporary memory small."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, 50_000):
        m = min(50_000, n - i)
        block = rng.standard_normal((m, dim), dtype=np.float32)
        if data == "clustered":
            block = centres[rng.integers(0, len(centres), m)] + 0.6 / np.sqrt(dim) * block
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[i : i + m] = block
    return out


def percentiles(times: list[float]) -> tuple[float, float]:
    arr = np.asarray(times) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def recall(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def timed_queries(search_one, queries: np.ndarray) -> tuple[list[np.ndarray], float, float]:
    found, times = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(search_one(q))
        times.append(time.perf_counter() - t)
    return (found, *percentiles(times))


def bench_faiss(
    kind: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, args, settings: IndexSettings
) -> list[dict]:
    import faiss
    from tqdm import tqdm

    faiss.omp_set_num_threads(args.build_threads or args.threads)
    before = rss_mb()
    t0 = time.perf_counter()
    index = build_index(data.shape[1], kind, settings)
    step = 20_000
    for i in tqdm(range(0, len(data), step), desc=f"build {kind}", unit="blk", disable=None):
        index.add_with_ids(data[i : i + step], np.arange(i, min(i + step, len(data)), dtype=np.int64))
    build_s = time.perf_counter() - t0
    mem = rss_mb() - before
    faiss.omp_set_num_threads(args.threads)
    rows = []
    efs = args.ef if kind == "hnsw" else [None]
    lat_queries = queries if kind == "hnsw" else queries[: args.exact_latency_queries]
    for ef in efs:
        s = settings.model_copy(update={"hnsw_ef_search": ef}) if ef else settings

        def one(q):
            if kind == "flat":  # the store's exact path (BLAS matrix-vector product over FAISS's storage)
                return flat_search(index, q, args.k)[1]
            _, labels = index.search(q[None, :], args.k, params=search_params(kind, args.k, s))
            return labels[0]

        found, p50, p99 = timed_queries(one, lat_queries)
        rec = recall(found, truth[: len(found)], args.k)
        rows.append(
            row(
                "faiss-" + kind,
                args,
                build_s=build_s,
                memory_mb=mem,
                p50_ms=p50,
                p99_ms=p99,
                recall=rec,
                ef_search=max(ef, args.k) if ef else None,
                params={"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
                if kind == "hnsw"
                else {},
            )
        )
        print_row(rows[-1])
    index = None  # rebinding, not del: one() above reads this name; frees the index before the next kind
    return rows


def bench_milvus(data: np.ndarray, queries: np.ndarray, args, settings: IndexSettings) -> list[dict]:
    from tqdm import tqdm

    from qrank.index.milvus_store import MilvusStore

    n = min(args.milvus_n or len(data), len(data))
    sub = data[:n]
    truth = exact_truth(sub, queries, args.k)
    tmp = Path(tempfile.mkdtemp(prefix="qrank-milvus-bench-"))
    rows = []
    try:
        before = rss_mb()
        t0 = time.perf_counter()
        store = MilvusStore(tmp, "bench", sub.shape[1], settings.model_copy(update={"milvus_index": args.milvus_index}))
        step = 5_000
        for i in tqdm(range(0, n, step), desc="milvus-lite insert", unit="blk", disable=None):
            passages = [Passage(doc_id=str(j), chunk=0, start=0, text="") for j in range(i, min(i + step, n))]
            store.add(passages, sub[i : i + step])
        store.persist()
        store.search(queries[0], args.k)  # the first search builds/loads the index
        build_s = time.perf_counter() - t0
        mem = rss_mb() - before

        def one(q):
            return np.asarray([int(h.doc_id) for h in store.search(q, args.k)])

        found, p50, p99 = timed_queries(one, queries[: args.milvus_queries])
        rec = recall(found, truth, args.k)
        rows.append(
            row("milvus-lite-" + args.milvus_index.lower(), args, n=n, build_s=build_s, memory_mb=mem, p50_ms=p50,
                p99_ms=p99, recall=rec, ef_search=None, params={"index": args.milvus_index})
        )
        print_row(rows[-1])
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def exact_truth(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    index = build_index(data.shape[1], "flat", IndexSettings())
    index.add_with_ids(data, np.arange(len(data), dtype=np.int64))
    _, labels = index.search(queries, k)
    return labels


def row(system: str, args, *, n: int | None = None, **values) -> dict:
    n = n or args.n
    ef = values.get("ef_search")
    key = f"index/{system}/{args.data}/n={n}/dim={args.dim}/k={args.k}" + (f"/ef={ef}" if ef else "")
    return {"bench": "index", "key": key, "system": system, "data": args.data, "n": n, "dim": args.dim, "k": args.k,
            "threads": args.threads, "build_threads": args.build_threads, "device": device_name(),
            "date": date.today().isoformat(), "load_avg": round(os.getloadavg()[0], 1),
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in values.items()}}


def print_row(r: dict) -> None:
    print(
        f"{r['system']:<22} n={r['n']:<8} ef={r.get('ef_search') or '-':<5} build={r['build_s']:.1f}s "
        f"mem={r['memory_mb']:.0f}MB "
        f"p50={r['p50_ms']:.2f}ms p99={r['p99_ms']:.2f}ms recall@{r['k']}={r['recall']:.4f}",
        flush=True,
    )


def write_results(rows: list[dict]) -> None:
    path = ROOT / "bench" / "results.json"
    old = json.loads(path.read_text()) if path.is_file() else []
    keys = {r["key"] for r in rows}
    merged = [r for r in old if r.get("key") not in keys] + rows
    atomic_write_json(path, merged, indent=2)


def write_markdown() -> None:
    """Rebuild the index-bench section from every index row in results.json."""
    rows = [r for r in json.loads((ROOT / "bench" / "results.json").read_text()) if r.get("bench") == "index"]
    rows.sort(key=lambda r: (r["data"], r["n"], r["system"], r.get("ef_search") or 0))
    lines = [
        MARK_BEGIN,
        "## Vector index (FAISS exact / HNSW, Milvus Lite)",
        "",
        "`bench/index_bench.py`: random unit vectors, single-query latency for top-k (one query at a time), "
        "recall@k against exact inner-product search on the same vectors. Memory is the process RSS growth while "
        "building (the input matrix itself is not counted). HNSW uses qrank's settings "
        "(`hnsw_m`, `hnsw_ef_construction`; `ef` is `hnsw_ef_search`, never below k). `load` is the 1-minute load "
        "average when the row was measured: the machine is shared, so a load above the core count slows every figure.",
        "",
        "| data | n | dim | system | params | ef | build s | memory MB | p50 ms | p99 ms | recall@k | device "
        "(threads) | load | date |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items()) or "-"
        lines.append(
            f"| {r['data']} | {r['n']:,} | {r['dim']} | {r['system']} | {params} | {r.get('ef_search') or '-'} | "
            f"{r['build_s']:.1f} | {r['memory_mb']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['recall']:.3f} | "
            f"{r['device']} ({r['threads']}{', build ' + str(r['build_threads']) if r.get('build_threads') else ''}) | "
            f"{r.get('load_avg', '-')} | {r['date']} |"
        )
    notes = (ROOT / "bench" / "index_bench_notes.md")
    if notes.is_file():
        lines += ["", notes.read_text().strip()]
    lines.append(MARK_END)
    section = "\n".join(lines)
    path = ROOT / "bench" / "logs" / "history-index.md"  # BENCHMARKS.md's headline is edited by hand
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the collection")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--queries", type=int, default=200, help="queries for HNSW latency and recall")
    ap.add_argument("--exact-latency-queries", type=int, default=50, help="queries timed on exact search (slow at 1M)")
    ap.add_argument("--ef", type=int, nargs="+", default=[128, 256, 512], help="HNSW efSearch values to sweep")
    ap.add_argument("--systems", nargs="+", default=["exact", "hnsw", "milvus"], choices=["exact", "hnsw", "milvus"])
    ap.add_argument("--milvus-n", type=int, default=None, help="vectors given to Milvus Lite (default: --n)")
    ap.add_argument("--milvus-index", default="FLAT", choices=["FLAT", "HNSW"])
    ap.add_argument("--milvus-queries", type=int, default=50)
    ap.add_argument("--data", default="uniform", choices=["uniform", "clustered"])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads while searching (a single query "
                    "runs on one thread in FAISS's HNSW either way)")
    ap.add_argument("--build-threads", type=int, default=None, help="threads while building and computing the exact "
                    "ground truth (default: --threads); a bigger machine builds what two cores then search")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(args.build_threads or args.threads)
    settings = IndexSettings()
    centres = None
    if args.data == "clustered":
        centres = np.random.default_rng(7).standard_normal((1000, args.dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    print(
        f"device: {device_name()}; faiss threads {args.threads}; n={args.n:,} dim={args.dim} k={args.k} "
        f"data={args.data}",
        flush=True,
    )
    t = time.perf_counter()
    data = make_vectors(args.n, args.dim, 0, args.data, centres)
    queries = make_vectors(args.queries, args.dim, 1, args.data, centres)
    print(f"generated data in {time.perf_counter() - t:.1f}s", flush=True)
    t = time.perf_counter()
    truth = exact_truth(data, queries, args.k)
    print(f"exact ground truth for {len(queries)} queries in {time.perf_counter() - t:.1f}s", flush=True)

    rows: list[dict] = []
    for system in args.systems:
        if system == "exact":
            rows += bench_faiss("flat", data, queries, truth, args, settings)
        elif system == "hnsw":
            rows += bench_faiss("hnsw", data, queries, truth, args, settings)
        else:
            rows += bench_milvus(data, queries, args, settings)
        if not args.no_write:  # after each system, so a long run that is stopped keeps what it measured
            write_results(rows)
            write_markdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
