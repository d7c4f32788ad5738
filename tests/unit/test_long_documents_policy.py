"""Long-document policy rules (qrank.long_documents) over a word-tokenizing model: windows, aggregation,
bad input, limits, the cache, and the Python facade's fields. The real tokenizers are in
tests/numerics/test_long_documents_numerics.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

from qrank import Reranker
from qrank.cache import Cache, CachedReranker
from qrank.errors import InvalidInput, TooLarge
from qrank.long_documents import LongDocuments, aggregate, plan, windows
from qrank.models.base import DocumentLayout
from qrank.types import ModelInfo, RerankResult


class WordScorer:
    """One token per whitespace-separated word; the score of a pair is 0.1 per 'gold' word its document part
    holds after the model's own truncation (so a cut or a chunk shows in the score). Template: 2 tokens."""

    def __init__(self, max_length: int = 12) -> None:
        self.info = ModelInfo("words", "fake", "reranker", max_length, "float32", "cpu")
        self.calls: list[list[tuple[str, str]]] = []

    def _layout(self, q: str, d: str) -> DocumentLayout:
        words = len(q.split())
        offsets = tuple((m.start(), m.end()) for m in re.finditer(r"\S+", d))
        return DocumentLayout(2 + words, self.info.max_length, words, offsets)

    def document_layouts(self, pairs, *, instruction=None):
        return [self._layout(q, d) for q, d in pairs]

    def score_pairs(self, pairs, *, instruction=None):
        self.calls.append(list(pairs))
        out = []
        for q, d in pairs:
            kept = d.split()[: self._layout(q, d).budget]
            out.append(0.1 * sum(w == "gold" for w in kept))
        return np.array(out, dtype=np.float32)

    def count_tokens(self, pairs, *, instruction=None):
        return [min(2 + len(q.split()) + len(d.split()), self.info.max_length) for q, d in pairs]


LONG = "a b c d e f g h gold gold gold i j k l m gold n"  # 18 words; the query "q" leaves 9 per window


def test_windows_cover_every_token_with_the_overlap():
    assert windows(18, 9, 3) == [(0, 9), (6, 15), (12, 18)]
    assert windows(9, 9, 3) == [(0, 9)]
    for n, size, overlap in [(100, 7, 0), (100, 7, 6), (3, 50, 10), (51, 10, 1)]:
        parts = windows(n, size, overlap)
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(b - a <= size for a, b in parts)
        assert all(nxt[0] == cur[1] - overlap for cur, nxt in zip(parts, parts[1:]))


@pytest.mark.parametrize("how,expected", [("max", (0.9, 1)), ("first", (0.2, 0)), ("mean_top_k", (0.75, 1))])
def test_aggregation_rules(how, expected):
    value, best = aggregate([0.2, 0.9, 0.6, 0.1], how, top_k=2)
    assert (round(value, 6), best) == expected
    assert aggregate([0.5], "mean_top_k", top_k=5) == (0.5, 0)  # k larger than the chunks: all of them


def test_chunk_scores_every_window_and_reports_the_best_span():
    model = WordScorer()
    rr = Reranker(model, long_documents="chunk")
    res = rr.rerank("q", [LONG, "gold"], long_documents=LongDocuments(policy="chunk", chunk_tokens=9, chunk_overlap=2))
    top = res[0]
    assert top.index == 0 and top.chunks == 3 and top.truncated is False and top.tokens == 9 + 9 + 4
    # one model call for every chunk of every document: windows [0, 9), [7, 16), [14, 18) and the short one
    assert [d for _, d in model.calls[0]] == [" ".join(LONG.split()[a:b]) for a, b in [(0, 9), (7, 16), (14, 18)]] + [
        "gold"]
    a, b = top.span
    assert LONG[a:b] == "h gold gold gold i j k l m" and top.score == pytest.approx(0.3)
    assert top.score == pytest.approx(model.score_pairs([("q", LONG[a:b])])[0])
    assert res[1] == RerankResult(index=1, score=pytest.approx(0.1), document="gold", span=(0, 4), chunks=1,
                                  tokens=1, truncated=False)


