"""Dynamic batching: one bounded queue in front of each model, drained by the model's own worker thread(s).

Requests from many clients wait in the queue; the worker takes as many as fit a token budget (waiting at
most ``max_wait`` for company when it was idle), runs them as ONE model call, and hands each request its
share of the answer back on the event loop. The worker forms its next batch the moment it is free, so the
model never waits for the event loop between calls and a busy model batches everything that queued up
meanwhile. A model behind several replicas (Ray Serve) gets several workers, one batch in flight each,
so that every replica has work. A full queue answers :class:`~qrank.errors.Overloaded` at once (the door turns it into
429 + ``Retry-After``); a request whose caller went away leaves the queue at once (freeing its place under
``max_queue``) and is dropped from a batch still being formed, and a batch left with nobody is skipped; when a
model call fails, its requests are retried one by one so that one bad request never fails the others.

>>> import asyncio
>>> async def demo():
...     b = Batcher("double", lambda xs: [2 * x for x in xs], max_tokens=100, max_wait_s=0.001, max_queue=8)
...     await b.start()
...     out = await asyncio.gather(*(b.submit(i, cost=1) for i in range(3)))
...     await b.stop()
...     return out
>>> asyncio.run(demo())
[0, 2, 4]
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import Overloaded
from .errors import ShuttingDown, status_for
from .metrics import Metrics

log = logging.getLogger(__name__)

# Retry-After estimate before the first batch is timed: 50 ms a request (a CPU cross-encoder request of a few
# dozen pairs). It only decides whether an early 429 says 1 s or more; the first timed batches replace it.
_FIRST_SECONDS_PER_REQUEST = 0.05
# weight of the newest batch in the running seconds-per-request average: a load change shows within about
# five batches (1 - 0.8**5 = 67%), while one odd batch moves the estimate by a fifth only
_NEW_BATCH_WEIGHT = 0.2

# ``run`` takes the payloads of one batch and returns one result per payload, in order; a result that is
# an Exception fails only its own request.
RunBatch = Callable[[Sequence[Any]], Sequence[Any]]


class _Place:
    """A place in the queue, held by one request between the door and :meth:`Batcher.submit`."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = True


