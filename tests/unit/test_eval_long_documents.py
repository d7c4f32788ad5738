"""``qrank eval --long-documents``: each policy is a system of its own, with pairs scored and coverage checked
against the tokenizer directly, and chunk:max finding an answer that truncation cuts off."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from qrank import Reranker, Settings
from qrank.cli import main
from qrank.errors import InvalidInput
from qrank.eval.data import Dataset
from qrank.eval.report import render_markdown
from qrank.eval.config import EvalConfig
from qrank.eval.runner import Evaluation
from qrank.long_documents import parse_policies

pytest.importorskip("ranx")
pytest.importorskip("bm25s")

FILLER = "The committee met on Tuesday and discussed the budget of the regional library in some detail. "


def long_dataset() -> Dataset:
    """Two queries; each has one relevant document whose answer (repeated, filling a window) sits after ~1,500
    tokens of filler, and three short distractors sharing a word with the query (so BM25 finds all four)."""
    answers = {"q1": "Aspirin lowers the risk of stroke in adults over sixty.",
               "q2": "Statins reduce blood cholesterol levels in adults with heart disease."}
    queries = {"q1": "aspirin lowers the risk of stroke", "q2": "statins reduce cholesterol"}
    topic = {"q1": "aspirin", "q2": "statins"}
    ids, texts, qrels = [], [], {}
    for q, answer in answers.items():
        ids.append(f"{q}-long")
        texts.append(FILLER * 80 + (answer + " ") * 15)
        qrels[q] = {f"{q}-long": 1}
        for j in range(3):
            ids.append(f"{q}-d{j}")
            texts.append(f"The packaging of {topic[q]} comes in many colours; catalogue page {j}.")
    return Dataset("long-fake", ids, texts, queries, qrels)


@pytest.fixture(scope="module")
def reranker(ce_dir):
    return Reranker.from_pretrained(str(ce_dir), device="cpu")


def test_policies_are_systems_with_pairs_and_coverage(reranker, tmp_path):
    ds = long_dataset()
    config = EvalConfig(systems=["bm25+rerank"], reranker="ce", depth=4, k=4, sweep=[4],
                        long_documents="truncate,chunk:max,chunk:first")
    result = Evaluation(ds, config, Settings(home=tmp_path), progress=False, reranker=reranker).run()
    systems = result["systems"]
    assert list(systems) == ["bm25+rerank[truncate]", "bm25+rerank[chunk:max]", "bm25+rerank[chunk:first]"]

    # independent reference: the tokenizer's own count of each long document's tokens
    tok = reranker.model.tokenizer
    long_tokens = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in ds.doc_texts if len(t) > 1000]
    short_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in ds.doc_texts if len(t) <= 1000)
    total = sum(long_tokens) + short_tokens
    trunc = systems["bm25+rerank[truncate]"]["long_documents"]
    chunk = systems["bm25+rerank[chunk:max]"]["long_documents"]
    assert trunc["tokens"] == chunk["tokens"] == total and trunc["documents"] == 8
    # each long document needs at least ceil(tokens / 512) windows of a 512-token model; short ones one pair
    assert trunc["pairs"] == 8 and chunk["pairs"] >= 6 + sum(-(-n // 512) for n in long_tokens)
    assert chunk["coverage"] == 1.0
    assert 0.2 < trunc["coverage"] < 0.6  # the window (< 512 tokens) of each ~1,500-token document, plus the short
    # the answer sits past the cut: only chunking with max (not the first chunk) ranks it first
    assert systems["bm25+rerank[chunk:max]"]["ndcg@4"] == 1.0
    assert systems["bm25+rerank[truncate]"]["ndcg@4"] < 1.0
    assert systems["bm25+rerank[chunk:first]"]["ndcg@4"] == pytest.approx(systems["bm25+rerank[truncate]"]["ndcg@4"])
    md = render_markdown(result)
    assert "### Long documents" in md and "`bm25+rerank[chunk:max]`" in md


def test_policy_spec_errors_name_the_item():
    assert list(parse_policies("chunk:mean_top_k,truncate")) == ["chunk:mean_top_k", "truncate"]
    for bad, says in [("chunk:avg", "chunk_aggregate"), ("cut", "policy must be one of"),
                      ("truncate:max", "only chunk takes"), (" , ", "name at least one")]:
        with pytest.raises(InvalidInput, match=says):
            parse_policies(bad)
    with pytest.raises(InvalidInput, match="add a \\+rerank system"):
        EvalConfig(systems=["bm25"], long_documents="truncate")


@pytest.mark.parametrize("flags, says", [
    (["--long-documents", "chunk:mean"], "error: long_documents: 'chunk:mean'"),
    (["--long-documents", "chunk", "--chunk-tokens", "0"], "error: --chunk-tokens: "),
    (["--long-documents", "chunk", "--chunk-tokens", "64", "--chunk-overlap", "64"], "error: --chunk-overlap: "),
])
def test_cli_bad_long_document_values_are_one_line(flags, says, tmp_path, capsys):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"query": "q", "relevant": ["d1"]}\n')
    code = main(["eval", "-d", str(tmp_path), "-s", "bm25+rerank", "-r", "none", "--home", str(tmp_path / "h"),
                 *flags])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_stage_keys_hold_the_policy_and_each_parameter(reranker, tmp_path):
    ds = long_dataset()
    config = EvalConfig(systems=["bm25+rerank"], reranker="ce", depth=4, k=4, sweep=[4], long_documents="chunk:max")
    ev = Evaluation(ds, config, Settings(home=tmp_path), progress=False, reranker=reranker)
    (_, system, policy), = ev.variants()
    base = ev._rerank_ident(system, policy)
    for change in [dict(chunk_tokens=128), dict(chunk_overlap=5), dict(aggregate="first"), dict(top_k=2),
                   dict(max_tokens_per_doc=300)]:
        assert ev._rerank_ident(system, replace(policy, **change)) != base, change
    # a reranker whose own policy chunks is keyed apart from the default (truncate) one; the default keeps the
    # key stages had before policies existed
    plain = Evaluation(ds, EvalConfig(systems=["bm25+rerank"], reranker="ce", depth=4, k=4), Settings(home=tmp_path),
                       progress=False, reranker=reranker)
    chunking = Evaluation(ds, EvalConfig(systems=["bm25+rerank"], reranker="ce", depth=4, k=4),
                          Settings(home=tmp_path), progress=False,
                          reranker=Reranker(reranker.model, long_documents="chunk"))
    assert "long_documents" not in plain._rerank_ident(system)
    assert chunking._rerank_ident(system) != plain._rerank_ident(system)


def test_a_token_cap_is_a_policy_scored_as_the_model_scores_cut_documents(reranker, ce_dir, tmp_path):
    """``truncate@N`` (Cohere's max_tokens_per_doc) is measured like any policy: each document's first N tokens
    are scored, as the model itself scores ``[CLS] query [SEP] first N document tokens [SEP]`` (the reference is
    built here with the tokenizer and the transformers model, not through qrank), and coverage counts N tokens
    per longer document."""
    import torch
    from transformers import AutoModelForSequenceClassification

    ds, n = long_dataset(), 8
    # one query timed, the other scored untimed through qrank's score cache; the capped policy first, the plain one
    # after it: a capped score once went under the cache as the whole document's (a lazy stand-in for the reranker
    # was wrapped as a bare model, its policy below the cache), and a later stage read it back as plain, or the
    # capped stage read an earlier plain one
    config = EvalConfig(systems=["bm25+rerank"], reranker="ce", depth=4, k=4, sweep=[4], latency_queries=1,
                        long_documents=f"truncate@{n},truncate")
    ev = Evaluation(ds, config, Settings(home=tmp_path), progress=False, reranker=reranker)
    result = ev.run()
    assert list(result["systems"]) == [f"bm25+rerank[truncate@{n}]", "bm25+rerank[truncate]"]

    tok = reranker.model.tokenizer
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in ds.doc_texts]
    capped = result["systems"][f"bm25+rerank[truncate@{n}]"]["long_documents"]
    assert capped["pairs"] == 8 and capped["tokens"] == sum(lengths)
    assert capped["coverage"] == pytest.approx(sum(min(m, n) for m in lengths) / sum(lengths))

    hf = AutoModelForSequenceClassification.from_pretrained(str(ce_dir)).eval()
    text_of = dict(zip(ds.doc_ids, ds.doc_texts))
    for label, cap in ((f"truncate@{n}", n), ("truncate", None)):
        scores = ev.rerank_system("bm25+rerank", ev.policies[label])["scores"]
        assert len(scores) == 2 and all(len(per_doc) == 4 for per_doc in scores.values())
        for q, per_doc in scores.items():
            for d, got in per_doc.items():
                query = tok(ds.queries[q], add_special_tokens=False)["input_ids"]
                # the cap, else the model's own cut at its 512-token window
                ids = tok(text_of[d], add_special_tokens=False)["input_ids"][: cap or 512 - len(query) - 3]
                pair = [tok.cls_token_id, *query, tok.sep_token_id, *ids, tok.sep_token_id]  # BERT's pair layout
                types = [0] * (len(query) + 2) + [1] * (len(ids) + 1)
                with torch.no_grad():
                    logit = hf(input_ids=torch.tensor([pair]), token_type_ids=torch.tensor([types])).logits[0, 0]
                assert got == pytest.approx(float(torch.sigmoid(logit)), abs=1e-5), (label, q, d)


def test_coverage_of_more_pairs_than_one_request_may_chunk(reranker):
    """A whole evaluation's pairs are no request: 300 SciFact queries at depth 20 (6,000 pairs) met
    max_chunks_per_request (4,096) and stopped `qrank eval --long-documents` after its scoring. Counted in windows,
    the totals equal the sum over single pairs."""
    from qrank.long_documents import LongDocuments, coverage

    ds = long_dataset()
    pairs = [(q, t) for q in ds.queries.values() for t in ds.doc_texts]  # 16 pairs, two long documents per query
    for policy in (LongDocuments(policy="truncate", max_chunks_per_request=3),
                   LongDocuments(policy="chunk", max_chunks_per_request=8, max_chunks_per_document=4)):
        one_by_one = [coverage(reranker.model, [p], replace(policy, max_chunks_per_request=4096)) for p in pairs]
        assert coverage(reranker.model, pairs, policy) == tuple(map(sum, zip(*one_by_one)))


def test_the_cli_table_names_each_policy(ce_dir, tmp_path, capsys):
    """Rich read the policy of "bm25+rerank[truncate@8]" as a style tag: every policy's row printed as
    "bm25+rerank". Names are plain text now, in the table and in the report paths."""
    ds = long_dataset()
    data = tmp_path / "own [data]"
    data.mkdir()
    (data / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d, "text": t}) + "\n" for d, t in zip(ds.doc_ids, ds.doc_texts)))
    (data / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": text, "relevant": list(ds.qrels[q])}) + "\n" for q, text in ds.queries.items()))
    code = main(["eval", "-d", str(data), "-s", "bm25+rerank", "-r", str(ce_dir), "--depth", "4", "--k", "4",
                 "--sweep", "none", "--long-documents", "truncate,truncate@8", "--home", str(tmp_path / "h"),
                 "--out", str(tmp_path / "report [1]"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "bm25+rerank[truncate]" in out and "bm25+rerank[truncate@8]" in out and "report [1]" in out
