"""The same FastAPI app on Ray Serve: one deployment per model (scaled on its own), one HTTP front.

Layout::

    HTTP ─► QrankIngress (create_app: routes, validation, request batching)  × ingress_replicas
               │ deployment handles (retries when a replica dies)
               ├─► ModelReplica(reranker A)   × replicas / autoscaled, num_gpus_per_replica each
               └─► ModelReplica(embedder B)   × replicas / autoscaled

Each model replica merges concurrent calls with Ray Serve's dynamic batcher (``serve.batch``) and runs
them through the usual core (``Reranker``/``Embedder`` → engine). Nothing here is imported unless the
user asks for Ray (``qrank serve --ray``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np

from ..errors import InvalidInput, QrankError, require
from ..models.base import Encoded, PairEncoder, TextEncoder
from ..settings import Settings
from ..types import ModelInfo
from .patience import SERVE_PATIENCE

log = logging.getLogger(__name__)

APP_NAME = "qrank"

# this module is only imported for `qrank serve --ray`; without the extra it says which one to install
ray = require("ray", "ray")
serve = require("ray.serve", "ray")


class ModelReplica:
    """One copy of one model on a Ray worker (a Ray Serve replica)."""

    def __init__(self, role: str, source: str, settings: dict) -> None:
        from ..embedder import Embedder
        from ..reranker import Reranker

        self.role = role
        cfg = Settings.model_validate(settings)
        facade_cls = Reranker if role == "reranker" else Embedder
        self.facade = facade_cls.from_pretrained(source, settings=cfg)
        try:
            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a Serve replica (direct use in tests): any unique name will do
            self.replica_id = uuid.uuid4().hex[:8]
        self.calls = 0
        dist = cfg.distributed
        for batched in (self._batched_score, self._batched_embed, self._batched_score_encoded,
                        self._batched_embed_encoded):
            batched.set_max_batch_size(dist.replica_batch_size)
            batched.set_batch_wait_timeout_s(dist.replica_batch_wait_ms / 1000.0)

    def info(self) -> dict:
        return self.facade.info.to_dict()

    def count_tokens(self, items: list, kwargs: dict) -> list[int]:
        return [int(n) for n in self.facade.model.count_tokens(items, **kwargs)]

    def encodes(self) -> bool:
        """Whether the model tokenizes locally: then the front tokenizes each request once (``encode``)
        and sends the token ids back for scoring."""
        return isinstance(self.facade.model, PairEncoder if self.role == "reranker" else TextEncoder)

    def encode(self, items: list, kwargs: dict) -> dict:
        model = self.facade.model
        encode = model.encode_pairs if self.role == "reranker" else model.encode_texts
        encoded = encode(items, **kwargs)
        return {"result": encoded, "replica": self.replica_id}

    async def score_encoded(self, encoded: list) -> dict:
        self.calls += 1
        return {"result": await self._batched_score_encoded((encoded,)), "replica": self.replica_id}

    async def embed_encoded(self, encoded: list, dim: int | None) -> dict:
        self.calls += 1
        return {"result": await self._batched_embed_encoded((encoded, dim)), "replica": self.replica_id}

    async def score_pairs(self, pairs: list, instruction: str | None = None) -> dict:
        self.calls += 1
        scores = await self._batched_score((pairs, instruction))
        return {"result": scores, "replica": self.replica_id}

    async def embed_batch(self, texts: list, is_query: bool, instruction: str | None, dim: int | None) -> dict:
        self.calls += 1
        vectors = await self._batched_embed((texts, is_query, instruction, dim))
        return {"result": vectors, "replica": self.replica_id}

    def stats(self) -> dict:
        return {"replica": self.replica_id, "calls": self.calls, "model": self.facade.info.id}

    def check_health(self) -> None:
        """Ray Serve calls this periodically; a replica whose model cannot run is restarted."""
        if self.role == "reranker":
            self.facade.score_pairs([("health", "check")])  # the facade's checks: shape, finiteness
        else:
            self.facade.embed(["health check"])

    # calls that arrive together are merged into one model call per group of equal options
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _batched_score(self, calls: list[tuple]) -> list[np.ndarray]:
        return await asyncio.to_thread(
            _merge_calls, calls, lambda items, opts: self.facade.model.score_pairs(items, instruction=opts[0])
        )

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _batched_embed(self, calls: list[tuple]) -> list[np.ndarray]:
        return await asyncio.to_thread(
            _merge_calls,
            calls,
            lambda items, opts: self.facade.model.embed_batch(
                items, is_query=opts[0], instruction=opts[1], dim=opts[2]
            ),
        )


    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _batched_score_encoded(self, calls: list[tuple]) -> list[np.ndarray]:
        return await asyncio.to_thread(_merge_calls, calls, lambda items, _: self.facade.model.score_encoded(items))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _batched_embed_encoded(self, calls: list[tuple]) -> list[np.ndarray]:
        return await asyncio.to_thread(
            _merge_calls, calls, lambda items, opts: self.facade.model.embed_encoded(items, dim=opts[0])
        )


def _merge_calls(calls: list[tuple], run) -> list[np.ndarray]:
    """Run calls ``(items, *options)`` grouped by options, one model call per group; split the rows back."""
    groups: dict[tuple, list[int]] = {}
    for i, call in enumerate(calls):
        groups.setdefault(tuple(call[1:]), []).append(i)
    out: list[Any] = [None] * len(calls)
    for opts, members in groups.items():
        items = [x for i in members for x in calls[i][0]]
        rows = np.asarray(run(items, opts))
        start = 0
        for i in members:
            n = len(calls[i][0])
            out[i] = rows[start : start + n]
            start += n
    return out


class RayModelProxy:
    """The Ray layer: a model whose work runs on Ray Serve replicas (:class:`RayScorer`,
    :class:`RayEmbeddingModel`), placed under the facades like any other layer.

    A call whose replica died (or is restarting) is retried with backoff on another replica, so a lost
    replica costs latency, never a wrong or missing answer.
    """

    def __init__(self, handle, info: ModelInfo, *, retries: int = 3, timeout_s: float = 120.0) -> None:
        self.handle = handle
        self.info = info
        self.retries = retries
        self.timeout_s = timeout_s
        self.replica_calls: Counter[str] = Counter()
        self.retried = 0
        self._lock = threading.Lock()

    def _call(self, method: str, *args) -> Any:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        from ..retry import retrying

        died = (ActorDiedError, ActorUnavailableError, RayActorError)
        # short waits: Serve usually routes the retry to another live replica at once; the doubling (to at
        # most 2 s) only matters while every replica is restarting
        try:
            for attempt in retrying(retries=self.retries, retry_on=died, backoff_s=0.2, max_backoff_s=2.0,
                                    describe=lambda: f"{method} on a replica of {self.info.id}",
                                    log_level=logging.WARNING):
                with attempt:
                    try:
                        out = getattr(self.handle, method).remote(*args).result(timeout_s=self.timeout_s)
                    except died:
                        with self._lock:
                            self.retried += 1
                        raise
        except died as exc:
            raise QrankError(f"{self.info.id}: no replica answered after {self.retries} retries ({exc})") from exc
        with self._lock:
            self.replica_calls[out["replica"]] += 1
        return out["result"]

    def count_tokens(self, items, **kwargs) -> list[int]:
        return self.handle.count_tokens.remote(list(items), kwargs).result(timeout_s=self.timeout_s)

    def replica_stats(self) -> dict:
        with self._lock:
            return {"calls_by_replica": dict(self.replica_calls), "retries": self.retried}


class RayScorer(RayModelProxy):
    """A :class:`~qrank.models.base.ScoringModel` on Ray Serve replicas."""

    def score_pairs(self, pairs, *, instruction: str | None = None) -> np.ndarray:
        return np.asarray(self._call("score_pairs", [tuple(p) for p in pairs], instruction), dtype=np.float32)


class RayEmbeddingModel(RayModelProxy):
    """A :class:`~qrank.models.base.EmbeddingModel` on Ray Serve replicas."""

    def embed_batch(self, texts, *, is_query: bool = False, instruction: str | None = None, dim: int | None = None):
        return np.asarray(self._call("embed_batch", list(texts), is_query, instruction, dim), dtype=np.float32)


class RayEncodingScorer(RayScorer):
    """A :class:`RayScorer` over a model that tokenizes locally: a request is tokenized once on a replica
    (``encode_pairs``, also its exact token count) and its token ids are scored (``score_encoded``)."""

    def encode_pairs(self, pairs, *, instruction: str | None = None, max_length: int | None = None) -> list[Encoded]:
        cut = {} if max_length is None else {"max_length": max_length}  # see qrank.server.workers.score_job
        return self._call("encode", [tuple(p) for p in pairs], {"instruction": instruction, **cut})

    def score_encoded(self, encoded) -> np.ndarray:
        return np.asarray(self._call("score_encoded", list(encoded)), dtype=np.float32)


class RayEncodingEmbeddingModel(RayEmbeddingModel):
    """A :class:`RayEmbeddingModel` over a model that tokenizes locally (see :class:`RayEncodingScorer`)."""

    def encode_texts(self, texts, *, is_query: bool = False, instruction: str | None = None,
                     max_length: int | None = None) -> list[Encoded]:
        cut = {} if max_length is None else {"max_length": max_length}  # see qrank.server.workers.embed_job
        return self._call("encode", list(texts), {"is_query": is_query, "instruction": instruction, **cut})

    def embed_encoded(self, encoded, *, dim: int | None = None) -> np.ndarray:
        return np.asarray(self._call("embed_encoded", list(encoded), dim), dtype=np.float32)


_RAY_LAYERS = {
    ("reranker", False): RayScorer,
    ("reranker", True): RayEncodingScorer,
    ("embedder", False): RayEmbeddingModel,
    ("embedder", True): RayEncodingEmbeddingModel,
}


class QrankIngress:
    """The HTTP front on Ray Serve: qrank's own app over proxies of the model deployments."""

    async def __init__(self, settings: dict, models: list[tuple[str, str]], **handles) -> None:
        from ..embedder import Embedder
        from ..reranker import Reranker
        from ..server.state import ModelPool, ServedModel

        self.settings = Settings.model_validate(settings)
        dist = self.settings.distributed
        # one batch in flight per model would keep a single replica busy at a time: two per replica keep
        # every replica fed while this front forms the next batches
        most = dist.autoscale_max if dist.autoscale_max is not None else dist.replicas
        workers = max(self.settings.server.batch_workers or 1, 2 * most)
        self.settings = self.settings.model_copy(
            update={"server": self.settings.server.model_copy(update={"batch_workers": workers})})
        served = []
        for i, (name, role) in enumerate(models):
            handle = handles[f"m{i}"]
            info = ModelInfo(**(await handle.info.remote()))
            layer = _RAY_LAYERS[(role, bool(await handle.encodes.remote()))]
            proxy = layer(handle, info, retries=dist.retries, timeout_s=dist.call_timeout_s)
            facade = Reranker(proxy) if role == "reranker" else Embedder(proxy)
            served.append(ServedModel(name, role, facade))
        self.pool = ModelPool(served)

    def __serve_build_asgi_app__(self):
        from ..server.app import create_app

        app = create_app(self.settings, pool=self.pool)
        pool = self.pool

        @app.get("/v1/replicas", tags=["health"], summary="Calls answered by each model replica (Ray Serve)")
        def replicas() -> dict:
            return {m.name: m.model.replica_stats() for m in pool.models}

        return app


