"""TokenMemo: remembered ids equal fresh ones, the bound holds, order and duplicates are kept, and a Qwen3
reranker that counts then scores tokenizes each pair once with unchanged scores."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from qrank.models.token_memo import TokenMemo


def fake_encoder(calls):
    def encode(texts):
        calls.append(list(texts))
        return [[ord(c) for c in t] for t in texts]

    return encode


def test_remembers_keeps_order_and_duplicates():
    calls, memo = [], TokenMemo(max_tokens=100)
    enc = fake_encoder(calls)
    assert memo.encode(["ab", "c", "ab"], enc) == [[97, 98], [99], [97, 98]]
    assert calls == [["ab", "c"]]  # the duplicate is encoded once
    out = memo.encode(["c", "d", "ab"], enc)
    assert out == [[99], [100], [97, 98]] and calls[-1] == ["d"]
    out[0].append(0)  # callers own what they get back
    assert memo.encode(["c"], enc) == [[99]]
    assert (memo.hits, memo.misses) == (3, 3)


def test_bound_evicts_least_recently_used():
    calls, memo = [], TokenMemo(max_tokens=5)
    enc = fake_encoder(calls)
    memo.encode(["aa", "bb"], enc)  # 4 tokens
    memo.encode(["aa"], enc)  # aa is now the most recent
    memo.encode(["cc"], enc)  # 6 > 5: bb goes
    assert len(memo) == 2 and memo._tokens == 4
    memo.encode(["aa", "bb"], enc)
    assert calls[-1] == ["bb"]
    memo.encode(["x" * 9], enc)  # larger than the bound: returned, never stored
    assert memo._tokens <= 5


def test_threads_get_right_answers():
    memo = TokenMemo(max_tokens=50)
    texts = [f"t{i}" for i in range(40)]
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(200):
            pick = [texts[i] for i in rng.integers(0, 40, size=5)]
            if memo.encode(pick, lambda ts: [[ord(c) for c in t] for t in ts]) != [[ord(c) for c in t] for t in pick]:
                errors.append(pick)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_qwen3_reranker_counts_then_scores_with_one_tokenization(qwen3_reranker_dir):
    from qrank import Reranker

    model = Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", dtype="float32").model
    pairs = [("what is bm25?", "BM25 ranks documents by term frequency."), ("what is bm25?", "Cats purr.")]
    calls = []
    real = model.encoder._encode

    def spy(p, instruction):
        calls.append(len(p))
        return real(p, instruction)

    model.encoder._encode = spy
    counts = model.count_tokens(pairs)
    scores = model.score_pairs(pairs)
    assert calls == [2]  # counting tokenized the pairs; scoring reused the ids
    assert counts == [len(ids) for ids in real(pairs, model.info.default_instruction)]
    assert model.score_pairs(pairs) == pytest.approx(scores, abs=0)  # remembered ids give the same scores
    assert calls == [2]
    # and the same as a reranker that never counted (fresh memo): nothing about the ids changed
    fresh = Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", dtype="float32").model
    assert fresh.score_pairs(pairs) == pytest.approx(scores, abs=1e-6)
    # another instruction is another key
    model.count_tokens(pairs, instruction="Judge relevance")
    assert calls == [2, 2]


def test_off_when_the_setting_is_zero(qwen3_reranker_dir):
    from qrank import Reranker, Settings

    settings = Settings(engine={"token_memo": 0})
    model = Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", dtype="float32", settings=settings).model
    assert model.encoder.memo.max_tokens == 0
    calls = []
    real = model.encoder._encode
    model.encoder._encode = lambda p, instruction: calls.append(len(p)) or real(p, instruction)
    pairs = [("q", "d1"), ("q", "d2")]
    model.count_tokens(pairs)
    model.score_pairs(pairs)
    assert calls == [2, 2] and len(model.encoder.memo) == 0