@dataclass(eq=False)  # identity: a cancelled item is removed from the queue by ``is``, never by its payload
class _Item:
    payload: Any
    cost: int
    size: int
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """A bounded queue plus a worker thread that runs queued requests together.

    ``cost`` (tokens) fills the budget of one call; ``size`` (pairs or texts) is only reported.
    """

    def __init__(
        self,
        name: str,
        run: RunBatch,
        *,
        max_tokens: int,
        max_wait_s: float,
        max_queue: int,
        metrics: Metrics | None = None,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError("a batcher needs at least one worker")
        self.name = name
        self.workers = workers
        self.run = run
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: collections.deque[_Item] = collections.deque()
        self._held = 0  # places held by requests still being tokenized (see place())
        self._cond = threading.Condition()
        self._running: dict[int, list[_Item]] = {}  # the batch each worker has in the model right now
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._seconds_per_request = _FIRST_SECONDS_PER_REQUEST  # running estimate for Retry-After

    # -- caller side (event loop) ----------------------------------------------------------------
    @contextlib.contextmanager
    def place(self) -> Iterator[_Place]:
        """Hold a place in the queue from the door on, before the request is parsed into tokens.

        A full queue (queued requests plus places held) answers Overloaded here, in microseconds, so that a
        request that will be refused never waits for the tokenizer; the place passes to :meth:`submit`
        (``place=``) or is given back when the block ends.
        """
        with self._cond:
            self._refuse_if_full()
            self._held += 1
        held = _Place()
        try:
            yield held
        finally:
            self._give_back(held)

    async def submit(self, payload: Any, *, cost: int, size: int = 1, place: _Place | None = None) -> Any:
        """Queue one request and wait for its result (raises its own error, or Overloaded at once)."""
        item = _Item(payload, max(int(cost), 1), max(int(size), 1), asyncio.get_running_loop().create_future())
        with self._cond:
            if self._closed:
                raise ShuttingDown()
            if place is not None and place.held:
                place.held = False  # its place was kept for it since the door
                self._held -= 1
            else:
                self._refuse_if_full()
            self._queue.append(item)
            self._cond.notify()
        self._depth_changed()
        try:
            return await item.future
        except asyncio.CancelledError:
            # the caller went away: its place in the queue (and in ``max_queue``) is free at once, not when a
            # worker next gets round to skipping it
            self._forget(item)
            raise

    def _forget(self, item: _Item) -> None:
        with self._cond:
            try:
                self._queue.remove(item)  # O(max_queue), only on a cancel
            except ValueError:
                return  # already taken into a batch; the batch drops it before the model call
        self._depth_changed()

    def _refuse_if_full(self) -> None:
        # under self._cond
        if len(self._queue) + self._held >= self.max_queue:
            if self.metrics:
                self.metrics.rejected.labels("queue_full").inc()
            raise Overloaded(
                f"model {self.name!r} has {len(self._queue)} requests queued and {self._held} on their way; "
                "retry later",
                retry_after=self.retry_after(),
            )

    def _give_back(self, place: _Place) -> None:
        with self._cond:
            if place.held:
                place.held = False
                self._held -= 1

    def retry_after(self) -> float:
        """Seconds until the queue has likely drained (at least 1)."""
        waiting = len(self._queue) + self._held + 1
        return max(1.0, math.ceil(self._seconds_per_request * waiting / self.workers))

    @property
    def depth(self) -> int:
        return len(self._queue)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self._threads:
            self._loop = asyncio.get_running_loop()
            for k in range(self.workers):
                suffix = f"-{k}" if self.workers > 1 else ""
                thread = threading.Thread(target=self._work, name=f"qrank-model-{self.name[-24:]}{suffix}", daemon=True)
                thread.start()
                self._threads.append(thread)

    async def stop(self, timeout: float = 0.0) -> None:
        """Refuse new requests, let queued ones finish for up to ``timeout`` seconds, fail the rest."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = time.perf_counter() + timeout
        while (self._queue or any(self._running.values())) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)  # polling the drain: 10 ms is nothing next to a grace period of seconds
        with self._cond:
            leftovers = list(self._queue) + [item for batch in self._running.values() for item in batch]
            self._queue.clear()
        for item in leftovers:  # the worker's late answer for these, if any, finds them done
            if not item.future.done():
                item.future.set_exception(ShuttingDown())
        self._depth_changed()
        for thread in self._threads:
            thread.join(timeout=0.1)  # a call still in the model ends on its own (daemon thread)
        self._threads = []

    # -- the worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            if not batch:
                continue
            started = time.perf_counter()
            results = self._run_isolated([i.payload for i in batch])
            seconds = time.perf_counter() - started
            self._seconds_per_request += _NEW_BATCH_WEIGHT * (seconds / len(batch) - self._seconds_per_request)
            if self.metrics:
                for item in batch:
                    self.metrics.queue_wait.labels(self.name).observe(started - item.queued_at)
                self.metrics.observe_batch(
                    self.name,
                    requests=len(batch),
                    items=sum(i.size for i in batch),
                    tokens=sum(i.cost for i in batch),
                    seconds=seconds,
                )
            try:
                self._loop.call_soon_threadsafe(self._deliver, batch, results)
            except RuntimeError:  # the event loop is gone: nobody waits for these answers
                return
            with self._cond:
                self._running.pop(threading.get_ident(), None)

    def _take(self, batch: list[_Item], tokens: int) -> int:
        """Move queued live items into ``batch`` while they fit the budget (the first one always fits)."""
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # cancelled by a client that went away
                self._queue.popleft()
                continue
            if batch and tokens + item.cost > self.max_tokens:
                break
            batch.append(self._queue.popleft())
            tokens += item.cost
        return tokens

    def _collect(self) -> list[_Item] | None:
        """The next batch (waiting for work), ``[]`` if everything queued was cancelled, None once closed."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            batch: list[_Item] = []
            tokens = self._take(batch, 0)
            if batch:
                # wait for company only while there is room and the oldest request has not waited enough
                deadline = batch[0].queued_at + self.max_wait_s
                while tokens < self.max_tokens and not self._queue and not self._closed:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                    tokens = self._take(batch, tokens)
            batch = [item for item in batch if not item.future.done()]
            self._running[threading.get_ident()] = batch
        self._depth_changed()
        return batch

    def _run_isolated(self, payloads: list[Any]) -> list[Any]:
        """One call for the batch; if it raises, one call per request so only the culprit fails."""
        try:
            results = list(self.run(payloads))
            if len(results) != len(payloads):
                raise RuntimeError(f"batch runner returned {len(results)} results for {len(payloads)} requests")
            return results
        except Exception as exc:
            if len(payloads) == 1:
                if status_for(exc) >= 500:
                    log.warning("model %s failed on a request: %s: %s", self.name, type(exc).__name__, exc)
                return [exc]
            log.warning(
                "model %s failed on a batch of %d (%s); retrying them one by one", self.name, len(payloads), exc
            )
            return [self._run_isolated([p])[0] for p in payloads]

    # -- back on the event loop ------------------------------------------------------------------
    def _deliver(self, batch: list[_Item], results: list[Any]) -> None:
        for item, result in zip(batch, results):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                if self.metrics:
                    self.metrics.failures.labels(self.name, type(result).__name__).inc()
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _depth_changed(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.labels(self.name).set(len(self._queue))