def build_app(settings: Settings):
    """The Ray Serve application: one deployment per served model plus the HTTP ingress.

    ``serve.run(build_app(settings), name="qrank", route_prefix="/")`` deploys it on a running Ray cluster
    (``qrank serve --ray``; tests/integration/test_ray_serve.py starts a two-node cluster and serves two replicas).
    """
    dist = settings.distributed
    server = settings.server
    sources = [("reranker", s) for s in server.rerankers] + [("embedder", s) for s in server.embedders]
    if not sources:
        raise InvalidInput("server.rerankers", "nothing to serve: give at least one --reranker or --embedder")
    names = list(server.served_model_names) or [s for _, s in sources]
    if len(names) != len(sources):
        raise InvalidInput("server.served_model_names", f"{len(names)} names for {len(sources)} models")
    scaling: dict[str, Any]
    if dist.autoscale_max is not None:
        low = dist.autoscale_min if dist.autoscale_min is not None else 1
        if low > dist.autoscale_max:
            raise InvalidInput("distributed.autoscale_min", f"{low} is above autoscale_max {dist.autoscale_max}")
        scaling = {
            "autoscaling_config": {
                "min_replicas": low,
                "max_replicas": dist.autoscale_max,
                "target_ongoing_requests": dist.target_ongoing_requests,
            }
        }
    else:
        scaling = {"num_replicas": dist.replicas}
    payload = settings.model_dump(mode="json")
    replica_cls = serve.deployment(ModelReplica)
    ingress_cls = serve.deployment(serve.ingress()(QrankIngress))
    handles = {}
    for i, ((role, source), name) in enumerate(zip(sources, names)):
        dep = replica_cls.options(
            name=f"model-{i}-{role}",
            ray_actor_options={"num_gpus": dist.num_gpus_per_replica, "num_cpus": dist.num_cpus_per_replica},
            health_check_period_s=10,
            max_ongoing_requests=max(dist.replica_batch_size * 2, 16),
            **scaling,
        )
        handles[f"m{i}"] = dep.bind(role, source, payload)
    ingress = ingress_cls.options(
        name="ingress", num_replicas=dist.ingress_replicas, ray_actor_options={"num_cpus": _INGRESS_CPUS}
    )
    return ingress.bind(payload, [(n, r) for (r, _), n in zip(sources, names)], **handles)


