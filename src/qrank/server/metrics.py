"""Prometheus metrics of one app (its own registry: two apps in one process never share counters).

>>> m = Metrics()
>>> m.observe_batch("m", requests=3, items=30, tokens=900, seconds=0.01)
>>> b"qrank_batch_requests_count" in m.render()
True
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# seconds from 5 ms (a cached or tiny request) to 60 s (a long CPU batch), 2-2.5x apart
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# items per request or batch: doubling from 1, sparser past 1,024, up to 16,384
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Requests, latency, batch sizes, queue depth and tokens."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("qrank_requests", "HTTP requests answered", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "qrank_request_duration_seconds", "HTTP request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.in_flight = Gauge("qrank_requests_in_flight", "HTTP requests being handled", registry=r)
        self.slots_used = Gauge(
            "qrank_request_slots_used", "data-route requests holding one of server.max_concurrent slots", registry=r
        )
        self.rejected = Counter("qrank_rejected", "requests refused before reaching a model", ["reason"], registry=r)
        self.queue_depth = Gauge("qrank_queue_depth", "requests waiting for a model call", ["model"], registry=r)
        self.queue_wait = Histogram(
            "qrank_queue_wait_seconds",
            "time from queueing to the model call",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "qrank_batch_requests", "requests served by one model call", ["model"], buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_items = Histogram(
            "qrank_batch_items", "pairs or texts in one model call", ["model"], buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_duration = Histogram(
            "qrank_batch_duration_seconds", "time of one model call", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("qrank_tokens", "tokens processed (after truncation)", ["model"], registry=r)
        self.failures = Counter(
            "qrank_request_failures", "requests whose model call failed", ["model", "type"], registry=r
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, model: str, *, requests: int, items: int, tokens: int, seconds: float) -> None:
        self.batch_requests.labels(model).observe(requests)
        self.batch_items.labels(model).observe(items)
        self.batch_duration.labels(model).observe(seconds)
        self.tokens.labels(model).inc(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
