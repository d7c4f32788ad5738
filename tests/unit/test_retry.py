"""qrank.retry (the one backoff policy, on tenacity) through the Ray layer's real retry path (RayModelProxy._call).

The Ray handle is replaced by a small object that raises Ray's own exception types; the retry loop,
tenacity and the proxy's bookkeeping are the real ones. The HTTP side is tested through loopback
servers in tests/integration/test_remote_pool.py.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from qrank.errors import InvalidInput, QrankError
from qrank.retry import backoff_wait, retrying
from qrank.types import ModelInfo

ray_exceptions = pytest.importorskip("ray.exceptions")


class _Result:
    def __init__(self, outcome):
        self.outcome = outcome

    def result(self, timeout_s=None):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class _Method:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def remote(self, *args):
        self.calls += 1
        return _Result(self.outcomes.pop(0))


class _Handle:
    def __init__(self, outcomes):
        self.score_pairs = _Method(outcomes)


def _proxy(outcomes, retries=3):
    from qrank.distributed.ray_serve import RayScorer

    info = ModelInfo(id="m", kind="cross-encoder", role="reranker", max_length=512, dtype="float32", device="cpu")
    return RayScorer(_Handle(outcomes), info, retries=retries, timeout_s=1.0)


@pytest.fixture
def no_sleep(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("time.sleep", waits.append)  # tenacity sleeps through time.sleep
    return waits


def test_a_dead_replica_is_retried_with_capped_doubling_backoff(no_sleep, caplog):
    died = ray_exceptions.ActorDiedError()
    ok = {"replica": "r2", "result": [0.5, 0.25]}
    proxy = _proxy([died, ray_exceptions.ActorUnavailableError("restarting", None), died, ok], retries=3)
    with caplog.at_level(logging.WARNING, logger="qrank.retry"):
        got = proxy.score_pairs([("q", "d1"), ("q", "d2")])
    assert got.dtype == np.float32 and got.tolist() == [0.5, 0.25]
    assert no_sleep == pytest.approx([0.2, 0.4, 0.8])
    assert proxy.replica_stats() == {"calls_by_replica": {"r2": 1}, "retries": 3}
    assert "retry 3/3" in caplog.text


def test_no_replica_after_the_retries_is_a_qrank_error_without_a_last_pointless_wait(no_sleep):
    proxy = _proxy([ray_exceptions.ActorDiedError()] * 3, retries=2)
    with pytest.raises(QrankError, match="no replica answered after 2 retries"):
        proxy.score_pairs([("q", "d")])
    assert proxy.handle.score_pairs.calls == 3
    assert no_sleep == pytest.approx([0.2, 0.4])


def test_a_model_error_on_a_live_replica_is_not_retried(no_sleep):
    proxy = _proxy([InvalidInput("documents", "too long")])
    with pytest.raises(InvalidInput):
        proxy.score_pairs([("q", "d")])
    assert proxy.handle.score_pairs.calls == 1 and no_sleep == []


def test_backoff_wait_policy():
    class Busy(Exception):
        retry_after = 3.0

    assert [backoff_wait(n, None, backoff_s=0.5, max_backoff_s=3.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert backoff_wait(1, Busy(), backoff_s=0.5, max_backoff_s=10.0) == 3.0
    assert backoff_wait(1, Busy(), backoff_s=0.5, max_backoff_s=1.0) == 1.0
    with pytest.raises(InvalidInput):
        retrying(retries=-1, retry_on=(OSError,))
