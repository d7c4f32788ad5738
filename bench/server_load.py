"""Load test for a running ``qrank serve``: N clients for T seconds against a local server only.

Reports throughput, p50/p99 latency, answers by status, and how the server batched the requests (read from
its ``/metrics``). Closed loop (each client sends its next request when the last one answered) by default;
``--rate R`` sends R requests per second on a Poisson schedule instead (open loop: latency at a given load).

    .venv/bin/python bench/server_load.py --url http://127.0.0.1:8000 --clients 16 --seconds 10 --docs 20
    .venv/bin/python bench/server_load.py --url http://127.0.0.1:8000 --endpoint embeddings --rate 50 --json

It refuses any host but 127.0.0.1 / localhost / ::1, and bounds clients, duration and request count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

import httpx

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_CLIENTS = 512
MAX_SECONDS = 3600
MAX_OUTSTANDING = 4096

_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "nu",
    "pe",
    "ra",
    "si",
    "to",
    "ve",
    "zu",
    "an",
    "el",
    "in",
    "or",
    "us",
    "th",
    "str",
    "qu",
]


def synthetic_text(rng: random.Random, words: int) -> str:
    """Deterministic pseudo-words (no dataset needed): a stand-in for passages of a given length.

    >>> synthetic_text(random.Random(0), 3).count(" ")
    2
    """
    return " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(words))


def make_bodies(endpoint: str, n: int, docs: int, words: int, seed: int = 0, model: str | None = None) -> list[bytes]:
    """``n`` distinct request bodies, encoded once so that the client spends its time waiting, not encoding."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(n):
        if endpoint == "rerank":
            body: dict = {
                "query": synthetic_text(rng, 8),
                "documents": [synthetic_text(rng, words) for _ in range(docs)],
                "return_documents": False,
            }
        elif endpoint == "embeddings":
            body = {"input": [synthetic_text(rng, words) for _ in range(docs)]}
        else:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        if model:
            body["model"] = model
        bodies.append(json.dumps(body).encode())
    return bodies


PATHS = {"rerank": "/v1/rerank", "embeddings": "/v1/embeddings"}


