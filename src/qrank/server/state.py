"""The served models, addressed by public name, each with its batcher; plus the start-up checks.

>>> from qrank import Reranker
>>> reranker = Reranker.from_pretrained("../shared/models/scifact-minilm-ce")
>>> pool = ModelPool.from_models(rerankers={"my-reranker": reranker})
>>> pool.get(None, "reranker").name
'my-reranker'
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput, ModelNotFound, QrankError
from ..models.base import require_count_tokens
from ..settings import Settings
from .batcher import Batcher
from .metrics import Metrics
from .workers import embed_job, embed_runner, score_job, score_runner

log = logging.getLogger(__name__)

ROLES = ("reranker", "embedder")
_A = {"reranker": "a reranker", "embedder": "an embedder"}
_ROUTE_OF = {"reranker": "/v1/rerank or /v1/score", "embedder": "/v1/embeddings"}


@dataclass
class ServedModel:
    """One model behind the server: its public name, its facade (Reranker/Embedder) and its queue."""

    name: str
    role: str
    facade: Any
    batcher: Batcher | None = None

    @property
    def model(self):
        return self.facade.model

    @property
    def info(self):
        return self.facade.info


class ModelPool:
    """The models of one server, in the order given; the first of each role is the default."""

    def __init__(self, models: list[ServedModel]) -> None:
        self.models = models
        self._by_name: dict[str, ServedModel] = {}
        for m in models:
            if m.role not in ROLES:
                raise InvalidInput("role", f"{m.name}: unknown role {m.role!r}")
            if m.name in self._by_name:
                raise InvalidInput(
                    "server.served_model_names", f"two models are served as {m.name!r}; names must be unique"
                )
            require_count_tokens(m.model, m.name)  # budgets and limits need exact counts, never a guess
            self._by_name[m.name] = m

    @classmethod
    def from_models(cls, rerankers: dict[str, Any] | None = None, embedders: dict[str, Any] | None = None) -> ModelPool:
        """A pool of already loaded facades: ``{"public name": Reranker}``, ``{"public name": Embedder}``."""
        models = [ServedModel(n, "reranker", f) for n, f in (rerankers or {}).items()]
        models += [ServedModel(n, "embedder", f) for n, f in (embedders or {}).items()]
        return cls(models)

    @classmethod
    def load(cls, settings: Settings, progress=None) -> ModelPool:
        """Load ``settings.server.rerankers`` and ``.embedders`` (named by ``served_model_names`` if given)."""
        from ..embedder import Embedder
        from ..reranker import Reranker

        server = settings.server
        sources = [("reranker", s) for s in server.rerankers] + [("embedder", s) for s in server.embedders]
        if not sources:
            raise InvalidInput("server.rerankers", "nothing to serve: give at least one --reranker or --embedder")
        names = list(server.served_model_names)
        if names and len(names) != len(sources):
            raise InvalidInput(
                "server.served_model_names",
                f"{len(names)} names for {len(sources)} models; give one per model (rerankers first, then embedders)",
            )
        models = []
        for i, (role, source) in enumerate(sources):
            if progress:
                progress(f"loading {role} {source}")
            facade_cls = Reranker if role == "reranker" else Embedder
            facade = facade_cls.from_pretrained(source, settings=settings)
            models.append(ServedModel(names[i] if names else source, role, facade))
        return cls(models)

    def get(self, name: str | None, role: str) -> ServedModel:
        """The model called ``name`` (default: the first of ``role``); a clear 404 naming ``model`` otherwise."""
        if name is None or name == "":
            for m in self.models:
                if m.role == role:
                    return m
            raise ModelNotFound(f"this server has no {role}; it serves: {self._listing()}")
        m = self._by_name.get(name)
        if m is None:
            raise ModelNotFound(f"model {name!r} is not served here; available: {self._listing()}")
        if m.role != role:
            raise ModelNotFound(f"model {name!r} is {_A[m.role]}, not {_A[role]}; use it with {_ROUTE_OF[m.role]}")
        return m

    def named(self, name: str) -> ServedModel:
        """The model called ``name``, whatever its role; a 404 naming ``model`` that lists what is served."""
        m = self._by_name.get(name)
        if m is None:
            raise ModelNotFound(f"model {name!r} is not served here; available: {self._listing()}")
        return m

    def _listing(self) -> str:
        return ", ".join(f"{m.name} ({m.role})" for m in self.models) or "nothing"

    def check(self, settings: Settings) -> None:
        """Refuse settings under which some valid request could never be served."""
        if not self.models:
            raise InvalidInput("server.rerankers", "nothing to serve: give at least one --reranker or --embedder")
        for m in self.models:
            max_len = int(m.info.max_length)
            if settings.engine.max_batch_tokens < max_len:
                raise InvalidInput(
                    "engine.max_batch_tokens",
                    f"{settings.engine.max_batch_tokens} is below {m.name}'s max_length {max_len}: an input of "
                    "full length "
                    "could never fit one forward pass; raise it or lower models.max_length",
                )
            if batch_budget(settings, m.info) < max_len:
                raise InvalidInput(
                    "server.batch_max_tokens",
                    f"{batch_budget(settings, m.info)} is below {m.name}'s max_length {max_len}; raise it",
                )
            if m.role == "embedder" and not m.info.dim:
                raise InvalidInput("server.embedders", f"{m.name} does not report its dimension")


def batch_workers(settings: Settings, info) -> int:
    """Batches of one model in flight at once.

    On a GPU the next batches are tokenized and queued on the device while one runs, so the GPU never
    waits for the host between batches; on a CPU the host *is* the device and two would only compete.
    Three, measured (H200, 0.6B shape, 32 clients x 100 documents): 0.90 / 0.93 / 0.92 of the in-process
    engine's throughput with 2 / 3 / 4 (1: 0.85 on an H100); more workers make smaller batches, so the
    tail latency at half load grows (p99 427 / 573 / 633 ms).

    >>> from qrank.types import ModelInfo
    >>> batch_workers(Settings(), ModelInfo("m", "k", "reranker", 512, "bfloat16", "cuda:0"))
    3
    >>> batch_workers(Settings(), ModelInfo("m", "k", "reranker", 512, "float32", "cpu"))
    1
    >>> batch_workers(Settings(server={"batch_workers": 3}), ModelInfo("m", "k", "reranker", 512, "float32", "cpu"))
    3
    """
    if settings.server.batch_workers is not None:
        return settings.server.batch_workers
    return 3 if str(info.device).startswith("cuda") else 1


def batch_budget(settings: Settings, info) -> int:
    """Tokens one model call may gather from the queue.

    Big calls are where a GPU engine is most efficient (packing, fewer partial passes), and under load the
    wait is spent queueing anyway; on a CPU a call is slow, so it stays small.

    >>> from qrank.types import ModelInfo
    >>> batch_budget(Settings(), ModelInfo("m", "k", "reranker", 512, "bfloat16", "cuda:0"))
    1048576
    >>> cpu = ModelInfo("m", "k", "reranker", 512, "float32", "cpu")
    >>> batch_budget(Settings(server={"batch_max_tokens": 4096}), cpu)
    4096
    """
    if settings.server.batch_max_tokens is not None:
        return settings.server.batch_max_tokens
    factor = 64 if str(info.device).startswith("cuda") else 4
    return factor * settings.engine.max_batch_tokens


@dataclass
class ServerState:
    """Everything a request handler needs: settings, models, metrics, readiness."""

    settings: Settings
    pool: ModelPool
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = field(default_factory=time.time)
    ready: bool = False
    ready_error: str | None = None
    _last_probe: float = 0.0
    _probe_lock: asyncio.Lock | None = None
    _collections: Any = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start one batcher per model, then prove each model with a real forward pass."""
        s = self.settings.server
        self._loop = asyncio.get_running_loop()
        for m in self.pool.models:
            run = score_runner(m.model) if m.role == "reranker" else embed_runner(m.model)
            m.batcher = Batcher(
                m.name,
                run,
                max_tokens=batch_budget(self.settings, m.info),
                max_wait_s=s.max_wait_ms / 1000.0,
                max_queue=s.max_queue,
                metrics=self.metrics,
                workers=batch_workers(self.settings, m.info),
            )
            await m.batcher.start()
        self._probe_lock = asyncio.Lock()
        await self.probe(force=True)
        if not self.ready:
            raise QrankError(f"a model failed its start-up forward pass: {self.ready_error}")

    async def stop(self) -> None:
        for m in self.pool.models:
            if m.batcher is not None:
                await m.batcher.stop(timeout=min(self.settings.server.shutdown_timeout_s, 5.0))
        if self._collections is not None:
            await asyncio.to_thread(self._collections.close)
            self._collections = None

    def collections(self):
        """The collections behind the search routes (opened on first use; needs the ``index`` extra)."""
        if self._collections is None:
            from .collections import ServerCollections

            assert self._loop is not None, "start() first"
            self._collections = ServerCollections(self.settings, self.pool, self._loop)
        return self._collections

    async def probe(self, force: bool = False) -> bool:
        """Run a tiny request through every model's queue (at most once a second); sets ``ready``."""
        assert self._probe_lock is not None, "start() first"
        async with self._probe_lock:
            if not force and time.monotonic() - self._last_probe < 1.0:
                return self.ready
            try:
                await asyncio.wait_for(self._probe_all(), self.settings.server.ready_timeout_s)
                self.ready, self.ready_error = True, None
            except asyncio.TimeoutError:
                self.ready, self.ready_error = False, f"probe took longer than {self.settings.server.ready_timeout_s}s"
            except Exception as exc:  # any failure means "not ready"; the reason is reported by /ready
                self.ready, self.ready_error = False, f"{type(exc).__name__}: {exc}"
            self._last_probe = time.monotonic()
            return self.ready

    async def _probe_all(self) -> None:
        for m in self.pool.models:
            # the probe takes the path of a real request: encoded at the door, run by the worker
            if m.role == "reranker":
                pairs = [("is the server ready?", "the server is ready")]
                job, counts = await asyncio.to_thread(score_job, m.model, pairs, None)
                scores = await m.batcher.submit(job, cost=sum(counts))
                if len(scores) != 1:
                    raise QrankError(f"{m.name}: probe returned {len(scores)} scores")
            else:
                job, counts = await asyncio.to_thread(
                    embed_job, m.model, ["is the server ready?"], is_query=False, instruction=None, dim=None
                )
                vectors = await m.batcher.submit(job, cost=sum(counts))
                if vectors.shape != (1, m.info.dim):
                    raise QrankError(f"{m.name}: probe returned shape {vectors.shape}")
