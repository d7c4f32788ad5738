"""Run the systems of an evaluation, reuse what is cached, and gather metrics, costs and the depth sweep.

Systems are ``bm25``, ``dense``, ``hybrid`` and any of them followed by ``+rerank``
(``dense+rerank``, ``bm25+rerank``, ``hybrid+rerank``). Each first stage retrieves
``max(depth, largest sweep depth)`` candidates once; a reranked system (:mod:`~qrank.eval.rerank_stage`)
reranks the first ``depth`` of them, and the sweep reuses those scores (scoring only the deeper candidates)
to show where quality stops improving. Unless a sweep is given, it stops at ``depth``
(:func:`~qrank.eval.config.default_sweep`): going deeper costs reranking work nobody asked for.
:meth:`Evaluation.plan` says what a run will compute before it starts.

A two-document collection, BM25 only (``qrank eval`` on SciFact is the same call with more systems):

>>> import tempfile
>>> from qrank.eval.data import load_dataset
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "corpus.jsonl").write_text('{"_id": "d1", "text": "BM25 ranks documents"}\\n'
...                                     '{"_id": "d2", "text": "cats"}\\n')
>>> _ = (d / "queries.jsonl").write_text('{"query": "what is bm25", "relevant": ["d1"]}\\n')
>>> cfg = EvalConfig(systems=["bm25"], depth=2, k=2, sweep=[2])
>>> result = Evaluation(load_dataset(d), cfg, Settings(home=d), progress=False).run()
>>> result["systems"]["bm25"]["ndcg@2"]
1.0
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from ..cache import cache_key, quantization_fields
from ..long_documents import LongDocuments
from ..settings import Settings
from ..types import model_key_name
from . import stages
from .cost import Stopwatch, environment, latency_summary
from .config import RERANK_SUFFIX, EvalConfig, first_stage
from .data import Dataset
from .metrics import compare_runs, evaluate_run, metric_names, run_from_ranking
from .rerank_stage import RerankStage
from .store import ResultStore

log = logging.getLogger(__name__)

# throughput of the shared MiniLM models on 2 CPU cores (../shared/README.md: 5,183 abstracts embedded in
# 213 s; docs/eval-scifact: ~6 s to rerank 100 candidates), for the estimate printed before a run
CPU_EMBED_TEXTS_PER_S = 24.0
CPU_RERANK_PAIRS_PER_S = 17.0
STAGE_VERSION = 1  # bump when a stage's output changes meaning, so old cache entries are not reused


class Evaluation:
    """One evaluation of ``config.systems`` on ``dataset``; :meth:`run` returns everything the report needs.

    Stage results are cached in ``cache_dir`` (default ``<home>/cache/eval``): a re-run with the same
    inputs loads them instead of recomputing, and loads no model it does not need.
    """

    def __init__(
        self,
        dataset: Dataset,
        config: EvalConfig,
        settings: Settings | None = None,
        *,
        cache_dir: Path | None = None,
        use_cache: bool = True,
        progress: bool = True,
        embedder=None,
        reranker=None,
    ) -> None:
        self.ds = dataset
        self.config = config
        self.settings = settings or Settings()
        self.store = ResultStore(Path(cache_dir or self.settings.home / "cache" / "eval"), enabled=use_cache)
        self.progress = progress
        # already-loaded models may be passed in (they must carry ``info`` with id and revision)
        self._embedder_model = embedder
        self._reranker = reranker
        self._embedder = None
        self._cache = False  # not opened yet
        self._stage_results: dict[str, dict] = {}
        self.cached: dict[str, bool] = {}
        self.policies = self._policies()
        self._reranking = RerankStage(dataset, config, self.store, lambda: self.cache, progress=progress)

    def _policies(self) -> dict:
        """``{label: LongDocuments}`` compared by ``--long-documents`` (the settings give chunk sizes etc.)."""
        if self.config.long_documents is None:
            return {}
        from ..long_documents import parse_policies

        return parse_policies(self.config.long_documents, LongDocuments.from_settings(self.settings.models))

    def variants(self) -> list[tuple[str, str, object]]:
        """``(name in the report, system, policy or None)`` for every system evaluated: each +rerank system once
        per ``--long-documents`` policy (``dense+rerank[chunk:max]``)."""
        out = []
        for system in self.config.systems:
            if system.endswith(RERANK_SUFFIX) and self.policies:
                out += [(f"{system}[{label}]", system, p) for label, p in self.policies.items()]
            else:
                out.append((system, system, None))
        return out

    # -------------------------------------------------------------------------------------- models
    def _model_identity(self, role: str) -> dict:
        """What identifies a model's answers in cache keys, read without loading its weights. A local folder is
        named by its content fingerprint, not its path (:func:`~qrank.types.model_key_name`, the live caches'
        rule), so a copy of the folder elsewhere finds the stages its original computed."""
        m = self.settings.models
        # the score cache's fields: stages and scores keyed alike (read from the settings, loaded or not)
        quant = quantization_fields({"method": m.quantization,
                                     "accumulation": "fast" if m.quantization_fast_accumulation else "float32",
                                     "attention": "qk" if m.quantization_fp8_attention else "bfloat16"})
        if self.settings.engine.deterministic:  # batch-invariant scores must not come from batched runs' caches
            quant["deterministic"] = True
        loaded = self._embedder_model if role == "embedder" else self._reranker
        if loaded is not None:
            info = loaded.info
            return {
                "name": model_key_name(info.id, info.revision),
                "revision": info.revision,
                "max_length": info.max_length,
                "dtype": info.dtype,
                "device": info.device,
                "instruction": info.default_instruction,
                **quant,
            }
        from ..models.base import pick_device, resolve_model
        from ..models.registry import detect_kind

        name = self.config.embedder if role == "embedder" else self.config.reranker
        resolved = resolve_model(name, m)
        return {
            "name": model_key_name(name, resolved.revision),
            "revision": resolved.revision,
            "max_length": m.max_length,
            "dtype": m.dtype,
            "device": pick_device(m.device),
            "instruction": m.instruction_for(detect_kind(resolved.config, resolved.path).name),
            **quant,
        }

    @property
    def cache(self):
        """qrank's persistent embedding/score cache (None with ``use_cache=False`` or caching off)."""
        if self._cache is False:
            from ..cache import Cache

            self._cache = Cache.from_settings(self.settings) if self.store.enabled else None
        return self._cache

    @property
    def embedder(self):
        """The embedder behind the cache; ``embedder.embedded`` counts texts the model really encoded."""
        if self._embedder is None:
            from ..cache import CachedEmbedder
            from ..embedder import Embedder

            log.info("loading embedder %s", self.config.embedder)
            model = self._embedder_model or Embedder.from_pretrained(self.config.embedder, settings=self.settings)
            self._embedder = CachedEmbedder(model, self.cache)
        return self._embedder

    @property
    def reranker(self):
        if self._reranker is None:
            from ..reranker import Reranker

            log.info("loading reranker %s", self.config.reranker)
            # raw scores always: --calibrate fits on them, and cached stages are keyed without any calibration
            self._reranker = Reranker.from_pretrained(self.config.reranker, settings=self.settings, calibrated=False)
        return self._reranker

    # -------------------------------------------------------------------------------------- stages
    def _key(self, stage: str) -> dict:
        """Everything a first stage's ranking depends on (its depth is kept in the value: a cached
        ranking at least as deep as needed is reused, cut)."""
        c, ds = self.config, self.ds
        base = {
            "v": STAGE_VERSION,
            "stage": stage,
            "corpus": ds.corpus_fingerprint(),
            "queries": ds.queries_fingerprint(),
        }
        if stage == "bm25":
            return {**base, "stopwords": c.bm25_stopwords}
        if stage == "dense":
            return {**base, "embedder": self._model_identity("embedder")}
        if stage == "hybrid":
            return {**base, "bm25": self._key("bm25"), "dense": self._key("dense"), "rrf_k": self.settings.index.rrf_k}
        raise AssertionError(stage)

    def stage(self, name: str) -> dict:
        """A first stage's result (``bm25``, ``dense``, ``hybrid``): from memory, the cache, or computed now."""
        if name in self._stage_results:
            return self._stage_results[name]
        depth = self.config.retrieve_depth
        key = self._key(name)
        result = self.store.get(key)
        if result is not None and result.get("depth", 0) < depth:
            result = None  # cached, but not deep enough
        self.cached[name] = result is not None
        if result is None:
            log.info("computing stage %s (depth %d)", name, depth)
            result = self._compute(name, depth)
            result.update(depth=depth, measured_at=time.strftime("%Y-%m-%d %H:%M:%S"))
            self.store.put(key, result)
        else:
            log.info("stage %s loaded from the cache (measured %s)", name, result.get("measured_at"))
        self._stage_results[name] = result
        return result

    def _compute(self, name: str, depth: int) -> dict:
        c = self.config
        if name == "bm25":
            fingerprint = cache_key([self.ds.corpus_fingerprint(), c.bm25_stopwords]).hex()
            index_dir = self.store.root / "bm25" / fingerprint[:24]
            if not self.store.enabled:  # a saved index would be reused; build a fresh one instead
                index_dir = Path(tempfile.mkdtemp(prefix="qrank-eval-bm25-"))
            return stages.bm25_stage(self.ds, depth, index_dir, stopwords=c.bm25_stopwords, progress=self.progress)
        if name == "dense":
            # queries skip the cache (their latency must be real); the corpus goes through it
            return stages.dense_stage(
                self.ds, depth, self.embedder.embedder, self._corpus_vectors, progress=self.progress
            )
        return stages.hybrid_stage(
            self.ds, depth, self.stage("bm25"), self.stage("dense"), rrf_k=self.settings.index.rrf_k
        )

    def _reranker_for(self, policy):
        """The reranker (raw scores) under ``policy``, or as loaded when None."""
        if policy is None:
            return self.reranker
        from ..reranker import Reranker

        base = self.reranker
        return Reranker(base.model, instruction=base.instruction, long_documents=policy)

    def rerank_system(self, system: str, policy=None, name: str | None = None) -> dict:
        """Timings and scores of a ``+rerank`` system (under a long-document ``policy``, when given):
        ``latency_ms`` (reranking at ``depth``, per timed query), ``sweep_latency_ms`` ``{d: {qid: ms}}``,
        ``scores`` to the deepest depth (whether they came from the store: ``self.cached[name]``); with a
        policy also ``long_documents`` (pairs the policy scores at ``depth`` and the share of document tokens
        the model saw)."""
        first_name = first_stage(system)
        name = name or system
        first = self.stage(first_name)
        ident = self._rerank_ident(system, policy)
        out, all_cached = self._reranking.run(first, ident, lambda: self._reranker_for(policy), name)
        self.cached[name] = all_cached and self.cached.get(first_name, False)
        if policy is not None:
            out["long_documents"] = self._reranking.coverage(first, policy, ident, lambda: self.reranker)
        return out

    def _rerank_ident(self, system: str, policy=None) -> dict:
        first_name = first_stage(system)
        ident = {"v": STAGE_VERSION, "first": self._key(first_name), "reranker": self._model_identity("reranker")}
        if policy is None:  # the policy the reranker runs under: a passed-in one's, else the settings'
            policy = (self._reranker.long_documents if self._reranker is not None
                      else LongDocuments.from_settings(self.settings.models))
        if policy != LongDocuments():  # left out for the default, so stages cached before policies stay valid
            # every setting of the policy changes scores (chunk size, overlap, aggregate, top_k, caps)
            ident["long_documents"] = asdict(policy)
            # stages of a policy scored before 2026-12-08 read plain scores for their untimed queries (318e9cd)
            ident["policy_scores"] = 2
        return ident

    def plan(self) -> dict:
        """What :meth:`run` will compute, read from the stage cache without loading a model: texts to embed,
        pairs to score (timed, then untimed; upper bounds, since qrank's score cache may hold some), and the
        time they take at the CPU rates measured here (``*_per_s``; a GPU is much faster)."""
        c, n_q = self.config, len(self.ds.queries)
        needed = {first_stage(s) for s in c.systems}
        if "hybrid" in needed:
            needed |= {"bm25", "dense"}
        embed = 0
        if "dense" in needed:
            saved = self.store.get(self._key("dense"))
            if saved is None or saved.get("depth", 0) < c.retrieve_depth:
                embed = len(self.ds.doc_ids) + n_q
        timed = untimed = 0
        for _, system, policy in self.variants():
            if system.endswith(RERANK_SUFFIX):
                t, u = self._reranking.pending(self._rerank_ident(system, policy))
                timed, untimed = timed + t, untimed + u
        seconds = embed / CPU_EMBED_TEXTS_PER_S + (timed + untimed) / CPU_RERANK_PAIRS_PER_S
        return {"texts_to_embed": embed, "pairs_timed": timed, "pairs_untimed": untimed,
                "embed_per_s": CPU_EMBED_TEXTS_PER_S, "rerank_per_s": CPU_RERANK_PAIRS_PER_S, "cpu_seconds": seconds}

    def _corpus_vectors(self):
        """The corpus matrix (through the embedding cache) and the seconds its encoding took."""
        ident = self._model_identity("embedder")
        embedder = self.embedder

        def encode_window(texts: list[str]):
            # vectors live in qrank's cache; the eval store remembers how long each window took to make
            key = {"v": STAGE_VERSION, "encode_window": ident, "texts": cache_key(texts).hex()}
            before = embedder.embedded
            with Stopwatch() as sw:
                vectors = embedder.embed(texts, is_query=False)
            known = self.store.get(key)
            if embedder.embedded == before and known is not None:
                return vectors, float(known["s"])
            self.store.put(key, {"s": sw.s})
            return vectors, sw.s

        return stages.encode_corpus(self.ds, encode_window, progress=self.progress)

    # -------------------------------------------------------------------------------------- results
    def run(self) -> dict:
        """Compute (or load) every stage, then metrics, costs, the depth sweep and significance tests."""
        c, ds = self.config, self.ds
        names = metric_names(c.k, c.depth)
        systems, per_query, rankings, sweep = {}, {}, {}, {}
        # judgements naming documents the corpus lacks lower every system's recall and nDCG: said beside the figures
        unknown = ds.notes().get("unknown_judged_docs")
        noted = {"unknown_judged_docs": unknown["judgements"]} if unknown else {}
        reranked: dict[str, dict[str, float]] = {q: {} for q in ds.queries}  # {qid: {doc: raw score}}, to calibrate
        for name, system, policy in self.variants():
            first = self.stage(first_stage(system))
            extra = {}
            if system.endswith(RERANK_SUFFIX):
                rr = self.rerank_system(system, policy, name)
                if "long_documents" in rr:
                    extra = {"long_documents": rr["long_documents"]}
                ranking = {
                    q: stages.reranked_ranking(first["ranking"][q], rr["scores"][q], c.depth, c.depth)
                    for q in ds.queries
                }
                latency = [first["latency_ms"][q] + ms for q, ms in rr["latency_ms"].items()]
                peak = rr["peak_rss_mb"]
                sweep[name] = self._reranking.sweep(first, rr, names)
                for q in ds.queries:
                    reranked[q].update((d, rr["scores"][q][d]) for d, _ in first["ranking"][q][: c.depth])
            else:
                ranking = {q: first["ranking"][q][: c.depth] for q in ds.queries}
                latency = [first["latency_ms"][q] for q in ds.queries]
                peak = first["peak_rss_mb"]
            cached = self.cached.get(name, False)
            ev = evaluate_run(ds.qrels, run_from_ranking(ranking), names)
            systems[name] = {
                **ev["mean"],
                **latency_summary(latency),
                "index_time_s": first["index_time_s"],
                "peak_rss_mb": peak,
                "queries": len(ds.queries),
                "latency_queries": len(latency),
                "cached": cached,
                **noted,
                **extra,
            }
            per_query[name] = ev["per_query"]
            rankings[name] = ranking
        significance = compare_runs(
            ds.qrels, {s: run_from_ranking(r) for s, r in rankings.items()}, names, test=c.test, max_p=c.max_p
        )
        out = {
            "config": {**asdict(c), "retrieve_depth": c.retrieve_depth},
            "dataset": ds.summary(),
            "metric_names": names,
            "systems": systems,
            "per_query": per_query,
            "rankings": rankings,
            "sweep": sweep,
            "significance": significance,
            "environment": environment(self.settings),
            "cache": {"dir": str(self.store.root), "stages": dict(self.cached)},
        }
        if c.calibrate:
            out["calibration"] = self._calibration(reranked)
        return out

    def _calibration(self, reranked: dict[str, dict[str, float]]) -> dict:
        """Fit the reranker's calibration on half the queries, judge it on the others (see
        :func:`qrank.eval.calibrate.held_out_calibration`); the section says where the map belongs."""
        from types import SimpleNamespace

        from ..calibration import calibration_path
        from .calibrate import held_out_calibration

        ident = self._model_identity("reranker")
        # the activation is known once a model is loaded (and the layers work puts it in ModelInfo); a fully
        # cached run loads none, and scores that all lie in [0, 1] are then read as sigmoid outputs
        activation = getattr(self._reranker.info, "score_activation", None) if self._reranker is not None else None
        # the map is filed under the model's own name (the key's name is "local" for every local folder)
        name = self._reranker.info.id if self._reranker is not None else self.config.reranker
        model = SimpleNamespace(id=name, revision=ident["revision"])
        _, section = held_out_calibration(
            reranked,
            self.ds.qrels,
            activation=activation,
            seed=self.config.calibration_seed,
            model_id=model.id,
            revision=model.revision,
            fitted_on={"dataset": self.ds.name, "depth": self.config.depth},
        )
        systems = [s for s in self.config.systems if s.endswith(RERANK_SUFFIX)]
        return {**section, "systems": systems, "path": str(calibration_path(self.settings, model))}
