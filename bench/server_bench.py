"""Server benchmark: ``qrank serve`` under 32 concurrent clients vs the in-process engine, same workload.

Each request is one query and ``--docs`` documents (default 100) of ``--words`` pseudo-words. Measured:

1. in-process: ``Reranker.rerank`` one request at a time, and ``Reranker.batch_rerank`` over ``--clients``
   requests at a time (the engine's best case);
2. the server (a ``qrank serve`` subprocess on 127.0.0.1): closed loop with ``--clients`` clients → peak
   throughput; then an open loop (Poisson arrivals) at half that rate → p50 / p99 latency.

The headline is server throughput / the better in-process figure (target >= 0.9). It prints a table,
writes the ``server-bench`` section of bench/logs/history-server.md and rows in bench/results.json (other rows kept).

    .venv/bin/python bench/server_bench.py --model /models/qwen3-reranker-0.6b          # weights in the folder
    .venv/bin/python bench/server_bench.py --model /models/qwen3-shape --random-weights  # config + tokenizer only
    .venv/bin/python bench/server_bench.py --config ../shared/configs/qwen3-reranker-0.6b.json \
        --tokenizer ../shared/tokenizers/qwen3 --name Qwen3-Reranker-0.6B-shape --dtype bfloat16
    .venv/bin/python bench/server_bench.py --quick                                      # CPU smoke, tiny model

A folder with a ``config.json`` and a tokenizer but no weights gets random weights of that shape
(seeded; numbers are about speed, never quality). ``--quick`` builds a tiny random Qwen3 reranker from
../shared (config scaled down, real Qwen tokenizer) and runs a few seconds of each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import server_load  # noqa: E402

from qrank.fileio import atomic_write_json, atomic_write_text  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- server-bench -->", "<!-- /server-bench -->"
SHARED = ROOT.parent / "shared"
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def has_weights(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("*.bin"))


def build_random_reranker(
    config_dir_or_file: Path, tokenizer_dir: Path, out: Path, *, shrink: bool = False, seed: int = 0
) -> Path:
    """Save a randomly initialised Qwen3ForCausalLM of the given shape with the given tokenizer."""
    import torch
    from transformers import AutoConfig, Qwen3Config, Qwen3ForCausalLM

    if config_dir_or_file.is_dir():
        config = AutoConfig.from_pretrained(str(config_dir_or_file))
    else:
        raw = json.loads(config_dir_or_file.read_text())
        for key in ("architectures", "torch_dtype", "dtype"):
            raw.pop(key, None)
        config = Qwen3Config(**raw)
    if shrink:
        for k, v in TINY.items():
            setattr(config, k, v)
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[: config.num_hidden_layers]
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for f in tokenizer_dir.iterdir():
        if f.is_file() and f.suffix in (".json", ".txt", ".model", ".tiktoken") and f.name != "config.json":
            shutil.copy(f, out / f.name)
    return out


def prepare_model(args, workdir: Path) -> Path:
    if args.quick and not args.model:
        cfg, tok = SHARED / "configs" / "qwen3-reranker-0.6b.json", SHARED / "tokenizers" / "qwen3"
        if not cfg.is_file() or not tok.is_dir():
            raise SystemExit(f"--quick without --model needs {cfg} and {tok}")
        print("building a tiny random Qwen3 reranker …", flush=True)
        return build_random_reranker(cfg, tok, workdir / "tiny-qwen3-reranker", shrink=True)
    if args.config:
        if not args.tokenizer:
            raise SystemExit("--config needs --tokenizer DIR")
        print(f"building random weights of {args.config}'s shape …", flush=True)
        return build_random_reranker(Path(args.config), Path(args.tokenizer), workdir / "random-reranker")
    if not args.model:
        raise SystemExit("give --model DIR, --config FILE --tokenizer DIR, or --quick")
    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise SystemExit(f"{model} has no config.json")
    if args.random_weights or not has_weights(model):
        print(f"building random weights of {model}'s shape …", flush=True)
        return build_random_reranker(model, Path(args.tokenizer or model), workdir / "random-reranker")
    return model


def workload(n: int, docs: int, words: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    bodies = server_load.make_bodies("rerank", n, docs, words, seed=seed)
    out = []
    for b in bodies:
        d = json.loads(b)
        out.append((d["query"], d["documents"]))
    return out


def bench_in_process(model_dir: Path, args, requests: list) -> dict:
    """Requests per second of the in-process engine: one at a time, and ``clients`` at a time."""
    import torch

    from qrank import Reranker

    rr = Reranker.from_pretrained(str(model_dir), device=args.device, dtype=args.dtype, engine=args.engine)
    for q, docs in requests[:2]:
        rr.rerank(q, docs)  # warm-up: kernels, allocator
    out = {"kind": rr.info.kind, "max_length": rr.info.max_length, "dtype": rr.info.dtype, "device": rr.info.device}

    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        q, docs = requests[done % len(requests)]
        rr.rerank(q, docs, return_documents=False)
        done += 1
    out["sequential_rps"] = done / (time.perf_counter() - started)

    done, started, k = 0, time.perf_counter(), args.clients
    while time.perf_counter() - started < args.seconds:
        chunk = [requests[(done + i) % len(requests)] for i in range(k)]
        rr.batch_rerank([q for q, _ in chunk], [d for _, d in chunk], return_documents=False)
        done += k
    out["batched_rps"] = done / (time.perf_counter() - started)
    del rr
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def start_server(model_dir: Path, args, port: int) -> subprocess.Popen:
    code = "import sys; from qrank.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [
        sys.executable,
        "-c",
        code,
        "serve",
        "--reranker",
        str(model_dir),
        "--served-model-name",
        "bench",
        "--port",
        str(port),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--engine",
        args.engine,
        "--no-access-log",
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--max-queue",
        "4096",
        *args.server_arg,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not become ready in time")


def bench_server(model_dir: Path, args, bodies: list[bytes]) -> dict:
    from qrank.server.run import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(model_dir, args, port)
    try:
        wait_ready(proc, url, args.startup_timeout)
        asyncio.run(server_load.run_load(url, clients=4, seconds=min(3.0, args.seconds), bodies=bodies))  # warm-up
        peak = asyncio.run(server_load.run_load(url, clients=args.clients, seconds=args.seconds, bodies=bodies))
        half = asyncio.run(
            server_load.run_load(
                url, clients=args.clients, seconds=args.seconds, bodies=bodies, rate=peak.throughput_rps / 2
            )
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"peak": peak.to_dict(), "half": half.to_dict()}


def make_rows(args, model_dir: Path, inproc: dict, server: dict) -> list[dict]:
    peak, half = server["peak"], server["half"]
    best = max(inproc["sequential_rps"], inproc["batched_rps"])
    name = args.name or (
        Path(args.model).name
        if args.model
        else Path(args.config).stem + " (random)"
        if args.config
        else "tiny-qwen3-reranker (random)"
    )
    key = "|".join(
        map(str, ["server", name, inproc["device"], inproc["dtype"], args.docs, args.words, args.clients, args.quick,
                  " ".join(args.server_arg)])
    )
    row = {
        "bench": "server",
        "key": key,
        "model": name,
        "kind": inproc["kind"],
        "device": device_name(args.device),
        "dtype": inproc["dtype"],
        "engine": args.engine,
        "docs": args.docs,
        "words": args.words,
        "clients": args.clients,
        "seconds": args.seconds,
        "quick": args.quick,
        "date": date.today().isoformat(),
        "inproc_sequential_rps": round(inproc["sequential_rps"], 3),
        "inproc_batched_rps": round(inproc["batched_rps"], 3),
        "server_rps": round(peak["throughput_rps"], 3),
        "ratio": round(peak["throughput_rps"] / best, 3) if best else None,
        "peak_p50_ms": round(peak["p50_ms"], 1),
        "peak_p99_ms": round(peak["p99_ms"], 1),
        "half_load_rps": round(half["offered_rps"] or 0, 3),
        "half_p50_ms": round(half["p50_ms"], 1),
        "half_p99_ms": round(half["p99_ms"], 1),
        "errors": peak["errors"] + half["errors"],
        "server_errors": peak["server_errors"] + half["server_errors"],
        "requests_per_model_call": round(peak["batches"].get("mean_requests_per_batch", 0.0), 2),
        "server_args": " ".join(args.server_arg) or "defaults",
    }
    return [row]


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="qrank serve vs in-process (requests/s; each request = 1 query x N documents)")
    for col in (
        "model",
        "device",
        "docs",
        "clients",
        "in-proc seq",
        "in-proc batched",
        "server",
        "ratio",
        "p99 @peak ms",
        "p50 @half ms",
        "p99 @half ms",
        "req/call",
        "5xx",
    ):
        t.add_column(col, justify="right" if col not in ("model", "device") else "left")
    for r in rows:
        t.add_row(
            r["model"],
            r["device"],
            str(r["docs"]),
            str(r["clients"]),
            f"{r['inproc_sequential_rps']:.2f}",
            f"{r['inproc_batched_rps']:.2f}",
            f"{r['server_rps']:.2f}",
            f"{r['ratio']:.2f}",
            f"{r['peak_p99_ms']:.0f}",
            f"{r['half_p50_ms']:.0f}",
            f"{r['half_p99_ms']:.0f}",
            f"{r['requests_per_model_call']:.1f}",
            str(r["server_errors"]),
        )
    Console().print(t)


def write_results(rows: list[dict], path: Path) -> None:
    old = json.loads(path.read_text()) if path.is_file() else []
    keys = {r["key"] for r in rows}
    atomic_write_json(path, [r for r in old if r.get("key") not in keys] + rows, indent=2)


def write_markdown(results: Path, markdown: Path) -> None:
    """Rebuild the server-bench section from every server row in results.json."""
    rows = [r for r in json.loads(results.read_text()) if r.get("bench") == "server"]
    rows.sort(key=lambda r: (r.get("quick", False), r["device"], r["model"], r["docs"]))
    lines = [
        MARK_BEGIN,
        "## HTTP server vs in-process engine",
        "",
        "`bench/server_bench.py`: each request is one query with N pseudo-word documents; `/v1/rerank` over HTTP on "
        "127.0.0.1 (a `qrank serve` subprocess, dynamic batching across clients) against `Reranker.rerank` one request "
        "at a time and `Reranker.batch_rerank` over as many requests as there are clients. Ratio = server / the better "
        "in-process figure (target >= 0.9). Latency at half load: Poisson arrivals at half the server's peak rate. "
        "Random weights of the named shape: these numbers are about speed, never quality. Quick rows are CPU "
        "smoke runs "
        "with a tiny model.",
        "",
        "Why the server sits between the two in-process figures: the engine is faster per request on bigger calls, and "
        "with N clients in a closed loop some of them wait for the calls in flight while the rest queue, so a server "
        "call serves fewer requests (the `req/model call` column) than `batch_rerank`, which gets all N at once. On a "
        "GPU the server keeps `server.batch_workers` calls in flight (default 3) so that the host tokenizes and "
        "queues the next call while the GPU runs one: with one call in flight (the H100 row, 2026-11-25) the ratio "
        "was 0.85. More workers make smaller calls, so the tail latency at half load grows. Against the same engine "
        "given one request at a time, the server is faster. Each row is one run (timed phases of 15-30 s, `seconds` "
        "in bench/results.json): ratios a few hundredths apart are within run-to-run noise.",
        "",
        "| model | device | dtype | docs x words | clients | server flags | in-proc seq req/s | in-proc batched "
        "req/s | "
        "server req/s | ratio | p99 @peak ms | p50 @half ms | p99 @half ms | req/model call | errors | date |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']}{' (quick)' if r.get('quick') else ''} | {r['device']} | {r['dtype']} | {r['docs']} "
            f"x {r['words']} | "
            f"{r['clients']} | {r.get('server_args', 'defaults')} | {r['inproc_sequential_rps']:.2f} | "
            f"{r['inproc_batched_rps']:.2f} | {r['server_rps']:.2f} | "
            f"{r['ratio']:.2f} | {r['peak_p99_ms']:.0f} | {r['half_p50_ms']:.0f} | {r['half_p99_ms']:.0f} | "
            f"{r['requests_per_model_call']:.1f} | {r['errors']} | {r['date']} |"
        )
    lines.append(MARK_END)
    section = "\n".join(lines)
    text = markdown.read_text() if markdown.is_file() else "# Benchmarks\n"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(markdown, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="reranker folder (weights, or config + tokenizer for random weights)")
    ap.add_argument(
        "--config", help="a config.json (e.g. ../shared/configs/qwen3-reranker-0.6b.json): random weights of that shape"
    )
    ap.add_argument("--tokenizer", help="tokenizer folder for --config, or when --model has none")
    ap.add_argument(
        "--random-weights", action="store_true", help="ignore weights in --model; use random ones of its shape"
    )
    ap.add_argument("--name", help="model name in the table (default: the folder's name)")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--engine", default="auto", choices=["auto", "reference", "fast"])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--words", type=int, default=120, help="pseudo-words per document (~1.5-2 tokens each)")
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of each timed phase")
    ap.add_argument("--distinct", type=int, default=128, help="distinct requests in the workload")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra `qrank serve` flag (repeat), e.g. --server-arg=--batch-max-tokens=131072",
    )
    ap.add_argument("--startup-timeout", type=float, default=900.0)
    ap.add_argument("--quick", action="store_true", help="CPU smoke: tiny model, 4 clients, 10 docs, 3 s phases")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results.json")
    ap.add_argument("--markdown", type=Path, default=ROOT / "bench" / "logs" / "history-server.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.quick:
        args.clients, args.docs, args.words, args.seconds, args.distinct = (
            min(args.clients, 4),
            min(args.docs, 10),
            min(args.words, 30),
            min(args.seconds, 3.0),
            16,
        )
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    workdir = Path(tempfile.mkdtemp(prefix="qrank-server-bench-"))
    try:
        model_dir = prepare_model(args, workdir)
        requests = workload(args.distinct, args.docs, args.words)
        print(
            f"device: {device_name(args.device)}; model {model_dir}; {args.docs} docs x {args.words} words; "
            f"{args.clients} clients",
            flush=True,
        )
        inproc = bench_in_process(model_dir, args, requests)
        print(
            f"in-process: {inproc['sequential_rps']:.2f} req/s one at a time, "
            f"{inproc['batched_rps']:.2f} req/s batched",
            flush=True,
        )
        bodies = server_load.make_bodies("rerank", args.distinct, args.docs, args.words)
        server = bench_server(model_dir, args, bodies)
        print("server peak:", server_load.format_report(server_load.LoadReport(**server["peak"])), flush=True)
        print("server half:", server_load.format_report(server_load.LoadReport(**server["half"])), flush=True)
        rows = make_rows(args, model_dir, inproc, server)
        print_table(rows)
        if not args.no_write:
            write_results(rows, args.results)
            write_markdown(args.results, args.markdown)
            print(f"wrote {args.results} and the server-bench section of {args.markdown}")
        return 1 if rows[0]["server_errors"] else 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
