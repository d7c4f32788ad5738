"""The batcher and the batch runners without HTTP: budgets, waiting, cancellation, isolation, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")

from qrank.errors import Overloaded  # noqa: E402
from qrank.server.batcher import Batcher  # noqa: E402
from qrank.server.errors import NonFiniteOutput, ShuttingDown  # noqa: E402
from qrank.server.workers import EmbedJob, ScoreJob, embed_runner, score_runner  # noqa: E402


class Recorder:
    """A batch function that records the batches it was given and can be held closed."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, payloads):
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(payloads))
        return [p * 10 for p in payloads]


def run(coro):
    return asyncio.run(coro)


async def _hold_worker(b: Batcher, rec: Recorder):
    """Occupy the worker so that later submissions queue up; returns the blocked task."""
    rec.gate.clear()
    rec.entered.clear()
    task = asyncio.ensure_future(b.submit(0, cost=1))
    await asyncio.to_thread(rec.entered.wait, 10)
    return task


def test_queued_requests_run_together_within_the_token_budget():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, max_tokens=10, max_wait_s=0, max_queue=100)
        await b.start()
        first = await _hold_worker(b, rec)
        tasks = [asyncio.ensure_future(b.submit(i, cost=4)) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        rec.gate.set()
        results = await asyncio.gather(first, *tasks)
        await b.stop()
        return rec.batches, results

    batches, results = run(main())
    assert results == [0, 10, 20, 30, 40, 50]
    # budget 10 with cost 4 each: two per call, in arrival order
    assert batches == [[0], [1, 2], [3, 4], [5]]


def test_a_request_larger_than_the_budget_runs_alone():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, max_tokens=10, max_wait_s=0, max_queue=100)
        await b.start()
        first = await _hold_worker(b, rec)
        tasks = [asyncio.ensure_future(b.submit(i, cost=c)) for i, c in [(1, 50), (2, 3), (3, 3)]]
        await asyncio.sleep(0.05)
        rec.gate.set()
        await asyncio.gather(first, *tasks)
        await b.stop()
        return rec.batches

    assert run(main()) == [[0], [1], [2, 3]]


def test_an_idle_model_waits_at_most_max_wait_for_company():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, max_tokens=100, max_wait_s=0.2, max_queue=100)
        await b.start()
        started = time.perf_counter()
        first = asyncio.ensure_future(b.submit(1, cost=1))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(b.submit(2, cost=1))
        await asyncio.gather(first, second)
        waited = time.perf_counter() - started
        lone_start = time.perf_counter()
        await b.submit(3, cost=1)
        lone = time.perf_counter() - lone_start
        await b.stop()
        return rec.batches, waited, lone

    batches, waited, lone = run(main())
    assert batches == [[1, 2], [3]]  # the second arrived within max_wait and joined the first
    assert lone < 2.0 and lone >= 0.15  # alone, it waited for the deadline, then ran


def test_full_queue_is_refused_at_once():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, max_tokens=100, max_wait_s=0, max_queue=2)
        await b.start()
        first = await _hold_worker(b, rec)
        queued = [asyncio.ensure_future(b.submit(i, cost=1)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as err:
            await b.submit(3, cost=1)
        rec.gate.set()
        out = await asyncio.gather(first, *queued)
        await b.stop()
        return err.value, out

    err, out = run(main())
    assert err.retry_after >= 1 and out == [0, 10, 20]


def test_cancelled_requests_never_reach_the_model():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, max_tokens=100, max_wait_s=0, max_queue=10)
        await b.start()
        first = await _hold_worker(b, rec)
        gone = asyncio.ensure_future(b.submit(7, cost=1))
        kept = asyncio.ensure_future(b.submit(8, cost=1))
        await asyncio.sleep(0.01)
        gone.cancel()  # what a client disconnect does
        rec.gate.set()
        out = await asyncio.gather(first, kept)
        await b.stop()
        return rec.batches, out

    batches, out = run(main())
    assert out == [0, 80] and batches == [[0], [8]]


def test_a_cancelled_request_leaves_the_queue_at_once_and_frees_its_place():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, max_tokens=100, max_wait_s=0, max_queue=2)
        await b.start()
        first = await _hold_worker(b, rec)  # the worker is busy: nothing is taken from the queue
        gone = [asyncio.ensure_future(b.submit(v, cost=1)) for v in (7, 7)]  # equal payloads: removed by identity
        await asyncio.sleep(0.01)
        assert b.depth == 2
        with pytest.raises(Overloaded):
            await b.submit(9, cost=1)
        gone[0].cancel()
        await asyncio.sleep(0)  # the cancel is delivered to submit()
        depth_after_cancel = b.depth
        kept = asyncio.ensure_future(b.submit(8, cost=1))  # the freed place takes a new request
        await asyncio.sleep(0.01)
        gone[1].cancel()
        await asyncio.sleep(0)
        depth_after_both = b.depth
        rec.gate.set()
        out = await asyncio.gather(first, kept)
        await b.stop()
        return depth_after_cancel, depth_after_both, rec.batches, out

    after_one, after_both, batches, out = run(main())
    assert (after_one, after_both) == (1, 1)
    assert out == [0, 80] and batches == [[0], [8]]


