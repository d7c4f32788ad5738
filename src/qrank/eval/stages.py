"""The stages a system is made of, each run one query at a time so that its latency is what a user sees.

* ``bm25``   — :class:`qrank.index.bm25.BM25Index` (bm25s, English stopwords) over ``title + " " + text``
* ``dense``  — one vector per document (truncated at the embedder's max length: the MTEB protocol),
  through the persistent embedding cache (:mod:`qrank.cache`), in an exact inner-product FAISS index
  (:func:`qrank.index.faiss_index.build_index`); each query is embedded then searched
* ``hybrid`` — reciprocal rank fusion (:func:`qrank.index.fusion.rrf`) of the two rankings above
* ``rerank`` — the reranker scores a first stage's top candidates: timed one query at a time on the model
  (:func:`time_reranking`), and for quality through the score cache (:func:`rerank_scores`)

A first stage returns a JSON-ready dict (so it can be cached): ``ranking`` ``{qid: [[doc_id, score], …]}``
best first, ``latency_ms`` ``{qid: ms}``, ``index_time_s``, ``peak_rss_mb``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..cache import Cache, CachedReranker, score_key, text_tag
from .cost import PeakMemory, Stopwatch
from .data import Dataset

log = logging.getLogger(__name__)

ENCODE_WINDOW = 512  # documents encoded (and cached) at a time: an interrupted encoding resumes from here
SCORE_WINDOW = 256  # (query, document) pairs looked up / scored per step of the untimed scoring


def _tqdm(progress: bool):
    from ..progress import progress as progress_bar

    return lambda it=None, **kw: progress_bar(it, enabled=progress, **kw)


def bm25_stage(
    ds: Dataset, depth: int, index_dir: Path, *, stopwords: str | None = "en", progress: bool = True
) -> dict:
    """Index the corpus with BM25 and search every query for its ``depth`` best documents."""
    from ..index.bm25 import BM25Index

    tqdm = _tqdm(progress)
    with PeakMemory() as mem:
        index = BM25Index(index_dir, stopwords=stopwords)
        with Stopwatch() as sw:
            # the folder is keyed by the corpus, so one generation (0) names this corpus's index
            index.ensure(0, lambda: zip(ds.doc_ids, ds.doc_texts, strict=False))
        ranking, latency = {}, {}
        for qid, text in tqdm(ds.queries.items(), desc="bm25: search", unit="q", total=len(ds.queries)):
            t0 = time.perf_counter()
            hits = index.search(text, depth)
            latency[qid] = (time.perf_counter() - t0) * 1000
            ranking[qid] = [[d, float(s)] for d, s in hits]
    return {"ranking": ranking, "latency_ms": latency, "index_time_s": sw.s, "peak_rss_mb": mem.peak_mb}


def encode_corpus(
    ds: Dataset, encode_window: Callable[[list[str]], tuple[np.ndarray, float]], *, progress: bool = True
) -> tuple[np.ndarray, float]:
    """Corpus vectors, ``ENCODE_WINDOW`` documents at a time, and the total encoding seconds.

    ``encode_window(texts)`` returns a window's vectors and the seconds encoding it took; the caller
    sends it through the embedding cache, so an interrupted encoding resumes at the first missing window.
    """
    tqdm = _tqdm(progress)
    parts, total = [], 0.0
    n = len(ds.doc_texts)
    bar = tqdm(total=n, desc="dense: encode corpus", unit="doc")
    for start in range(0, n, ENCODE_WINDOW):
        texts = ds.doc_texts[start : start + ENCODE_WINDOW]
        vectors, seconds = encode_window(texts)
        parts.append(vectors)
        total += seconds
        bar.update(len(texts))
    bar.close()
    return np.concatenate(parts).astype(np.float32), total


def dense_stage(
    ds: Dataset, depth: int, embedder, corpus_vectors: Callable[[], tuple[np.ndarray, float]], *, progress: bool = True
) -> dict:
    """Search every query in an exact FAISS index of the corpus vectors.

    ``corpus_vectors()`` returns the ``(n_docs, dim)`` matrix and the seconds its encoding took.
    Queries go to the model directly (never the cache) so that their latency is real.
    """
    from ..index.faiss_index import build_index
    from ..settings import IndexSettings

    tqdm = _tqdm(progress)
    with PeakMemory() as mem:
        vectors, encode_s = corpus_vectors()
        with Stopwatch() as sw:
            index = build_index(vectors.shape[1], "flat", IndexSettings())
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(len(vectors), dtype=np.int64))
        k = min(depth, len(ds.doc_ids))
        ranking, latency = {}, {}
        for qid, text in tqdm(ds.queries.items(), desc="dense: search", unit="q", total=len(ds.queries)):
            t0 = time.perf_counter()
            qv = embedder.embed(text, is_query=True).reshape(1, -1)
            scores, ids = index.search(qv, k)
            latency[qid] = (time.perf_counter() - t0) * 1000
            ranking[qid] = [[ds.doc_ids[int(i)], float(s)] for i, s in zip(ids[0], scores[0], strict=False) if i >= 0]
    return {"ranking": ranking, "latency_ms": latency, "index_time_s": encode_s + sw.s, "peak_rss_mb": mem.peak_mb}


def hybrid_stage(ds: Dataset, depth: int, bm25: dict, dense: dict, *, rrf_k: int = 60) -> dict:
    """Fuse the BM25 and dense rankings of each query by reciprocal rank fusion.

    Latency adds both first stages (they run one after the other for a query) and the fusion.
    """
    from ..index.fusion import rrf

    ranking, latency = {}, {}
    for qid in ds.queries:
        t0 = time.perf_counter()
        fused = rrf([[d for d, _ in bm25["ranking"][qid]], [d for d, _ in dense["ranking"][qid]]], k=rrf_k)[:depth]
        fuse_ms = (time.perf_counter() - t0) * 1000
        latency[qid] = bm25["latency_ms"][qid] + dense["latency_ms"][qid] + fuse_ms
        ranking[qid] = [[d, float(s)] for d, s in fused]
    return {
        "ranking": ranking,
        "latency_ms": latency,
        "index_time_s": bm25["index_time_s"] + dense["index_time_s"],
        "peak_rss_mb": max(bm25["peak_rss_mb"], dense["peak_rss_mb"]),
    }


def time_reranking(
    ds: Dataset,
    base: dict,
    reranker,
    cache: Cache | None,
    depth: int,
    qids: list[str],
    *,
    done: dict[str, float] | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    known: dict | None = None,
    desc: str = "rerank",
    progress: bool = True,
) -> dict[str, float]:
    """Rerank each query's first ``depth`` candidates on the model itself (never the cache), one query at a
    time, and return ``{qid: ms}``.

    ``done`` holds latencies measured by an interrupted run (those queries are skipped);
    ``checkpoint(latencies)`` is called every few queries so that an interruption loses little. Scores
    go into ``cache`` (and ``known`` ``{(query, doc_text): score}``) for the quality computation.
    """
    tqdm = _tqdm(progress)
    text_of = dict(zip(ds.doc_ids, ds.doc_texts, strict=False))
    latency = dict(done or {})
    todo = [q for q in qids if q not in latency]
    for n, qid in enumerate(tqdm(todo, desc=f"{desc}: top-{depth}, timed", unit="q"), 1):
        query = ds.queries[qid]
        docs = [text_of[d] for d, _ in base["ranking"][qid][:depth]]
        if not docs:
            latency[qid] = 0.0
            continue
        t0 = time.perf_counter()
        got = reranker.score(query, docs)
        latency[qid] = (time.perf_counter() - t0) * 1000
        if known is not None:
            known.update({(query, t): float(s) for t, s in zip(docs, got, strict=False)})
        # a score is cached under its (query, document) key only when it is that pair's plain score: a chunked
        # or capped document's aggregate must never answer a later plain request (its chunks are cached by text)
        if cache is not None and _plain_policy(reranker):  # quality, the sweep, other systems and later runs reuse
            cache.put_many(
                "score",
                [
                    (
                        score_key(reranker.info, _instruction(reranker), query, t),
                        text_tag(t),
                        np.float32(s).astype("<f4").tobytes(),
                    )
                    for t, s in zip(docs, got, strict=False)
                ],
            )
        if checkpoint is not None and (n % 10 == 0 or n == len(todo)):  # an interrupted run loses <= 10 queries
            checkpoint(dict(latency))
    return latency


def rerank_scores(
    ds: Dataset,
    base: dict,
    reranker,
    cache: Cache | None,
    depth: int,
    *,
    known: dict | None = None,
    desc: str = "rerank",
    progress: bool = True,
) -> tuple[dict[str, dict[str, float]], int]:
    """Reranker scores of each query's first ``depth`` candidates: ``{qid: {doc_id: score}}``.

    Pairs in ``known`` or the cache cost nothing; the rest are scored (untimed) and cached. Returns the
    scores and how many pairs the model scored.
    """
    tqdm = _tqdm(progress)
    text_of = dict(zip(ds.doc_ids, ds.doc_texts, strict=False))
    known = known if known is not None else {}
    pairs = [(qid, d) for qid in ds.queries for d, _ in base["ranking"][qid][:depth]]
    todo = [(ds.queries[q], text_of[d]) for q, d in pairs if (ds.queries[q], text_of[d]) not in known]
    scored = 0
    if todo:
        # the reranker itself (not a lazy stand-in): wrapped as a bare model, its long-document policy ran under the
        # cache, which keyed each capped or chunked score by the whole document's text, so a policy stage read the
        # plain scores an earlier stage cached (SciFact truncate@64: 0.7024 instead of 0.6061) and wrote its own
        # where plain ones belong
        facade = reranker.resolve() if callable(getattr(type(reranker), "resolve", None)) else reranker
        cached = CachedReranker(facade, cache)  # counts the pairs that reach the model (the cache's misses)
        bar = tqdm(total=len(todo), desc=f"{desc}: scores to depth {depth}", unit="pair")
        for i in range(0, len(todo), SCORE_WINDOW):
            part = todo[i : i + SCORE_WINDOW]
            known.update(zip(part, cached.score_pairs(part).tolist(), strict=False))
            bar.update(len(part))
        bar.close()
        scored = cached.scored
    scores: dict[str, dict[str, float]] = {q: {} for q in ds.queries}
    for q, d in pairs:
        scores[q][d] = float(known[(ds.queries[q], text_of[d])])
    return scores, scored


def _plain_policy(reranker) -> bool:
    policy = getattr(reranker, "long_documents", None)
    return policy is None or (policy.policy != "chunk" and policy.max_tokens_per_doc is None)


def _instruction(reranker) -> str | None:
    # the same effective instruction cached_scores keys on, so both paths share entries
    return getattr(reranker, "instruction", None) or reranker.info.default_instruction


def reranked_ranking(base_ranking: list, scores: dict[str, float], d: int, depth: int) -> list[list]:
    """The ranking a reranker at depth ``d`` gives: the first ``d`` candidates by reranker score (ties by
    first-stage order), then the rest of the first stage's list, all cut to ``depth``.

    >>> reranked_ranking([["a", 3.0], ["b", 2.0], ["c", 1.0]], {"a": 0.1, "b": 0.9, "c": 0.5}, 2, 3)
    [['b', 0.9], ['a', 0.1], ['c', 1.0]]
    """
    head = base_ranking[:d]
    order = sorted(range(len(head)), key=lambda i: (-scores[head[i][0]], i))
    out = [[head[i][0], float(scores[head[i][0]])] for i in order]
    return (out + [list(x) for x in base_ranking[d:]])[:depth]