_INGRESS_CPUS = 0.1  # the ingress only parses and forwards: a tenth of a CPU leaves the cores to the replicas


def _starting_replicas(settings: Settings) -> tuple[int, int]:
    """(models, replicas each model starts with: the fixed count or the autoscaling minimum)."""
    dist = settings.distributed
    models = len(settings.server.rerankers) + len(settings.server.embedders)
    return models, dist.replicas if dist.autoscale_max is None else (
        dist.autoscale_min if dist.autoscale_min is not None else 1
    )


def required_resources(settings: Settings) -> dict[str, float]:
    """Logical CPUs and GPUs the application needs to start: every model at its fixed replica count (or
    its autoscaling minimum) plus the HTTP front.

    >>> required_resources(Settings(server={"rerankers": ["m"]},
    ...                             distributed={"replicas": 2, "num_gpus_per_replica": 1}))
    {'CPU': 2.1, 'GPU': 2.0}
    """
    dist = settings.distributed
    models, replicas = _starting_replicas(settings)
    return {"CPU": round(models * replicas * dist.num_cpus_per_replica + dist.ingress_replicas * _INGRESS_CPUS, 6),
            "GPU": round(models * replicas * dist.num_gpus_per_replica, 6)}


def check_fits(settings: Settings, available: dict[str, float]) -> None:
    """Refuse a deployment the cluster cannot place: Ray Serve would wait for the resources forever.

    >>> check_fits(Settings(server={"rerankers": ["m"]}, distributed={"replicas": 2}), {"CPU": 2.0})
    Traceback (most recent call last):
    qrank.errors.InvalidInput: distributed.num_cpus_per_replica: 2 replicas of 1 model(s) need 2.1 CPUs, the Ray ...
    """
    need = required_resources(settings)
    dist = settings.distributed
    models, replicas = _starting_replicas(settings)
    for kind, field in (("CPU", "num_cpus_per_replica"), ("GPU", "num_gpus_per_replica")):
        have = float(available.get(kind, 0.0))
        if need[kind] > have + 1e-9:
            fits = (have - (dist.ingress_replicas * _INGRESS_CPUS if kind == "CPU" else 0.0)) / max(
                models * replicas, 1
            )
            raise InvalidInput(f"distributed.{field}", f"{replicas} replicas of {models} model(s) need {need[kind]:g} "
                               f"{kind}s, the Ray cluster has {have:g}; lower --{field.replace('_', '-')} "
                               f"(e.g. {max(fits, 0):.2g}) or --replicas, or add nodes")


def run(settings: Settings, *, blocking: bool = True):
    """Start (or join) Ray, deploy qrank on Ray Serve and serve HTTP on ``settings.server.host:port``.

    Blocks until interrupted when ``blocking``; then shuts the application down.
    """
    dist = settings.distributed
    if not ray.is_initialized():
        if dist.ray_address is None:  # the local cluster inherits this environment; the user's values win
            for key, value in SERVE_PATIENCE.items():
                os.environ.setdefault(key, value)
        ray.init(address=dist.ray_address, ignore_reinit_error=True, log_to_driver=False)
    available = ray.cluster_resources()
    try:
        check_fits(settings, available)
    except InvalidInput as exc:
        if dist.ray_address is None:  # a local cluster never grows: waiting would hang forever
            raise
        log.warning("%s (waiting for the cluster to grow, e.g. an autoscaler adding nodes)", exc)
    serve.start(http_options={"host": settings.server.host, "port": settings.server.port})
    handle = serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False)
    log.info("qrank on Ray Serve at http://%s:%s", settings.server.host, settings.server.port)
    if not blocking:
        return handle
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        log.info("shutting down the Ray Serve application")
    finally:
        serve.delete(APP_NAME)
    return None
