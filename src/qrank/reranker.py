"""The public reranking API: validation, ranking and top-n written once above ``score_pairs``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .calibration import calibrated as calibrate
from .calibration import raw_scores, require_calibration
from .errors import InvalidInput
from .long_documents import DocumentReport, LongDocuments, as_policy, plan
from .models.base import ScoringModel, check_finite, check_scores
from .settings import Settings
from .types import ModelInfo, RerankResult, Span


def check_query(query, field: str = "query") -> str:
    if not isinstance(query, str):
        raise InvalidInput(field, f"must be a string, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInput(field, "must not be empty")
    return query


def check_documents(documents, field: str = "documents") -> list[str]:
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise InvalidInput(field, f"must be a list of strings, got {type(documents).__name__}")
    if len(documents) == 0:
        raise InvalidInput(field, "must not be empty")
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise InvalidInput(f"{field}[{i}]", f"must be a string, got {type(doc).__name__}")
    return list(documents)


def check_top_n(top_n, n: int) -> int:
    if top_n is None:
        return n
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise InvalidInput("top_n", f"must be a positive integer, got {top_n!r}")
    return min(top_n, n)


def check_min_score(min_score) -> float | None:
    """None, or a finite number: results scoring below it are left out."""
    if min_score is None:
        return None
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not math.isfinite(min_score):
        raise InvalidInput("min_score", f"must be a finite number, got {min_score!r}")
    return float(min_score)


def rank_scores(scores: Sequence[float], documents: Sequence[str] | None, top_n: int,
                reports: Sequence[DocumentReport | None] | None = None, *, min_score: float | None = None,
                raw: Sequence[float] | None = None) -> list[RerankResult]:
    """Sort by score, best first (ties keep the caller's order), drop scores below ``min_score``, and cut to
    ``top_n``; ``reports`` (from :mod:`qrank.long_documents`) fill each result's span, chunks, tokens and
    truncated, ``raw`` each result's ``raw_score``.

    >>> [r.index for r in rank_scores([0.1, 0.9, 0.5], None, 2)]
    [1, 2]
    >>> [r.index for r in rank_scores([0.1, 0.9, 0.5], None, 3, min_score=0.5)]
    [1, 2]
    """
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if min_score is not None:  # filtered before the cut: top_n counts results that passed
        order = [i for i in order if scores[i] >= min_score]
    return [result(i, float(scores[i]), documents[i] if documents is not None else None,
                   reports[i] if reports else None, None if raw is None else float(raw[i])) for i in order[:top_n]]


def result(index: int, score: float, document: str | None, report: DocumentReport | None,
           raw_score: float | None = None) -> RerankResult:
    """One result, with what its long-document report says (None: the model gave no layout)."""
    if report is None:
        return RerankResult(index=index, score=score, document=document, raw_score=raw_score)
    return RerankResult(index=index, score=score, document=document, span=Span(*report.span), chunks=report.chunks,
                        tokens=report.tokens, truncated=report.truncated, raw_score=raw_score)


class Reranker:
    """Rerank documents for a query with any scoring model qrank can load.

    >>> rr = Reranker.from_pretrained("../shared/models/scifact-minilm-ce")
    >>> rr.rerank("what is bm25?", ["Cats purr.", "BM25 ranks documents by term statistics."], top_n=1)[0].index
    1
    """

    def __init__(self, model: ScoringModel, *, instruction: str | None = None,
                 long_documents: LongDocuments | str | None = None) -> None:
        self.model = model
        self.instruction = instruction
        # what rerank/score/batch_rerank do with documents longer than the window (see qrank.long_documents)
        self.long_documents = as_policy(long_documents, LongDocuments())
        if self.long_documents.policy == "chunk" and self.long_documents.chunk_tokens is not None:
            # only here: a remote model's info is a request to its server, which a plain construction must not make
            _check_chunks_fit(self.long_documents, getattr(getattr(model, "info", None), "max_length", None))

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        settings: Settings | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        instruction: str | None = None,
        engine: str | None = None,
        quantization: str | None = None,
        quantization_check: bool | None = None,
        quantization_fast_accumulation: bool | None = None,
        quantization_fp8_attention: bool | None = None,
        calibrated: bool | None = None,
        deterministic: bool | None = None,
    ) -> Reranker:
        """Load a Qwen3 reranker or a cross-encoder from a local folder or a hub id.

        ``instruction`` is the Qwen3 reranker's ``<Instruct>`` task (setting ``models.reranker_instruction``);
        cross-encoders take none. ``quantization="fp8"`` (Qwen3, GPUs with FP8 units) is checked against
        bfloat16 at load (docs/quantization.md; ``quantization_check=False`` serves it even below the gate's
        thresholds; ``quantization_fast_accumulation=True``: FP8 products without float32 promotion, faster and a
        little less exact; ``quantization_fp8_attention=True``: attention's ``q k^T`` in FP8 too, faster on long
        documents and less exact); ``quantization="int8"``: cross-encoders on the CPU (opt-in, not exact).
        ``calibrated=True`` (setting ``models.calibrated``) returns P(relevant) through the map that
        ``qrank eval --calibrate`` saved for this model and revision (:mod:`qrank.calibration`); without one it
        is an :class:`~qrank.errors.InvalidInput` naming ``calibrated`` and the expected path.
        ``deterministic=True`` (setting ``engine.deterministic``): a pair's score is bit-identical whatever else is
        in the request or batch (docs/deterministic.md).
        """
        from .models.registry import load_model

        settings = _with_overrides(settings, device=device, dtype=dtype, max_length=max_length,
                                   reranker_instruction=instruction, engine=engine, quantization=quantization,
                                   quantization_check=quantization_check,
                                   quantization_fast_accumulation=quantization_fast_accumulation,
                                   quantization_fp8_attention=quantization_fp8_attention,
                                   calibrated=calibrated, deterministic=deterministic)
        model = load_model(name, "reranker", settings.models, settings.engine)
        if settings.models.calibrated:
            # directly over the backend: every layer and door above (caches, queues, the server) sees P(relevant)
            model = calibrate(model, require_calibration(settings, model.info))
        return cls(model, instruction=instruction, long_documents=LongDocuments.from_settings(settings.models))

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    def _scores(self, pairs: list[tuple[str, str]], instruction: str | None) -> np.ndarray:
        return self._scores_and_raw(pairs, instruction, False)[0]

    def _scores_and_raw(self, pairs: list[tuple[str, str]], instruction: str | None,
                        with_raw: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Checked scores, and with ``with_raw`` the model's raw output behind them (from the same pass)."""
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidInput("instruction", "must be a string")
        if not pairs:
            return np.zeros((0,), dtype=np.float32), (np.zeros((0,), dtype=np.float32) if with_raw else None)
        instruction = instruction or self.instruction
        both = getattr(self.model, "score_and_raw", None) if with_raw else None
        if both is not None:  # a calibrated model: its raw scores cannot be recovered from the probabilities
            scores, raw = both(pairs, instruction=instruction)
            return check_finite(check_scores(scores, len(pairs))), check_scores(raw, len(pairs))
        scores = check_finite(check_scores(self.model.score_pairs(pairs, instruction=instruction), len(pairs)))
        if not with_raw:
            return scores, None
        return scores, np.asarray(raw_scores(scores.tolist(), self.info.score_activation), dtype=np.float32)

    def _document_scores(self, pairs: list[tuple[str, str]], instruction: str | None, long_documents,
                         field: str, with_raw: bool = False
                         ) -> tuple[np.ndarray, list[DocumentReport | None], np.ndarray | None]:
        """Scores of (query, document) pairs under the long-document policy, with each document's report and
        (``with_raw``) its raw score, aggregated over chunks the same way."""
        if instruction is not None and not isinstance(instruction, str):
            raise InvalidInput("instruction", "must be a string")
        if not pairs:
            return np.zeros((0,), dtype=np.float32), [], None
        policy = as_policy(long_documents, self.long_documents)
        laid = plan(self.model, pairs, instruction=instruction or self.instruction, policy=policy, field=field)
        scores, raw = self._scores_and_raw(laid.pairs, instruction, with_raw)
        return (*laid.fold(scores), None if raw is None else laid.fold(raw)[0])

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None,
                    long_documents: LongDocuments | str | None = None) -> np.ndarray:
        """float32 scores of ``(query, document)`` pairs in the caller's order (checked, not ranked), long
        documents handled by the reranker's policy (or ``long_documents``).

        >>> rr = Reranker.from_pretrained("../shared/models/scifact-minilm-ce")
        >>> s = rr.score_pairs([("what is bm25?", "Cats purr."), ("what is bm25?", "BM25 ranks documents.")])
        >>> s.dtype, bool(s[1] > s[0])
        (dtype('float32'), True)
        """
        if isinstance(pairs, str) or not isinstance(pairs, Sequence):
            raise InvalidInput("pairs", f"must be a list of (query, document) pairs, got {type(pairs).__name__}")
        checked = []
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise InvalidInput(f"pairs[{i}]", "must be a (query, document) pair of strings")
            checked.append((pair[0], pair[1]))
        return self._document_scores(checked, instruction, long_documents, "pairs")[0]

    def score(self, query: str, documents: Sequence[str], *, instruction: str | None = None,
              long_documents: LongDocuments | str | None = None) -> list[float]:
        """Relevance of each document to ``query``, in the caller's order (``rerank`` tells spans and chunks).

        >>> rr = Reranker.from_pretrained("../shared/models/scifact-minilm-ce")
        >>> [round(s, 2) for s in rr.score("what is bm25?", ["Cats purr.", "BM25 ranks documents."])]
        [0.3, 0.85]
        """
        query = check_query(query)
        documents = check_documents(documents)
        scores = self._document_scores([(query, d) for d in documents], instruction, long_documents, "documents")[0]
        return [float(s) for s in scores]

    def score_documents(self, query: str, documents: Sequence[str], *, instruction: str | None = None,
                        long_documents: LongDocuments | str | None = None) -> list[RerankResult]:
        """Like :meth:`score` (the caller's order), each result with its span, chunks, tokens and truncated,
        e.g. ``rr.score_documents("q", ["short", long_text], long_documents="chunk")[1].span``."""
        query = check_query(query)
        documents = check_documents(documents)
        scores, reports, _ = self._document_scores([(query, d) for d in documents], instruction, long_documents,
                                                   "documents")
        return [result(i, float(s), d, r) for i, (s, d, r) in enumerate(zip(scores.tolist(), documents, reports))]

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        return_documents: bool = True,
        long_documents: LongDocuments | str | None = None,
        min_score: float | None = None,
        return_raw_scores: bool = False,
    ) -> list[RerankResult]:
        """Documents ordered best first, cut to ``top_n``; each result keeps its original ``index``.

        ``min_score`` leaves out results scoring below it (before the ``top_n`` cut, on the returned score:
        P(relevant) for a calibrated reranker). ``return_raw_scores`` fills each result's ``raw_score`` with the
        model's raw output: the uncalibrated score of a calibrated reranker, else the logit behind a sigmoid score.

        ``long_documents`` ("chunk", "truncate", "error" or a :class:`~qrank.long_documents.LongDocuments`)
        overrides the reranker's policy for this call; results say which ``span`` scored and whether the
        document was ``truncated``: ``rr.rerank("q", [long_text], long_documents="chunk")[0].span`` is e.g.
        ``Span(start=5120, end=7342)``, the characters of ``long_text`` whose chunk scored best.
        """
        query = check_query(query)
        documents = check_documents(documents)
        n = check_top_n(top_n, len(documents))
        min_score = check_min_score(min_score)
        scores, reports, raw = self._document_scores([(query, d) for d in documents], instruction, long_documents,
                                                     "documents", bool(return_raw_scores))
        return rank_scores(scores.tolist(), documents if return_documents else None, n, reports, min_score=min_score,
                           raw=None if raw is None else raw.tolist())

    def batch_rerank(
        self,
        queries: Sequence[str],
        documents_list: Sequence[Sequence[str]],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        return_documents: bool = True,
        long_documents: LongDocuments | str | None = None,
        min_score: float | None = None,
        return_raw_scores: bool = False,
    ) -> list[list[RerankResult]]:
        """One ranking per query; all pairs go through the model in one pass (one engine schedule).
        ``min_score`` and ``return_raw_scores`` work as in :meth:`rerank`.

        >>> rr = Reranker.from_pretrained("../shared/models/scifact-minilm-ce")
        >>> docs = ["Cats purr.", "BM25 ranks documents."]
        >>> batches = rr.batch_rerank(["what is bm25?", "do cats purr?"], [docs, docs], top_n=1)
        >>> [[r.index for r in ranked] for ranked in batches]
        [[1], [0]]
        """
        if isinstance(queries, str) or not isinstance(queries, Sequence) or not queries:
            raise InvalidInput("queries", "must be a non-empty list of strings")
        if (
            isinstance(documents_list, str)
            or not isinstance(documents_list, Sequence)
            or len(documents_list) != len(queries)
        ):
            raise InvalidInput("documents_list", "must be a list with one list of documents per query")
        checked = []
        for qi, (q, docs) in enumerate(zip(queries, documents_list)):
            checked.append((check_query(q, f"queries[{qi}]"), check_documents(docs, f"documents_list[{qi}]")))
        min_score = check_min_score(min_score)
        pairs = [(q, d) for q, docs in checked for d in docs]
        # the chunks of every query go through the model in this one pass
        scores, reports, raw = self._document_scores(pairs, instruction, long_documents, "documents",
                                                     bool(return_raw_scores))
        scores = scores.tolist()
        raw = None if raw is None else raw.tolist()
        out, start = [], 0
        for q, docs in checked:
            end = start + len(docs)
            out.append(rank_scores(scores[start:end], docs if return_documents else None,
                                   check_top_n(top_n, len(docs)), reports[start:end], min_score=min_score,
                                   raw=None if raw is None else raw[start:end]))
            start = end
        return out

    def __repr__(self) -> str:
        return f"Reranker({self.info.id!r}, kind={self.info.kind!r}, device={self.info.device!r})"


