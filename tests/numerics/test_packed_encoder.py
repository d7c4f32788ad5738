"""The CPU cross-encoder path packs pairs without padding; its scores equal the padded path and ST's."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _pairs(scifact_dir, n=12):
    docs = []
    with open(scifact_dir / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append((d["title"] + " " + d["text"]).strip())
            if len(docs) >= n:
                break
    # long abstracts (truncated to 512), short ones, an empty document, a non-Latin pair
    return [("what do white matter tracts show in newborns?", d) for d in docs] + [
        ("q", ""),
        ("中文查询", "中文文档内容"),
    ]


@pytest.mark.parametrize("which", ["ce_dir", "random_ce_dir"])
def test_packed_equals_padded_and_sentence_transformers(request, which, scifact_dir):
    from sentence_transformers import CrossEncoder

    from qrank import Reranker, Settings

    path = str(request.getfixturevalue(which))
    pairs = _pairs(scifact_dir)
    packed = Reranker.from_pretrained(path, device="cpu")
    assert packed.model.packed is not None
    padded = Reranker.from_pretrained(path, device="cpu", engine="reference")
    assert padded.model.packed is None
    tiny = Reranker.from_pretrained(path, device="cpu", settings=Settings(engine={"max_batch_tokens": 300}))
    got = packed.model.score_pairs(pairs)
    np.testing.assert_allclose(got, padded.model.score_pairs(pairs), atol=1e-5)
    np.testing.assert_allclose(tiny.model.score_pairs(pairs), got, atol=1e-5)  # any chunking
    np.testing.assert_allclose(got, CrossEncoder(path, device="cpu").predict(pairs), atol=1e-5)
    assert np.ptp(got) > 1e-3


def test_only_plain_bert_classifiers_are_packed(qwen3_reranker_dir, ce_dir):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from qrank.models.packed_encoder import PackedBert, supports

    assert supports(AutoModelForSequenceClassification.from_pretrained(str(ce_dir)))
    qwen = AutoModelForCausalLM.from_pretrained(str(qwen3_reranker_dir))
    assert not supports(qwen)
    with pytest.raises(ValueError):
        PackedBert(qwen)
