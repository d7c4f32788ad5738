"""What an evaluation compares: the system names, the depths, and :class:`EvalConfig`, checked when it is made.

>>> cfg = EvalConfig(systems="bm25,dense+rerank", embedder="e", reranker="r", depth=50)
>>> cfg.systems, cfg.sweep, cfg.retrieve_depth
(['bm25', 'dense+rerank'], [10, 20, 50], 50)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput

FIRST_STAGES = ("bm25", "dense", "hybrid")
RERANK_SUFFIX = "+rerank"
DEFAULT_SWEEP = (10, 20, 50, 100, 200)
DEFAULT_DEPTH = 20  # 300 SciFact queries x 20 = 6,000 pairs: minutes on a laptop CPU (depth 100: ~30 min on 2 cores)


def parse_systems(spec: str | list[str]) -> list[str]:
    """Validate a comma-separated list of system names (order kept, duplicates dropped).

    >>> parse_systems("bm25, dense+rerank")
    ['bm25', 'dense+rerank']
    >>> parse_systems("bm26")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: systems: unknown system 'bm26' ...
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise InvalidInput("systems", "name at least one system")
    known = [*FIRST_STAGES, *(s + RERANK_SUFFIX for s in FIRST_STAGES)]
    for name in names:
        if name not in known:
            raise InvalidInput("systems", f"unknown system {name!r} (known: {', '.join(known)})")
    return list(dict.fromkeys(names))


def default_sweep(depth: int) -> list[int]:
    """The depths compared when none are asked for: the usual ones up to ``depth``, and ``depth`` itself.

    >>> default_sweep(20)
    [10, 20]
    >>> default_sweep(75)
    [10, 20, 50, 75]
    """
    return sorted({d for d in DEFAULT_SWEEP if d <= depth} | {depth})


def first_stage(system: str) -> str:
    """The first stage a system's candidates come from.

    >>> first_stage("hybrid+rerank"), first_stage("bm25")
    ('hybrid', 'bm25')
    """
    return system[: -len(RERANK_SUFFIX)] if system.endswith(RERANK_SUFFIX) else system


@dataclass
class EvalConfig:
    """What to evaluate and how deep; everything else comes from :class:`~qrank.settings.Settings`."""

    systems: list[str]
    embedder: str | None = None
    reranker: str | None = None
    depth: int = DEFAULT_DEPTH
    k: int = 10
    sweep: list[int] | None = None  # None: default_sweep(depth), never deeper than depth
    sweep_queries: int = 20
    latency_queries: int | None = None
    test: str = "student"
    max_p: float = 0.05  # the usual significance level
    bm25_stopwords: str | None = "en"
    calibrate: bool = False  # fit the reranker's score → P(relevant) map on half the queries, judge it on the rest
    calibration_seed: int = 0
    # policies compared on every +rerank system, e.g. "truncate,chunk:max" (qrank.long_documents.parse_policies):
    # each makes a system ``dense+rerank[chunk:max]``; None reranks under the settings' policy alone
    long_documents: str | None = None

    def __post_init__(self) -> None:
        self.systems = parse_systems(self.systems)
        for name in ("depth", "k", "sweep_queries", "latency_queries"):
            value = getattr(self, name)
            if name == "latency_queries" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(name, f"must be a positive integer, got {value!r}")
        if self.k > self.depth:
            raise InvalidInput("k", f"must not exceed depth ({self.depth}), got {self.k}")
        if self.sweep is None:
            self.sweep = default_sweep(self.depth)
        bad = [d for d in self.sweep if isinstance(d, bool) or not isinstance(d, int) or d < 1]
        if bad:
            raise InvalidInput("sweep", f"depths must be positive integers, got {bad[0]!r}")
        self.sweep = sorted(set(self.sweep))
        if self.test not in ("student", "fisher"):
            raise InvalidInput("test", f"must be 'student' or 'fisher', got {self.test!r}")
        stages_needed = {first_stage(s) for s in self.systems}
        if stages_needed & {"dense", "hybrid"} and not self.embedder:
            raise InvalidInput("embedder", "the dense and hybrid systems need an embedder (--embedder)")
        if any(s.endswith(RERANK_SUFFIX) for s in self.systems) and not self.reranker:
            raise InvalidInput("reranker", "the +rerank systems need a reranker (--reranker)")
        if self.calibrate and not any(s.endswith(RERANK_SUFFIX) for s in self.systems):
            raise InvalidInput("calibrate", "calibration fits a reranker's scores: add a +rerank system")
        if self.long_documents is not None:
            from ..long_documents import parse_policies

            parse_policies(self.long_documents)  # a bad spec fails before any model loads
            if not self.reranked:
                raise InvalidInput("long_documents", "policies apply to a reranker: add a +rerank system")

    @property
    def retrieve_depth(self) -> int:
        """How many candidates each first stage returns: enough for the depth and for the sweep (always,
        so that adding a reranked system later reuses the cached first stages)."""
        return max([self.depth, *self.sweep])

    @property
    def reranked(self) -> bool:
        return any(s.endswith(RERANK_SUFFIX) for s in self.systems)