def test_a_batch_whose_every_request_was_cancelled_is_skipped():
    async def main():
        rec = Recorder()
        # an idle model waits up to max_wait for company: the requests are taken but not yet run
        b = Batcher("m", rec, max_tokens=100, max_wait_s=0.3, max_queue=10)
        await b.start()
        gone = asyncio.ensure_future(b.submit(5, cost=1))
        await asyncio.sleep(0.05)
        assert b.depth == 0  # taken into the batch being formed
        gone.cancel()
        await asyncio.sleep(0.5)
        assert await b.submit(6, cost=1) == 60
        await b.stop()
        return rec.batches

    assert run(main()) == [[6]]


def test_a_failing_batch_is_retried_one_by_one():
    calls = []

    def flaky(payloads):
        calls.append(list(payloads))
        if "bad" in payloads:
            raise RuntimeError("boom")
        return [p.upper() for p in payloads]

    async def main():
        b = Batcher("m", flaky, max_tokens=100, max_wait_s=0.05, max_queue=10)
        await b.start()
        results = await asyncio.gather(*(b.submit(p, cost=1) for p in ["a", "bad", "c"]), return_exceptions=True)
        await b.stop()
        return results

    results = run(main())
    assert results[0] == "A" and results[2] == "C" and isinstance(results[1], RuntimeError)
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


def test_stop_refuses_new_and_fails_leftovers():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, max_tokens=100, max_wait_s=0, max_queue=10)
        await b.start()
        first = await _hold_worker(b, rec)
        queued = asyncio.ensure_future(b.submit(1, cost=1))
        await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(b.stop(timeout=0.1))
        await asyncio.sleep(0.01)
        with pytest.raises(ShuttingDown):
            await b.submit(2, cost=1)
        await stopping
        rec.gate.set()
        return await asyncio.gather(first, queued, return_exceptions=True)

    first, queued = run(main())
    # the call in flight outlived the grace period and the queued one never started: both are told
    assert isinstance(first, ShuttingDown) and isinstance(queued, ShuttingDown)


def test_score_runner_groups_by_instruction_and_isolates_nan():
    seen = []

    class Model:
        def score_pairs(self, pairs, *, instruction=None):
            seen.append((instruction, len(pairs)))
            return np.array([np.nan if d == "nan" else len(d) for _, d in pairs], dtype=np.float32)

    out = score_runner(Model())(
        [ScoreJob([("q", "ab")], None), ScoreJob([("q", "nan")], "i"), ScoreJob([("q", "abc")], "i")]
    )
    assert sorted(seen, key=str) == sorted([(None, 1), ("i", 2)], key=str)
    assert out[0].tolist() == [2.0] and isinstance(out[1], NonFiniteOutput) and out[2].tolist() == [3.0]


def test_embed_runner_groups_by_kwargs():
    seen = []

    class Model:
        def embed_batch(self, texts, *, is_query=False, instruction=None, dim=None):
            seen.append((is_query, dim, list(texts)))
            v = np.ones((len(texts), dim or 4), dtype=np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    out = embed_runner(Model())([EmbedJob(["a"], dim=2), EmbedJob(["b", "c"]), EmbedJob(["d"], dim=2)])
    assert [o.shape for o in out] == [(1, 2), (2, 4), (1, 2)]
    assert sorted(seen, key=str) == sorted([(False, 2, ["a", "d"]), (False, None, ["b", "c"])], key=str)


def test_several_workers_keep_several_batches_in_flight():
    """A model behind replicas gets one batch in flight per worker; each request still gets its own answer,
    and shutdown fails whatever is still running in any worker."""
    in_flight, peak, lock = [0], [0], threading.Lock()
    release = threading.Event()

    def slow(payloads):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        release.wait(10)
        with lock:
            in_flight[0] -= 1
        return [p * 10 for p in payloads]

    async def main():
        b = Batcher("m", slow, max_tokens=2, max_wait_s=0, max_queue=100, workers=3)
        await b.start()
        tasks = [asyncio.ensure_future(b.submit(i, cost=2)) for i in range(6)]  # one request per batch
        for _ in range(200):
            await asyncio.sleep(0.01)
            if peak[0] == 3:
                break
        seen = peak[0]
        release.set()
        results = await asyncio.gather(*tasks)
        release.clear()
        stuck = asyncio.ensure_future(b.submit(7, cost=2))
        await asyncio.sleep(0.05)
        await b.stop(timeout=0)
        with pytest.raises(ShuttingDown):
            await stuck
        release.set()
        return seen, results

    seen, results = run(main())
    assert seen == 3 and results == [0, 10, 20, 30, 40, 50]
    with pytest.raises(ValueError):
        Batcher("m", slow, max_tokens=2, max_wait_s=0, max_queue=1, workers=0)


def test_places_held_at_the_door_count_against_max_queue():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, max_tokens=100, max_wait_s=0, max_queue=2)
        await b.start()
        first = await _hold_worker(b, rec)
        with b.place() as p1, b.place():
            with pytest.raises(Overloaded):  # two requests still tokenizing fill the queue
                with b.place():
                    pass
            with pytest.raises(Overloaded):
                await b.submit(9, cost=1)  # a request without a place (the probe) sees them too
            kept = asyncio.ensure_future(b.submit(4, cost=1, place=p1))  # p1's place passes to its request
            await asyncio.sleep(0.01)
            assert b.depth == 1
        with b.place():  # the unused place was given back when its block ended
            pass
        rec.gate.set()
        out = await asyncio.gather(first, kept)
        await b.stop()
        return out

    assert run(main()) == [0, 40]
