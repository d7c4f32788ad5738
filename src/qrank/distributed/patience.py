"""Ray Serve timeouts that suit small or busy machines (importable without Ray).

Ray Serve kills an HTTP proxy that is not ready within 5 s and declares it unhealthy after 10 s without
an answer; on a loaded 2-core machine a proxy can take longer than that to start, and Serve then fails
``serve.start``. These are read from the environment by the Ray processes when they start, so they are
applied to a cluster qrank starts itself (and to the test cluster); an existing cluster keeps its own.

>>> SERVE_PATIENCE["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"]
'60'
"""

from __future__ import annotations

SERVE_PATIENCE: dict[str, str] = {
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
}
