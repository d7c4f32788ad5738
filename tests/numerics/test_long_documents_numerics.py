"""Long documents with the real tokenizers: spans map back to the caller's text (Chinese and emoji too), each
chunk's score is that chunk scored alone by an independent reference, and the template suffix survives.

References: the Qwen3-Reranker model card recipe (tests/numerics/official_recipes.py, plain transformers) on the
tiny real-architecture reranker, and sentence-transformers' CrossEncoder on the shared cross-encoder.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from official_recipes import DEFAULT_INSTRUCTION, RERANKER_PREFIX, RERANKER_SUFFIX, official_qwen3_rerank

from qrank import Reranker
from qrank.long_documents import LongDocuments, plan

QUERY = "How do cats choose where to sleep? 猫在哪里睡觉"
SENTENCES = [
    "Cats often sleep in warm places near a window. ",
    "猫喜欢在温暖的地方睡觉，比如窗边的阳光下。",
    "The dog 🐕 barked at the mailman 📬 twice! ",
    "Ünïcödé wörds and internationalization-heavy compounds appear here. ",
    "😀😃🙂 emoji runs 👩‍👩‍👧 and 家庭 mix. ",
]
LONG = "".join(SENTENCES[i % len(SENTENCES)] for i in range(40))
WINDOW = 160  # a small window so that the tiny reranker chunks a few-hundred-token document


@pytest.fixture(scope="module")
def small_qwen(qwen3_reranker_dir):
    return Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", dtype="float32", max_length=WINDOW)


def _chunked(rr, doc, **options):
    return plan(rr.model, [(QUERY, doc)], instruction=None, policy=LongDocuments(policy="chunk", **options))


def _check_spans_cover(doc, spans):
    assert spans[0][0] == 0 and spans[-1][1] in (len(doc), len(doc.rstrip()))  # WordPiece drops the last space
    for (a, b), (c, d) in zip(spans, spans[1:]):
        assert a < c <= b < d  # each chunk starts inside the previous one (overlap) and goes further


def test_qwen_token_offsets_are_the_callers_characters(small_qwen, qwen3_reranker_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen3_reranker_dir))
    lay = small_qwen.model.document_layouts([(QUERY, LONG)])[0]
    # independent: transformers' own offsets of the user turn, shifted to the document
    text = f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: {QUERY}\n<Document>: {LONG}"
    start = len(text) - len(LONG)
    ref = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    doc_tokens = [(max(s - start, 0), e - start) for s, e in ref["offset_mapping"] if e > start]
    assert list(lay.offsets) == doc_tokens
    ids = ref["input_ids"][-len(doc_tokens):]
    assert tok.decode(ids) in (LONG, " " + LONG)  # byte-level BPE is lossless: the document, whole
    # every window boundary that falls between characters decodes to exactly the caller's span
    laid = _chunked(small_qwen, LONG, chunk_tokens=40, chunk_overlap=8)
    spans = laid.layouts[0][1]
    _check_spans_cover(LONG, spans)
    assert [d for _, d in laid.pairs] == [LONG[a:b] for a, b in spans]
    for (a, b), (t0, t1) in zip(spans, [(i * 32, min(i * 32 + 40, len(ids))) for i in range(len(spans))]):
        piece = tok.decode(ids[t0:t1])
        if "\ufffd" not in piece and t0 > 0:  # a window may start or end inside a multi-byte character
            assert piece == LONG[a:b]


def test_wordpiece_offsets_spell_their_tokens(ce):
    tok = ce.model.tokenizer
    lay = ce.model.document_layouts([(QUERY, LONG)])[0]
    ids = tok(QUERY, LONG, truncation=False, verbose=False)["input_ids"]
    doc_ids = ids[-len(lay.offsets) - 1 : -1]
    checked = 0
    for (a, b), tid in zip(lay.offsets, doc_ids):
        piece = tok.convert_ids_to_tokens(tid)
        if piece == tok.unk_token:
            continue
        plain = "".join(c for c in unicodedata.normalize("NFD", LONG[a:b].lower()) if unicodedata.category(c) != "Mn")
        assert plain == piece.removeprefix("##"), (LONG[a:b], piece)
        checked += 1
    assert checked > 100 and any("\u4e00" <= LONG[a] <= "\u9fff" for a, _ in lay.offsets)
    laid = plan(ce.model, [(QUERY, LONG)], instruction=None, policy=LongDocuments(policy="chunk", chunk_tokens=100))
    _check_spans_cover(LONG, laid.layouts[0][1])


@pytest.mark.parametrize("aggregate", ["max", "first", "mean_top_k"])
def test_each_qwen_chunk_scores_as_the_official_recipe_scores_it_alone(small_qwen, qwen3_reranker_dir, aggregate):
    laid = _chunked(small_qwen, LONG)
    assert len(laid.pairs) > 2
    alone = official_qwen3_rerank(str(qwen3_reranker_dir), laid.pairs, max_length=WINDOW)
    together = small_qwen.model.score_pairs(laid.pairs)  # one pass, as rerank sends them
    np.testing.assert_allclose(together, alone, atol=2e-5)
    res = small_qwen.rerank(QUERY, [LONG, "cats sleep"], long_documents=LongDocuments(policy="chunk",
                                                                                      aggregate=aggregate, top_k=2))
    top = next(r for r in res if r.index == 0)
    best = {"max": int(np.argmax(alone)), "first": 0, "mean_top_k": int(np.argmax(alone))}[aggregate]
    expected = {"max": max(alone), "first": alone[0], "mean_top_k": float(np.mean(sorted(alone)[-2:]))}[aggregate]
    assert top.score == pytest.approx(expected, abs=2e-5)
    assert top.chunks == len(laid.pairs) and top.truncated is False
    assert LONG[top.span.start : top.span.end] == laid.pairs[best][1]


def test_each_cross_encoder_chunk_scores_as_sentence_transformers_scores_it_alone(ce, ce_dir):
    st = pytest.importorskip("sentence_transformers")
    laid = plan(ce.model, [(QUERY, LONG * 3)], instruction=None, policy=LongDocuments(policy="chunk"))
    assert len(laid.pairs) > 2
    ref = st.CrossEncoder(str(ce_dir), device="cpu", max_length=512)
    alone = np.array([ref.predict([p])[0] for p in laid.pairs])
    np.testing.assert_allclose(ce.model.score_pairs(laid.pairs), alone, atol=2e-5)
    top = ce.rerank(QUERY, [LONG * 3], long_documents="chunk")[0]
    assert top.score == pytest.approx(float(alone.max()), abs=2e-5) and top.chunks == len(laid.pairs)


def test_the_template_suffix_survives_truncation_and_chunks(small_qwen, qwen3_reranker_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen3_reranker_dir))
    prefix = tok.encode(RERANKER_PREFIX, add_special_tokens=False)
    suffix = tok.encode(RERANKER_SUFFIX, add_special_tokens=False)

    def official_ids(doc, truncate=True):
        text = f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: {QUERY}\n<Document>: {doc}"
        kw = {"truncation": "longest_first", "max_length": WINDOW - len(prefix) - len(suffix)} if truncate else {}
        return prefix + tok(text, add_special_tokens=False, **kw)["input_ids"] + suffix

    encoded = small_qwen.model.encode_pairs([(QUERY, LONG)])[0]
    assert list(encoded.ids) == official_ids(LONG) and len(encoded) == WINDOW
    assert small_qwen.model.document_layouts([(QUERY, LONG)])[0].encoded == encoded  # tokenize once: the same ids
    truncated = small_qwen.rerank(QUERY, [LONG])[0]
    assert truncated.truncated is True and truncated.score == pytest.approx(
        official_qwen3_rerank(str(qwen3_reranker_dir), [(QUERY, LONG)], max_length=WINDOW)[0], abs=2e-5)
    # chunks are never cut by the model: each one's ids are the untruncated official ones, suffix included
    for _, chunk in _chunked(small_qwen, LONG).pairs:
        ids = list(small_qwen.model.encode_pairs([(QUERY, chunk)])[0].ids)
        assert ids == official_ids(chunk, truncate=False) and len(ids) <= WINDOW and ids[-len(suffix):] == suffix
