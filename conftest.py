"""Repository-wide pytest set-up: offline model loading, and the rule that a skip is a failure.

This file sits at the repository root so that it covers both ``tests/`` and the doctests collected from
``src/qrank`` (``--doctest-modules``).

Skip accounting: a test that skips hides a missing asset, extra or browser as a green run. With
``--strict-skips`` (``.ci/run`` passes it; so does any run with ``CI`` set) the run fails when a test or
module skipped, unless the test carries one of the markers in ``ALLOWED_SKIP_MARKERS`` (``gpu``,
``slow``: they need hardware or time CI does not have) or the skip's reason starts with one of
``ALLOWED_SKIP_PREFIXES`` — the documented way to say a skip is a platform fact (``platform: ...``).
Every skip is listed at the end of the run either way (``-rs`` is in the default options).
"""

from __future__ import annotations

import os
import secrets

import pytest

# never reach a model hub from tests or doctests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tests start servers in threads and subprocesses beside the test process; on 2 cores, torch's
# spinning worker threads oversubscribe the CPU and slow everything many times over
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Ray reads its auth settings when it is first imported, and collection imports it early (the doctests of
# qrank.distributed.ray_serve, tests that use ray.exceptions); the Ray tests' own loopback cluster runs with
# token auth as a real cluster would, so the setting and one token must be in place before any import
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

ALLOWED_SKIP_MARKERS = ("gpu", "slow")
ALLOWED_SKIP_PREFIXES = ("platform:",)


def pytest_addoption(parser):
    parser.addoption(
        "--strict-skips",
        action="store_true",
        default=False,
        help="fail the run on a skip that is neither gpu/slow-marked nor a documented 'platform:' reason",
    )


_CONFIG = None


def pytest_configure(config):
    global _CONFIG
    _CONFIG = config
    config._qrank_unexpected_skips = []


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _allowed(reason: str, item=None) -> bool:
    if reason.startswith(ALLOWED_SKIP_PREFIXES):
        return True
    return item is not None and any(item.get_closest_marker(m) for m in ALLOWED_SKIP_MARKERS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _reason(report)
        if not _allowed(reason, item):
            item.config._qrank_unexpected_skips.append(f"{item.nodeid}: {reason}")


def pytest_collectreport(report):
    # a module that skips while being collected (pytest.importorskip at module level) skips all its tests
    if report.skipped:
        reason = _reason(report)
        if not _allowed(reason):
            _CONFIG._qrank_unexpected_skips.append(f"{report.nodeid}: {reason}")


def _strict(config) -> bool:
    return bool(config.getoption("--strict-skips") or os.environ.get("CI"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = config._qrank_unexpected_skips
    if skipped and _strict(config):
        terminalreporter.section("unexpected skips (a failure under --strict-skips)", red=True)
        for line in skipped:
            terminalreporter.line(line)


def pytest_sessionfinish(session, exitstatus):
    if session.config._qrank_unexpected_skips and _strict(session.config) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