_MODEL_OVERRIDES = ("device", "dtype", "max_length", "reranker_instruction", "query_task", "query_prompt",
                    "quantization", "quantization_check", "quantization_fast_accumulation",
                    "quantization_fp8_attention", "calibrated")


def _with_overrides(settings: Settings | None, **kw) -> Settings:
    """A copy of ``settings`` with the keyword overrides a facade's ``from_pretrained`` accepts."""
    settings = settings or Settings()
    models = {k: v for k, v in kw.items() if k in _MODEL_OVERRIDES and v is not None}
    engine = {"engine": kw["engine"]} if kw.get("engine") else {}
    if kw.get("deterministic") is not None:
        engine["deterministic"] = bool(kw["deterministic"])
    # validate through the models so that an override out of range fails like a bad env var would
    return settings.model_copy(
        update={
            "models": type(settings.models).model_validate({**settings.models.model_dump(), **models}),
            "engine": type(settings.engine).model_validate({**settings.engine.model_dump(), **engine}),
        }
    )


class QwenReranker(Reranker):
    """The name used in the Qwen3 getting-started guides.

    ``QwenReranker(model_name="Qwen/Qwen3-Reranker-0.6B").rerank("q", ["a", "b"])`` loads the hub model; any
    local folder works the same way:

    >>> rr = QwenReranker(model_name="../shared/models/scifact-minilm-ce")
    >>> rr.rerank("what is bm25?", ["BM25 ranks.", "Cats."])[0].index
    0
    """

    def __init__(
        self, model_name: str = "Qwen/Qwen3-Reranker-0.6B", *, instruction: str | None = None, **kwargs
    ) -> None:
        loaded = Reranker.from_pretrained(model_name, instruction=instruction, **kwargs)
        super().__init__(loaded.model, instruction=instruction)


def _check_chunks_fit(policy: LongDocuments, max_length: int | None) -> None:
    """A ``chunk_tokens`` that fills the whole window can never fit beside a query: refused when the reranker is
    made, not at the first long document (the exact room depends on each query, and is checked per document).

    >>> _check_chunks_fit(LongDocuments(policy="chunk", chunk_tokens=600), 512)
    Traceback (most recent call last):
    qrank.errors.InvalidInput: chunk_tokens: 600 tokens per chunk cannot fit in this reranker's window ...
    >>> _check_chunks_fit(LongDocuments(policy="chunk", chunk_tokens=256), 512)
    """
    if policy.policy == "chunk" and policy.chunk_tokens is not None and max_length and \
            policy.chunk_tokens >= max_length:
        raise InvalidInput("chunk_tokens", f"{policy.chunk_tokens} tokens per chunk cannot fit in this reranker's "
                           f"window of {max_length} tokens beside a query and the template; use fewer, or leave it "
                           "unset to fill what fits")
