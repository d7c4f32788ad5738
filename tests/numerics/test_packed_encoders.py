"""The packed encoder path (BERT, XLM-R) equals sentence-transformers; int8 stays close; the rest falls back.

References are ``CrossEncoder.predict`` and ``SentenceTransformer.encode(normalize_embeddings=True)`` on
the same folders (never qrank itself). The XLM-R models are tiny random weights with a SentencePiece-style
Unigram tokenizer trained here (tests/tiny_models.py): no XLM-R vocabulary is available offline.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tiny_models


@pytest.fixture(scope="module")
def texts(scifact_dir):
    with open(scifact_dir / "corpus.jsonl", encoding="utf-8") as f:
        docs = [(d["title"] + " " + d["text"]).strip() for d in map(json.loads, (next(f) for _ in range(10)))]
    return docs + ["", "中文文档内容", "short one"]


@pytest.fixture(scope="module")
def pairs(texts):
    return [(q, d) for q in ("what do white matter tracts show?", "vaccines and immune cells") for d in texts]


@pytest.fixture(scope="module")
def xlmr_tok(tmp_path_factory, shared):
    return tiny_models.build_xlmr_tokenizer(tmp_path_factory.mktemp("xlmr-tok"))


def test_xlmr_cross_encoder_equals_crossencoder_predict(tmp_path, xlmr_tok, pairs):
    from sentence_transformers import CrossEncoder

    from qrank import Reranker, Settings

    path = str(tiny_models.build_random_encoder(tmp_path / "xlmr-ce", xlmr_tok, "xlm-roberta", "reranker"))
    rr = Reranker.from_pretrained(path, device="cpu")
    assert rr.model.packed is not None and rr.model.packed.kind == "roberta"
    got = rr.model.score_pairs(pairs)
    np.testing.assert_allclose(got, CrossEncoder(path, device="cpu").predict(pairs, batch_size=5), atol=1e-5)
    tiny = Reranker.from_pretrained(path, settings=Settings(models={"device": "cpu"}, engine={"max_batch_tokens": 200}))
    np.testing.assert_allclose(tiny.model.score_pairs(pairs), got, atol=1e-5)  # any chunking
    assert np.ptp(got) > 1e-3


@pytest.mark.parametrize("model_type,pooling", [("xlm-roberta", "mean"), ("xlm-roberta", "cls"), ("bert", "cls"),
                                                ("modernbert", "mean")])
def test_packed_st_embedder_equals_encode(tmp_path, xlmr_tok, minilm_dir, texts, model_type, pooling):
    from sentence_transformers import SentenceTransformer

    from qrank import Embedder

    tok_dir = xlmr_tok if model_type != "bert" else minilm_dir
    path = str(tiny_models.build_random_encoder(tmp_path / "emb", tok_dir, model_type, "embedder", pooling=pooling))
    em = Embedder.from_pretrained(path, device="cpu")
    assert em.model.packed is not None
    ref = SentenceTransformer(path, device="cpu").encode(texts, batch_size=4, normalize_embeddings=True)
    np.testing.assert_allclose(em.model.embed_batch(texts), ref, atol=1e-5)


def test_real_minilm_embedder_is_packed_and_exact(minilm, minilm_dir, texts):
    from sentence_transformers import SentenceTransformer

    assert minilm.model.packed is not None
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, batch_size=4, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.model.embed_batch(texts), ref, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_modernbert_cross_encoder_equals_crossencoder_predict(tmp_path, minilm_dir, pairs, pooling):
    from sentence_transformers import CrossEncoder

    from qrank import Reranker

    # local window 16 (|i - j| <= 8) is shorter than most inputs here: the band mask is exercised
    path = str(tiny_models.build_random_encoder(tmp_path / "mb", minilm_dir, "modernbert", "reranker",
                                                pooling=pooling))
    rr = Reranker.from_pretrained(path, device="cpu")
    assert rr.model.packed is not None and rr.model.packed.kind == "modernbert"
    got = rr.model.score_pairs(pairs)
    np.testing.assert_allclose(got, CrossEncoder(path, device="cpu").predict(pairs, batch_size=5), atol=1e-5)
    assert np.ptp(got) > 1e-3


def test_other_encoders_fall_back_to_padded_with_a_log_line(tmp_path, minilm_dir, pairs, caplog):
    from sentence_transformers import CrossEncoder

    from qrank import Reranker

    path = str(tiny_models.build_random_encoder(tmp_path / "db", minilm_dir, "distilbert", "reranker"))
    with caplog.at_level(logging.INFO, logger="qrank.models.packed_encoder"):
        rr = Reranker.from_pretrained(path, device="cpu")
    assert rr.model.packed is None
    assert any("distilbert" in r.getMessage() and "padded" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(rr.model.score_pairs(pairs[:6]), CrossEncoder(path, device="cpu").predict(pairs[:6]),
                               atol=1e-5)


def test_int8_cross_encoder_stays_close_to_fp32(ce_dir, pairs):
    from sentence_transformers import CrossEncoder

    from qrank import Reranker

    ref = CrossEncoder(str(ce_dir), device="cpu").predict(pairs)
    q8 = Reranker.from_pretrained(str(ce_dir), device="cpu", quantization="int8")
    assert q8.model.info.extra["quantization"]["method"] == "int8"
    got = q8.model.score_pairs(pairs)
    # not exact by design (a pair near 0.5, where the sigmoid is steepest, moves most): loose bounds here,
    # the retrieval-quality figure is in BENCHMARKS.md
    assert np.median(np.abs(got - ref)) < 0.01 and np.corrcoef(got, ref)[0, 1] > 0.97


def test_int8_embedder_stays_close_to_fp32(minilm_dir, texts):
    from sentence_transformers import SentenceTransformer

    from qrank import Embedder

    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, normalize_embeddings=True)
    got = Embedder.from_pretrained(str(minilm_dir), device="cpu", quantization="int8").model.embed_batch(texts)
    cos = np.sum(got * ref, axis=1)  # short texts (the empty one, the unknown-word one) move most
    assert np.median(cos) > 0.98 and np.min(cos) > 0.9


def test_int8_uses_8_bit_activations_where_the_cpu_has_vnni(minilm_dir, texts):
    """With VNNI, activations keep all 8 bits: the 10 abstracts' vectors sit closer to fp32 than torch's
    7-bit default puts them (measured 2026-12-05: mean cosine 0.9977 vs 0.9925 over 400 abstracts)."""
    from sentence_transformers import SentenceTransformer

    from qrank import Embedder
    from qrank.models.hf_encoder import INT8_RECIPE, full_range_int8

    docs = texts[:10]
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(docs, normalize_embeddings=True)
    got = Embedder.from_pretrained(str(minilm_dir), device="cpu", quantization="int8").model.embed_batch(docs)
    cos = np.sum(got * ref, axis=1)
    assert f"activations {8 if full_range_int8() else 7}-bit" in INT8_RECIPE  # and so in the cache keys
    if full_range_int8():
        assert np.mean(cos) > 0.996 and np.min(cos) > 0.993
    else:  # fbgemm without VNNI would saturate 8-bit sums: torch's 7-bit default, looser
        assert np.mean(cos) > 0.985


def test_quantization_refusals(ce_dir):
    from qrank import Reranker
    from qrank.errors import UnsupportedModel
    from qrank.models.hf_encoder import check_quantization

    with pytest.raises(UnsupportedModel, match="fp8.*Qwen3"):
        Reranker.from_pretrained(str(ce_dir), device="cpu", quantization="fp8")
    with pytest.raises(UnsupportedModel, match="int8.*CPU"):
        check_quantization("int8", "cuda", "m")


def test_int8_answers_have_their_own_cache_keys():
    from qrank.cache import embedding_key, score_key
    from qrank.types import ModelInfo

    def info(**extra):
        return ModelInfo(id="m", kind="cross-encoder", role="reranker", max_length=512, dtype="float32", device="cpu",
                         extra=extra)

    assert score_key(info(quantization="int8"), None, "q", "d") != score_key(info(quantization="none"), None, "q", "d")
    assert score_key(info(quantization="none"), None, "q", "d") == score_key(info(), None, "q", "d")
    plain = embedding_key(info(), None, None, False, "t")
    assert embedding_key(info(quantization="int8"), None, None, False, "t") != plain


def test_int8_recipe_names_the_cpu_run_size():
    """A dynamic int8 activation scale is one per packed run, so the run size changes int8 scores: the recipe
    (in every int8 cache key) must name the size the packed path uses."""
    from qrank.models.hf_encoder import INT8_RECIPE
    from qrank.models.packed_encoder import CPU_RUN_TOKENS

    assert f"runs of at most {CPU_RUN_TOKENS} tokens" in INT8_RECIPE


@pytest.mark.parametrize("model_type", ["xlm-roberta", "modernbert"])
def test_pipelined_chunks_equal_crossencoder_predict(tmp_path, xlmr_tok, minilm_dir, pairs, model_type):
    """The GPU's path (tokenize in slabs, queue each chunk as it is encoded) forced on the CPU: small first
    chunks growing, every input's score still ST's."""
    from sentence_transformers import CrossEncoder

    from qrank import Reranker
    from qrank.engine.pipelining import pipelined_last_hidden
    from qrank.models.packed_runs import PackedRows

    tok = xlmr_tok if model_type == "xlm-roberta" else minilm_dir
    path = str(tiny_models.build_random_encoder(tmp_path / "ce", tok, model_type, "reranker"))
    ce = Reranker.from_pretrained(path, device="cpu").model
    chunks = []

    class Recording(PackedRows):
        def submit(self, seqs):
            chunks.append(len(seqs))
            return super().submit(seqs)

    rows = Recording(ce.packed, ce.packed.logits, 16384)
    logits = pipelined_last_hidden(rows, pairs, ce.encode_pairs, overlap=True, first_tokens=40, chunk_tokens=400)
    want = CrossEncoder(path, device="cpu", activation_fn=__import__("torch").nn.Identity()).predict(pairs)
    np.testing.assert_allclose(logits[:, 0].numpy(), want, atol=1e-5)
    assert len(chunks) > 2 and sum(chunks) == len(pairs)


def test_pipelined_embedder_rows_equal_encode(tmp_path, xlmr_tok, texts):
    from sentence_transformers import SentenceTransformer

    from qrank import Embedder
    from qrank.engine.pipelining import pipelined_last_hidden
    from qrank.models.packed_runs import PackedRows
    from qrank.models.pooling import finish_embeddings

    path = str(tiny_models.build_random_encoder(tmp_path / "emb", xlmr_tok, "xlm-roberta", "embedder", pooling="mean"))
    em = Embedder.from_pretrained(path, device="cpu").model
    rows = PackedRows(em.packed, em.packed.pooled("mean"), 16384)
    got = finish_embeddings(pipelined_last_hidden(rows, texts, em.encode_texts, overlap=True, first_tokens=30,
                                                  chunk_tokens=300).numpy())
    want = SentenceTransformer(path, device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_compiled_add_norm_plumbing_and_its_fallback(ce_dir, pairs, caplog):
    """compile_norms with stand-in compilers (inductor itself runs on the device: tests/gpu): a compiler that
    keeps the function gives the same scores; one whose result fails as dynamo does leaves the eager pair on,
    with a warning, and the scores unchanged."""
    from torch._dynamo.exc import TorchDynamoException

    from qrank import Reranker

    ce = Reranker.from_pretrained(str(ce_dir), device="cpu").model
    want = ce.score_pairs(pairs)
    seen = []

    def keep(fn):
        seen.append(fn.__code__.co_name)
        return fn

    assert ce.packed.compile_norms("test", compiler=keep)
    assert seen and seen[0].startswith("_add_norm__")
    np.testing.assert_allclose(ce.score_pairs(pairs), want, atol=1e-6)

    def broken(fn):
        def fails(*args):
            raise TorchDynamoException("no inductor here")
        return fails

    with caplog.at_level(logging.WARNING):
        assert not ce.packed.compile_norms("test", compiler=broken)
    assert "fused add + LayerNorm off" in caplog.text and "no inductor here" in caplog.text
    np.testing.assert_allclose(ce.score_pairs(pairs), want, atol=1e-6)
