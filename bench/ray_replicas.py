"""Scale-out benchmark: ``qrank serve --ray`` with 1, 2, ... model replicas under the same load.

For each replica count it starts ``qrank serve --ray --replicas N`` (a local Ray cluster, one reranker
deployment, ``--num-gpus-per-replica`` GPUs each: 1 on a multi-GPU host = one replica per GPU), drives it
with ``bench/server_load.py`` (closed loop, ``--clients`` clients, ``--docs`` documents per request) and
reads ``/v1/replicas`` to show how the calls were spread. The headline is throughput(N) / throughput(1)
(issue target on 2 GPUs: >= 1.8). It prints a table, writes the ``ray-replicas`` section of bench/logs/history-server.md
and rows in bench/results.json (other rows kept).

    # two H200s, one replica per GPU, random weights of the 0.6B shape
    python bench/ray_replicas.py --config ../shared/configs/qwen3-reranker-0.6b.json \
        --tokenizer ../shared/tokenizers/qwen3 --name Qwen3-Reranker-0.6B-shape --dtype bfloat16 \
        --replicas 1,2 --num-gpus-per-replica 1
    # two replicas sharing one GPU (what a single-GPU machine can show)
    python bench/ray_replicas.py --config ... --replicas 1,2 --num-gpus-per-replica 0.5
    # CPU: the shared cross-encoder, one torch thread per replica
    python bench/ray_replicas.py --model ../shared/models/scifact-minilm-ce --device cpu --replicas 1,2 \
        --num-cpus-per-replica 1 --threads 1

Random weights are about speed, never quality.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import server_bench  # noqa: E402
import server_load  # noqa: E402

from qrank.fileio import atomic_write_json, atomic_write_text  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- ray-replicas -->", "<!-- /ray-replicas -->"


def start(model_dir: Path, args, replicas: int, port: int) -> subprocess.Popen:
    code = "import sys; from qrank.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "serve", "--ray", "--replicas", str(replicas), "--reranker", str(model_dir),
           "--served-model-name", "bench", "--port", str(port), "--device", args.device, "--dtype", args.dtype,
           "--num-gpus-per-replica", str(args.num_gpus_per_replica), "--num-cpus-per-replica",
           str(args.num_cpus_per_replica), "--max-queue", "4096", "--no-access-log"]
    if args.threads:
        cmd += ["--num-threads", str(args.threads)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(model_dir: Path, args, replicas: int, bodies: list[bytes]) -> dict:
    import httpx

    from qrank.server.run import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(model_dir, args, replicas, port)
    try:
        server_bench.wait_ready(proc, url, args.startup_timeout)
        asyncio.run(server_load.run_load(url, clients=args.clients, seconds=args.warmup, bodies=bodies))
        before = httpx.get(url + "/v1/replicas", timeout=30).json()
        peak = asyncio.run(server_load.run_load(url, clients=args.clients, seconds=args.seconds, bodies=bodies))
        after = httpx.get(url + "/v1/replicas", timeout=30).json()
    finally:
        stop(proc)
    return {"replicas": replicas, "load": peak.to_dict(), "replica_calls": spread(before, after)}


def spread(before: dict, after: dict) -> dict:
    """Calls each replica answered during the timed run, by replica id (from ``/v1/replicas``)."""
    out: dict[str, int] = {}
    for model, stats in after.items():
        old = (before.get(model) or {}).get("calls_by_replica", {})
        for replica, calls in stats.get("calls_by_replica", {}).items():
            out[replica] = out.get(replica, 0) + calls - old.get(replica, 0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model folder (random weights of its shape when it has none)")
    ap.add_argument("--config", help="a config.json of the shape to build with random weights")
    ap.add_argument("--tokenizer", help="tokenizer folder for --config")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny random Qwen3 reranker, a few seconds per run")
    ap.add_argument("--name", default=None, help="model name in the table")
    ap.add_argument("--replicas", default="1,2", help="replica counts to compare (default 1,2)")
    ap.add_argument("--num-gpus-per-replica", type=float, default=None, help="default: 1 on CUDA, else 0")
    ap.add_argument("--num-cpus-per-replica", type=float, default=0.5, help="logical CPUs each replica reserves")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per replica (CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--words", type=int, default=40)
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--label", default="", help="a note for the table (what shares what)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and args.device != "cpu"
    if args.num_gpus_per_replica is None:
        args.num_gpus_per_replica = 1.0 if cuda else 0.0
    if args.quick:
        args.seconds, args.warmup, args.docs, args.clients = min(args.seconds, 5.0), 2.0, 20, 8
    with tempfile.TemporaryDirectory(prefix="qr-ray-bench-") as tmp:
        ns = argparse.Namespace(quick=args.quick, model=args.model, config=args.config, tokenizer=args.tokenizer,
                                random_weights=args.random_weights)
        model_dir = server_bench.prepare_model(ns, Path(tmp))
        bodies = server_load.make_bodies("rerank", 64, args.docs, args.words, model="bench")
        runs = []
        for n in [int(x) for x in args.replicas.split(",")]:
            print(f"--- {n} replica(s) …", flush=True)
            runs.append(measure(model_dir, args, n, bodies))
            print(server_load.format_report(server_load.LoadReport(**runs[-1]["load"])), flush=True)
    device = server_bench.device_name("cuda" if cuda else "cpu")
    if cuda:
        device = f"{torch.cuda.device_count()} x {device}"
    name = args.name or Path(args.model or args.config or "tiny").name
    base = runs[0]["load"]["throughput_rps"] or float("nan")
    rows = []
    for r in runs:
        load = r["load"]
        rows.append(
            {"device": device, "model": name, "system": f"qrank-ray-{r['replicas']}",
             "workload": f"rerank-{args.docs}docs-{args.clients}clients", "replicas": r["replicas"],
             "gpus_per_replica": args.num_gpus_per_replica, "requests_per_s": round(load["throughput_rps"], 2),
             "pairs_per_s": round(load["throughput_rps"] * args.docs, 1), "p50_ms": round(load["p50_ms"], 1),
             "p99_ms": round(load["p99_ms"], 1), "errors": load["errors"],
             "speedup": round(load["throughput_rps"] / base, 3), "replica_calls": r["replica_calls"],
             "label": args.label, "date": date.today().isoformat(), "versions": versions()}
        )
    table = markdown(rows)
    print(table)
    if not args.no_write:
        write(rows, table)
    return 0


def versions() -> str:
    import ray
    import torch

    return f"torch {torch.__version__}, ray {ray.__version__}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| device | model | replicas | GPUs/replica | req/s | pairs/s | p50 ms | p99 ms | errors | vs 1 replica "
        "| calls per replica | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        calls = ", ".join(str(v) for v in r["replica_calls"].values()) or "-"
        lines.append(
            f"| {r['device']} | {r['model']} | {r['replicas']} | {r['gpus_per_replica']:g} | {r['requests_per_s']} | "
            f"{r['pairs_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {r['speedup']:.2f}x | {calls} | "
            f"{r['label'] or '-'} |"
        )
    return "\n".join(lines)


def write(rows: list[dict], table: str) -> None:
    results = ROOT / "bench" / "results.json"
    old = json.loads(results.read_text()) if results.is_file() else []
    keep = [
        r
        for r in old
        if not (
            str(r.get("system", "")).startswith("qrank-ray-")
            and r.get("device") == rows[0]["device"]
            and r.get("label") == rows[0]["label"]
            and r.get("model") == rows[0]["model"]
        )
    ]
    atomic_write_json(results, keep + rows, indent=2)
    bench = ROOT / "bench" / "logs" / "history-server.md"  # BENCHMARKS.md's headline is edited by hand
    text = bench.read_text() if bench.is_file() else "# Benchmarks\n"
    all_rows = [r for r in keep + rows if str(r.get("system", "")).startswith("qrank-ray-")]
    section = (
        f"{MARK_BEGIN}\n## Replicas on Ray Serve (bench/ray_replicas.py)\n\n"
        "`qrank serve --ray --replicas N`, closed loop: every client sends its next 100-document rerank request "
        "when the last one is answered. `vs 1 replica` divides by the 1-replica row of the same device, model and "
        "note; `calls per replica` counts model calls each replica answered in the timed "
        f"run.\n\n{markdown(all_rows)}\n{MARK_END}"
    )
    if MARK_BEGIN in text:
        text = text[: text.index(MARK_BEGIN)] + section + text[text.index(MARK_END) + len(MARK_END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    atomic_write_text(bench, text)


if __name__ == "__main__":
    sys.exit(main())