@dataclass
class LoadReport:
    mode: str
    clients: int
    seconds: float
    requests: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    statuses: dict = field(default_factory=dict)
    errors: int = 0
    server_errors: int = 0
    client_errors: dict = field(default_factory=dict)
    batches: dict = field(default_factory=dict)
    offered_rps: float | None = None
    dropped: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def check_local(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in LOCAL_HOSTS and f"[{host}]" not in LOCAL_HOSTS:
        raise SystemExit(f"refusing to load-test {host!r}: only 127.0.0.1 / localhost / ::1 are allowed")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def batch_stats(metrics_text: str) -> dict:
    """Batches and requests per batch from the server's Prometheus text (all models together)."""
    from prometheus_client.parser import text_string_to_metric_families

    count = total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "qrank_batch_requests":
            continue
        for s in family.samples:
            if s.name.endswith("_count"):
                count += s.value
            elif s.name.endswith("_sum"):
                total += s.value
    return {
        "batches": int(count),
        "requests_in_batches": int(total),
        "mean_requests_per_batch": (total / count) if count else 0.0,
        # more requests than model calls: at least one call served several requests together
        "batched_together": bool(count and total > count),
    }


async def _send(
    client: httpx.AsyncClient, path: str, body: bytes, latencies: list, statuses: Counter, failures: Counter
) -> None:
    started = time.perf_counter()
    try:
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        statuses[r.status_code] += 1
        if r.status_code == 200:
            latencies.append(time.perf_counter() - started)
    except httpx.HTTPError as exc:
        failures[type(exc).__name__] += 1


async def run_load(
    url: str,
    *,
    endpoint: str = "rerank",
    clients: int = 8,
    seconds: float = 5.0,
    bodies: list[bytes],
    rate: float | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
    max_requests: int | None = None,
) -> LoadReport:
    """Drive the server; closed loop with ``clients`` workers, or open loop at ``rate`` requests/s."""
    check_local(url)
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"clients must be 1..{MAX_CLIENTS} and seconds 0..{MAX_SECONDS}")
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(
        max_connections=max(clients, 64 if rate else clients), max_keepalive_connections=max(clients, 64)
    )
    latencies: list[float] = []
    statuses: Counter = Counter()
    failures: Counter = Counter()
    path = PATHS[endpoint]
    sent = 0
    dropped = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, limits=limits) as client:
        before = batch_stats((await client.get("/metrics")).text)
        started = time.perf_counter()
        deadline = started + seconds
        if rate is None:

            async def worker(k: int) -> None:
                nonlocal sent
                i = k
                while time.perf_counter() < deadline and (max_requests is None or sent < max_requests):
                    sent += 1
                    await _send(client, path, bodies[i % len(bodies)], latencies, statuses, failures)
                    i += clients

            await asyncio.gather(*(worker(k) for k in range(clients)))
        else:
            rng = random.Random(1)
            tasks: set[asyncio.Task] = set()
            next_at = started
            while next_at < deadline and (max_requests is None or sent < max_requests):
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                if len(tasks) >= MAX_OUTSTANDING:
                    dropped += 1
                else:
                    task = asyncio.create_task(
                        _send(client, path, bodies[sent % len(bodies)], latencies, statuses, failures)
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                sent += 1
                next_at += rng.expovariate(rate)
            if tasks:
                await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        after = batch_stats((await client.get("/metrics")).text)
    batches = {
        "batches": after["batches"] - before["batches"],
        "requests_in_batches": after["requests_in_batches"] - before["requests_in_batches"],
    }
    batches["mean_requests_per_batch"] = (
        batches["requests_in_batches"] / batches["batches"] if batches["batches"] else 0.0
    )
    batches["batched_together"] = batches["requests_in_batches"] > batches["batches"] > 0
    ok = len(latencies)
    ms = [x * 1000 for x in latencies]
    return LoadReport(
        mode="open" if rate else "closed",
        clients=clients,
        seconds=round(elapsed, 3),
        requests=sum(statuses.values()),
        throughput_rps=ok / elapsed if elapsed else 0.0,
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / ok if ok else float("nan"),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        errors=sum(v for k, v in statuses.items() if k != 200) + sum(failures.values()),
        server_errors=sum(v for k, v in statuses.items() if k >= 500),
        client_errors=dict(failures),
        batches=batches,
        offered_rps=rate,
        dropped=dropped,
    )


def format_report(r: LoadReport) -> str:
    b = r.batches
    return (
        f"{r.mode} loop, {r.clients} clients, {r.seconds:.1f}s: {r.requests} requests, {r.throughput_rps:.1f} ok/s, "
        f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, statuses {r.statuses}, transport errors "
        f"{r.client_errors or 0}; "
        f"{b.get('batches', 0)} model calls, {b.get('mean_requests_per_batch', 0):.2f} requests per call"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--endpoint", choices=sorted(PATHS), default="rerank")
    ap.add_argument("--model", default=None, help="the request's model field (default: the server's first)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=None, help="open loop: requests per second (Poisson arrivals)")
    ap.add_argument("--max-requests", type=int, default=None)
    ap.add_argument("--docs", type=int, default=20, help="documents (or inputs) per request")
    ap.add_argument("--words", type=int, default=60, help="pseudo-words per document")
    ap.add_argument("--distinct", type=int, default=64, help="distinct request bodies to cycle through")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    check_local(args.url)
    bodies = make_bodies(args.endpoint, args.distinct, args.docs, args.words, model=args.model)
    report = asyncio.run(
        run_load(
            args.url,
            endpoint=args.endpoint,
            clients=args.clients,
            seconds=args.seconds,
            bodies=bodies,
            rate=args.rate,
            api_key=args.api_key,
            max_requests=args.max_requests,
        )
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 1 if report.server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
