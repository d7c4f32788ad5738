"""Overload and memory figures of a real ``qrank serve`` (a subprocess on 127.0.0.1, the small shared models).

``overload``: N closed-loop clients against a small queue; success rate, and how fast the 429s come.
``soak``: a bounded number of mixed rerank/embeddings requests; the server's RSS before and after.

    .venv/bin/python bench/overload.py overload --clients 64 --seconds 20 --max-queue 8
    .venv/bin/python bench/overload.py soak --requests 1500 --malloc-arena-max 0   # glibc's default arenas
    .venv/bin/python bench/overload.py soak --requests 1500 --src /tmp/old/src     # another checkout's code

Only 127.0.0.1; clients, requests and seconds are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from server_bench import wait_ready  # noqa: E402
from server_load import make_bodies, percentile, synthetic_text  # noqa: E402

from qrank.server.run import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RERANKER = SHARED / "models" / "scifact-minilm-ce"
EMBEDDER = SHARED / "models" / "all-MiniLM-L6-v2"
_SERVE = "import sys; from qrank.cli import main; sys.exit(main(sys.argv[1:]))"


@contextmanager
def serve(*flags: str, src: Path | None = None, env: dict | None = None, startup_s: float = 180.0):
    """``qrank serve`` with the shared reranker and embedder as a subprocess; yields (url, pid)."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environ.update({"PYTHONPATH": str(src or ROOT / "src"), "HF_HUB_OFFLINE": "1", **(env or {})})
    cmd = [sys.executable, "-c", _SERVE, "serve", "--reranker", str(RERANKER), "--embedder", str(EMBEDDER),
           "--host", "127.0.0.1", "--port", str(port), "--no-access-log", *flags]
    proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, startup_s)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def mixed_bodies(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Rerank and embeddings requests of many sizes (what fragments an allocator: varied buffers)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choice((5, 30, 100, 250))
        if rng.random() < 0.6:
            docs = rng.choice((1, 4, 16, 32))
            body = {"query": synthetic_text(rng, 8), "documents": [synthetic_text(rng, words) for _ in range(docs)]}
            out.append(("/v1/rerank", json.dumps(body).encode()))
        else:
            texts = rng.choice((1, 4, 16))
            body = {"input": [synthetic_text(rng, words) for _ in range(texts)]}
            out.append(("/v1/embeddings", json.dumps(body).encode()))
    return out


async def _drive(url: str, requests: list[tuple[str, bytes]], clients: int, seconds: float) -> list[tuple[int, float]]:
    """Send ``requests`` from ``clients`` closed-loop clients, for at most ``seconds``; (status, seconds) each."""
    results: list[tuple[int, float]] = []
    deadline = time.monotonic() + seconds
    nxt = iter(range(len(requests)))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            for i in nxt:
                if time.monotonic() > deadline:
                    return
                path, body = requests[i]
                started = time.perf_counter()
                try:
                    r = await client.post(path, content=body, headers={"content-type": "application/json"})
                    results.append((r.status_code, time.perf_counter() - started))
                except httpx.HTTPError:
                    results.append((0, time.perf_counter() - started))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return results


def soak(requests: int = 1500, *, clients: int = 8, seconds: float = 900, warmup: int = 100, max_length: int = 128,
         malloc_arena_max: int | None = None, src: Path | None = None, env: dict | None = None) -> dict:
    """RSS (MB) after ``warmup`` requests and after ``requests`` more (bounded by ``seconds``).

    ``max_length`` keeps each request cheap on a small CPU; sizes still vary (1-32 texts, 5-250 words).
    """
    flags = ["--max-length", str(max_length)]
    flags += [] if malloc_arena_max is None else ["--malloc-arena-max", str(malloc_arena_max)]
    bodies = mixed_bodies(64)
    with serve(*flags, src=src, env=env) as (url, pid):
        start = rss_mb(pid)
        asyncio.run(_drive(url, [bodies[i % 64] for i in range(warmup)], clients, seconds))
        warm = rss_mb(pid)
        started = time.monotonic()
        done = asyncio.run(_drive(url, [bodies[i % 64] for i in range(requests)], clients, seconds))
        end = rss_mb(pid)
    seconds_taken = round(time.monotonic() - started, 1)
    return {"requests": len(done), "ok": sum(s == 200 for s, _ in done), "seconds": seconds_taken,
            "rss_start_mb": round(start), "rss_warm_mb": round(warm), "rss_end_mb": round(end),
            "malloc_arena_max": malloc_arena_max, "max_length": max_length}


def overload(clients: int = 64, seconds: float = 20, *, max_queue: int = 8, docs: int = 20, words: int = 60,
             src: Path | None = None) -> dict:
    """Closed-loop clients against a small queue: how many succeed, how fast the refusals come."""
    bodies = [("/v1/rerank", b) for b in make_bodies("rerank", 64, docs, words)]
    with serve("--max-queue", str(max_queue), src=src) as (url, _):
        done = asyncio.run(_drive(url, bodies * 100_000, clients, seconds))
    ok = [t for s, t in done if s == 200]
    refused = [t for s, t in done if s == 429]
    return {
        "clients": clients, "seconds": seconds, "max_queue": max_queue, "requests": len(done),
        "ok": len(ok), "ok_share": round(len(ok) / max(len(done), 1), 3), "ok_rps": round(len(ok) / seconds, 1),
        "refused": len(refused), "other": len(done) - len(ok) - len(refused),
        "ok_p50_ms": round(percentile([t * 1000 for t in ok], 50), 1),
        "ok_p99_ms": round(percentile([t * 1000 for t in ok], 99), 1),
        "429_p50_ms": round(percentile([t * 1000 for t in refused], 50), 1),
        "429_p99_ms": round(percentile([t * 1000 for t in refused], 99), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("overload", "soak"))
    ap.add_argument("--src", type=Path, default=None, help="the qrank sources to serve (default: this checkout's)")
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--max-queue", type=int, default=8)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--malloc-arena-max", type=int, default=None)
    a = ap.parse_args(argv)
    if a.clients is not None and not 1 <= a.clients <= 256:
        ap.error("--clients: 1 to 256")
    if a.what == "overload":
        out = overload(a.clients or 64, min(a.seconds or 20, 600), max_queue=a.max_queue, src=a.src)
    else:
        out = soak(min(a.requests, 20_000), clients=a.clients or 8, seconds=min(a.seconds or 900, 3600),
                   malloc_arena_max=a.malloc_arena_max, src=a.src)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