def test_truncate_reports_the_cut_and_error_names_the_document():
    rr = Reranker(WordScorer())
    top = rr.rerank("q", [LONG])[0]
    assert top.truncated is True and top.chunks == 1 and top.tokens == 9
    assert LONG[: top.span.end] == "a b c d e f g h gold"
    assert top.score == pytest.approx(0.1)
    with pytest.raises(InvalidInput) as exc:
        rr.score("q", ["short", LONG], long_documents="error")
    assert exc.value.field == "documents[1]" and "18 tokens" in str(exc.value) and "9 that fit" in str(exc.value)


def test_max_tokens_per_doc_cuts_the_document_part_only():
    model = WordScorer()
    top = Reranker(model).rerank("q", [LONG], long_documents=LongDocuments(max_tokens_per_doc=3))[0]
    assert model.calls[-1] == [("q", "a b c")] and top.truncated is True and top.span == (0, 5)
    with pytest.raises(InvalidInput) as exc:
        Reranker(model).rerank("a long query", [LONG], long_documents=LongDocuments(max_tokens_per_query=2))
    assert exc.value.field == "query" and "3 tokens" in str(exc.value)


BAD = [
    (dict(policy="chunk", chunk_tokens=10), "chunk_tokens", InvalidInput, "larger than the window"),
    (dict(policy="chunk", chunk_tokens=4, chunk_overlap=4), "chunk_overlap", InvalidInput, "smaller"),
    (dict(policy="chunk", chunk_tokens=0), "chunk_tokens", InvalidInput, "positive"),
    (dict(policy="chunk", chunk_tokens=-3), "chunk_tokens", InvalidInput, "positive"),
    (dict(policy="chunk", chunk_overlap=-1), "chunk_overlap", InvalidInput, "non-negative"),
    (dict(policy="chunk", chunk_overlap=5), "chunk_overlap", InvalidInput, "smaller than the chunk size (5 tokens"),
    (dict(policy="chunk", top_k=0), "chunk_top_k", InvalidInput, "positive"),
    (dict(policy="split"), "long_documents", InvalidInput, "one of"),
    (dict(aggregate="median"), "chunk_aggregate", InvalidInput, "one of"),
    (dict(max_tokens_per_doc=0), "max_tokens_per_doc", InvalidInput, "positive"),
    (dict(policy="chunk", chunk_tokens=2, chunk_overlap=0, max_chunks_per_document=5), "documents[0]", TooLarge,
     "max_chunks_per_document=5"),
    (dict(policy="chunk", chunk_tokens=6, chunk_overlap=0, max_chunks_per_request=2), "documents", TooLarge,
     "max_chunks_per_request=2"),
    (dict(policy="chunk", max_chars_per_document=20), "documents[0]", TooLarge, "max_chars_per_document=20"),
]


@pytest.mark.parametrize("options,field,error,words", BAD)
def test_bad_input_names_the_field(options, field, error, words):
    with pytest.raises(error) as exc:
        Reranker(WordScorer()).rerank("q", [LONG], long_documents=LongDocuments(**options))
    assert exc.value.field == field and words in str(exc.value)


def test_chunks_that_fill_the_whole_window_are_refused_when_the_reranker_is_made():
    """``chunk_tokens`` >= the window can never fit beside a query: refused at construction (a server at start-up),
    not at the first long document; one that fits some queries is still checked per document."""
    with pytest.raises(InvalidInput) as exc:
        Reranker(WordScorer(), long_documents=LongDocuments(policy="chunk", chunk_tokens=12))
    assert exc.value.field == "chunk_tokens" and "window of 12" in str(exc.value)
    rr = Reranker(WordScorer(), long_documents=LongDocuments(policy="chunk", chunk_tokens=9))
    assert rr.rerank("q", [LONG])[0].chunks > 1
    with pytest.raises(InvalidInput) as exc:  # 9 does not fit beside a three-word query
        rr.rerank("q r s", [LONG])
    assert exc.value.field == "chunk_tokens"
    Reranker(_Unreachable())  # no chunk policy: the model's info is not asked for (a remote one would be fetched)


class _Unreachable:
    @property
    def info(self):
        raise AssertionError("info asked for")


def test_a_query_that_fills_the_window_is_refused_by_name():
    with pytest.raises(InvalidInput) as exc:
        Reranker(WordScorer()).rerank(" ".join("q" * 10), ["a"])
    assert exc.value.field == "query"


def test_a_model_without_layouts_truncates_as_before_but_cannot_chunk():
    class Plain:
        info = ModelInfo("plain", "fake", "reranker", 8, "float32", "cpu")

        def score_pairs(self, pairs, *, instruction=None):
            return np.full(len(pairs), 0.5, dtype=np.float32)

    assert Reranker(Plain()).rerank("q", ["a"])[0] == RerankResult(index=0, score=0.5, document="a")
    with pytest.raises(InvalidInput) as exc:  # the request asks what this model cannot do: a 422 naming it
        Reranker(Plain()).rerank("q", ["a"], long_documents="chunk")
    assert exc.value.field == "long_documents"
    with pytest.raises(InvalidInput) as exc:
        Reranker(Plain()).rerank("q", ["a"], long_documents=LongDocuments(max_tokens_per_query=4))
    assert exc.value.field == "max_tokens_per_query"


def test_a_truncated_score_is_never_served_for_a_chunked_request(tmp_path):
    cache = Cache(tmp_path / "c.sqlite", 10_000_000)
    model = WordScorer()
    cached = CachedReranker(Reranker(model), cache)
    truncated = cached.rerank("q", [LONG])[0]
    capped = cached.rerank("q", [LONG], long_documents=LongDocuments(max_tokens_per_doc=2))[0]
    mean3 = LongDocuments(policy="chunk", aggregate="mean_top_k", top_k=3)
    chunked = cached.rerank("q", [LONG], long_documents=mean3)[0]
    uncached = Reranker(WordScorer()).rerank("q", [LONG], long_documents=mean3)
    assert (truncated.score, capped.score) == (pytest.approx(0.1), pytest.approx(0.0))
    assert chunked.score == pytest.approx(uncached[0].score) == pytest.approx((0.2 + 0.1 + 0.1) / 3)
    # again: every chunk now comes from the cache, and the truncated one stays what it was
    before = cached.scored
    assert cached.rerank("q", [LONG], long_documents="chunk")[0].score == pytest.approx(0.2)
    assert cached.scored == before and cached.rerank("q", [LONG])[0].score == pytest.approx(0.1)


def test_batch_rerank_lays_out_every_query_in_one_pass():
    model = WordScorer()
    out = Reranker(model).batch_rerank(["q", "q r"], [[LONG], [LONG, "gold"]], long_documents="chunk")
    assert len(model.calls) == 1
    # "q" leaves 9 tokens (chunks of 9 - 4 spare), "q r" 8 (too few to spare any: chunks of 8, overlap 1)
    assert [r.chunks for r in out[0]] == [4] and sorted(r.chunks for r in out[1]) == [1, 3]


def test_plan_keeps_pairs_that_fit_unchanged():
    laid = plan(WordScorer(), [("q", "a gold"), ("q", LONG)], instruction=None,
                policy=LongDocuments(policy="chunk", chunk_tokens=9, chunk_overlap=0))
    assert laid.pairs[0] == ("q", "a gold") and len(laid.pairs) == 3
    scores, reports = laid.fold(np.array([0.1, 0.2, 0.4], dtype=np.float32))
    ninth = [m.start() for m in re.finditer(r"\S+", LONG)][9]
    assert scores.tolist() == pytest.approx([0.1, 0.4]) and reports[1].span == (ninth, len(LONG))


def test_eval_caches_only_plain_scores_under_the_documents_key(tmp_path):
    from qrank.cache import score_key
    from qrank.eval.data import Dataset
    from qrank.eval.stages import rerank_scores, time_reranking

    ds = Dataset("d", ["long"], [LONG], {"q1": "q"}, {"q1": {"long": 1}})
    base = {"ranking": {"q1": [["long", 1.0]]}}
    cache = Cache(tmp_path / "c.sqlite", 10_000_000)
    chunked = Reranker(WordScorer(), long_documents="chunk")
    time_reranking(ds, base, chunked, cache, 1, ["q1"], progress=False)
    key = score_key(chunked.info, None, "q", LONG)
    assert cache.get_many("score", [key]) == {}  # the chunk aggregate is not the document's plain score
    scores, _ = rerank_scores(ds, base, chunked, cache, 1, progress=False)
    assert scores["q1"]["long"] == pytest.approx(0.2)  # the quality path follows the policy too
    plain = Reranker(WordScorer())
    time_reranking(ds, base, plain, cache, 1, ["q1"], progress=False)
    assert np.frombuffer(cache.get_many("score", [key])[key], dtype="<f4")[0] == pytest.approx(0.1)
