"""The evaluation runner with deterministic fake models: rankings checked against independent
computations (numpy brute force over the fakes' vectors, bm25s run directly, RRF and nDCG by hand),
caching (a re-run computes nothing), the depth sweep and the written report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from index_fakes import TOPICS, BowModel, OverlapScorer, bow_vectors, corpus

from qrank import Embedder, Reranker, Settings
from qrank.eval.data import Dataset, doc_text
from qrank.eval.report import write_report
from qrank.eval.config import EvalConfig
from qrank.eval.runner import Evaluation
from qrank.types import ModelInfo

pytest.importorskip("ranx")
pytest.importorskip("faiss")
pytest.importorskip("bm25s")


def fake_dataset() -> Dataset:
    docs = corpus(40)
    queries = {f"t{t}": f"how do I {topic}" for t, topic in enumerate(TOPICS)}
    qrels = {f"t{t}": {d["id"]: 1 for d in docs if d["metadata"]["topic"] == t} for t in range(len(TOPICS))}
    return Dataset("fake", [d["id"] for d in docs], [doc_text(d["title"], d["text"]) for d in docs], queries, qrels)


class OracleScorer:
    """A reranker that knows the judgements: relevant documents score 1, others 0 (+ a tiny tie-break)."""

    def __init__(self, ds: Dataset) -> None:
        self.info = ModelInfo(
            id="oracle", kind="fake", role="reranker", max_length=512, dtype="float32", device="cpu", revision="r1"
        )
        self.relevant = {
            (ds.queries[q], ds.doc_texts[ds.doc_ids.index(d)]) for q, rels in ds.qrels.items() for d in rels
        }
        self.pairs = 0

    def score_pairs(self, pairs, *, instruction=None):
        self.pairs += len(pairs)
        return np.asarray([1.0 if p in self.relevant else 1e-3 * (len(p[1]) % 7) for p in pairs], dtype=np.float32)


def ndcg_at(ranked: list[str], relevant: set[str], k: int) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path / "home")


def evaluation(ds, settings, *, systems, embed_model=None, scorer=None, **cfg):
    config = EvalConfig(systems=systems, embedder="fake-bow", reranker="oracle", **cfg)
    return Evaluation(
        ds,
        config,
        settings,
        progress=False,
        embedder=Embedder(embed_model or BowModel()),
        reranker=Reranker(scorer or OverlapScorer()),
    )


def test_first_stages_match_independent_computations(settings):
    import bm25s

    ds = fake_dataset()
    ev = evaluation(ds, settings, systems=["bm25", "dense", "hybrid"], depth=10, k=5, sweep=[])
    result = ev.run()
    # dense: brute-force cosine over the fake's reference vectors
    docs, queries = bow_vectors(ds.doc_texts), bow_vectors(list(ds.queries.values()))
    sims = queries @ docs.T
    for i, qid in enumerate(ds.queries):
        want = [ds.doc_ids[j] for j in np.argsort(-sims[i], kind="stable")[:10]]
        assert [d for d, _ in result["rankings"]["dense"][qid]] == want
    # bm25: bm25s directly, English stopwords
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(ds.doc_texts, stopwords="en", show_progress=False), show_progress=False)
    for qid, text in ds.queries.items():
        got = dict(result["rankings"]["bm25"][qid])
        tokens = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0]
        scores = retriever.get_scores([t for t in tokens if t in retriever.vocab_dict])
        for d, s in got.items():
            assert s == pytest.approx(scores[ds.doc_ids.index(d)], rel=1e-5)
        assert min(got.values()) >= np.sort(scores)[-len(got)] - 1e-5  # nothing better was left out
    # hybrid: reciprocal rank fusion by hand (k = 60)
    for qid in ds.queries:
        fused: dict[str, float] = {}
        for name in ("bm25", "dense"):
            full = ev.stage(name)["ranking"][qid]
            for rank, (d, _) in enumerate(full, 1):
                fused[d] = fused.get(d, 0.0) + 1 / (60 + rank)
        want = sorted(fused.items(), key=lambda kv: -kv[1])[:10]
        got = result["rankings"]["hybrid"][qid]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])
    # metrics come from the rankings: nDCG@5 recomputed by hand
    for system in ("bm25", "dense", "hybrid"):
        want = np.mean(
            [ndcg_at([d for d, _ in result["rankings"][system][q]], set(ds.qrels[q]), 5) for q in ds.queries]
        )
        assert result["systems"][system]["ndcg@5"] == pytest.approx(want, abs=1e-9)
    for vals in result["systems"].values():
        assert vals["latency_p50_ms"] > 0 and vals["latency_p99_ms"] >= vals["latency_p50_ms"]
        assert vals["throughput_qps"] > 0 and vals["peak_rss_mb"] > 0 and vals["queries"] == len(ds.queries)


def test_oracle_reranker_and_depth_sweep(settings):
    ds = fake_dataset()
    ev = evaluation(
        ds,
        settings,
        systems=["dense", "dense+rerank"],
        scorer=OracleScorer(ds),
        depth=8,
        k=5,
        sweep=[1, 3, 8, 12],
        sweep_queries=3,
    )
    result = ev.run()
    dense = result["rankings"]["dense"]
    # reranking the top-d puts every relevant candidate among them first: nDCG computable by hand
    for point in result["sweep"]["dense+rerank"]:
        d = point["depth"]
        expect = []
        for q in ds.queries:
            head = [x for x, _ in ev.stage("dense")["ranking"][q][:d]]
            rel = set(ds.qrels[q])
            order = [x for x in head if x in rel] + [x for x in head if x not in rel]
            ranked = (order + [x for x, _ in ev.stage("dense")["ranking"][q][d:]])[:8]
            expect.append(ndcg_at(ranked, rel, 5))
        assert point["ndcg@5"] == pytest.approx(np.mean(expect), abs=1e-9), d
        assert point["latency_queries"] == 3 and point["latency_p50_ms"] > 0
    assert [p["depth"] for p in result["sweep"]["dense+rerank"]] == [1, 3, 8, 12]
    at_depth = next(p for p in result["sweep"]["dense+rerank"] if p["depth"] == 8)
    assert result["systems"]["dense+rerank"]["ndcg@5"] == pytest.approx(at_depth["ndcg@5"])
    assert result["systems"]["dense+rerank"]["ndcg@5"] >= result["systems"]["dense"]["ndcg@5"]
    assert result["systems"]["dense+rerank"]["recall@8"] == pytest.approx(result["systems"]["dense"]["recall@8"])
    # reranking costs time on top of the first stage, query by query
    assert result["systems"]["dense+rerank"]["latency_p50_ms"] > result["systems"]["dense"]["latency_p50_ms"]
    assert set(dense) == set(ds.queries)


def test_rerun_computes_nothing_and_changes_recompute_only_what_changed(settings, tmp_path):
    ds = fake_dataset()
    model, scorer = BowModel(), OverlapScorer()
    first = evaluation(
        ds,
        settings,
        systems=["bm25", "dense", "dense+rerank"],
        embed_model=model,
        scorer=scorer,
        depth=6,
        k=5,
        sweep=[3, 6],
        sweep_queries=2,
    ).run()
    assert model.texts > 0 and scorer.pairs > 0
    assert not any(v["cached"] for v in first["systems"].values())

    # same inputs: every stage from the cache, no model call at all
    model2, scorer2 = BowModel(), OverlapScorer()
    again = evaluation(
        ds,
        settings,
        systems=["bm25", "dense", "dense+rerank"],
        embed_model=model2,
        scorer=scorer2,
        depth=6,
        k=5,
        sweep=[3, 6],
        sweep_queries=2,
    ).run()
    assert (model2.calls, scorer2.pairs) == (0, 0)
    assert all(v["cached"] for v in again["systems"].values())
    for system, vals in first["systems"].items():
        for key in ("ndcg@5", "recall@6", "map", "latency_p50_ms", "index_time_s"):
            assert again["systems"][system][key] == vals[key]

    # a deeper sweep: first stages are searched again (queries only: the corpus embeddings are cached),
    # the depth-6 timing is reused, and only the new depth is scored and timed
    model3, scorer3 = BowModel(), OverlapScorer()
    deeper = evaluation(
        ds,
        settings,
        systems=["bm25", "dense", "dense+rerank"],
        embed_model=model3,
        scorer=scorer3,
        depth=6,
        k=5,
        sweep=[3, 6, 10],
        sweep_queries=2,
    ).run()
    assert model3.texts == len(ds.queries)  # one embedding per query, none for the corpus
    # timing depth 10 on the 2 sweep queries, then candidates 7-10 of the other queries (untimed)
    assert scorer3.pairs == 2 * 10 + (len(ds.queries) - 2) * (10 - 6)
    assert deeper["systems"]["dense"]["ndcg@5"] == first["systems"]["dense"]["ndcg@5"]
    # index time = the remembered corpus encoding + rebuilding the exact FAISS index (micro-seconds)
    assert deeper["systems"]["dense"]["index_time_s"] == pytest.approx(
        first["systems"]["dense"]["index_time_s"], abs=0.05
    )


def test_no_cache_recomputes(settings):
    ds = fake_dataset()
    for _ in range(2):
        model = BowModel()
        config = EvalConfig(systems=["dense"], embedder="fake-bow", depth=5, k=5, sweep=[])
        Evaluation(ds, config, settings, use_cache=False, progress=False, embedder=Embedder(model)).run()
        assert model.texts == len(ds.doc_ids) + len(ds.queries)


def test_report_files_agree_with_the_result(settings, tmp_path):
    ds = fake_dataset()
    result = evaluation(
        ds, settings, systems=["bm25", "dense", "dense+rerank"], depth=8, k=5, sweep=[4, 8], sweep_queries=2
    ).run()
    paths = write_report(result, tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) == {"bm25", "dense", "dense+rerank"}
    assert metrics["dense"]["ndcg@5"] == pytest.approx(result["systems"]["dense"]["ndcg@5"])
    report = (tmp_path / "out" / "report.md").read_text()
    for system, vals in metrics.items():
        row = next(line for line in report.splitlines() if line.startswith(f"| `{system}` |"))
        assert f"{vals['ndcg@5']:.4f}" in row and f"{vals['latency_p50_ms']:.1f}" in row
    png = (tmp_path / "out" / "quality_vs_latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    rows = (tmp_path / "out" / "per_query.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["system", "query_id"] and len(rows) == 1 + 3 * len(ds.queries)
    trec = (tmp_path / "out" / "runs" / "dense.trec").read_text().splitlines()
    first_q = trec[0].split()[0]
    assert [line.split()[2] for line in trec if line.split()[0] == first_q] == [
        d for d, _ in result["rankings"]["dense"][first_q]
    ]
    sig = json.loads(open(paths["significance"]).read())
    assert {(p["a"], p["b"]) for p in sig["pairs"]} == {
        ("bm25", "dense"),
        ("bm25", "dense+rerank"),
        ("dense", "dense+rerank"),
    }


def test_report_says_what_the_data_lacked(settings, tmp_path):
    """Judgements naming documents the corpus lacks, and queries skipped for an empty judgement list, are in the
    report beside the figures (metrics.json, report.md, run_config.json), not only in a log line."""
    ds = fake_dataset()
    ds.qrels["t0"]["typo-id"] = 1
    ds.skipped = ["empty-1"]
    result = evaluation(ds, settings, systems=["bm25"], depth=8, k=5, sweep=[]).run()
    write_report(result, tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) == {"bm25"} and metrics["bm25"]["unknown_judged_docs"] == 1
    notes = json.loads((tmp_path / "out" / "run_config.json").read_text())["dataset"]["notes"]
    assert notes["unknown_judged_docs"]["examples"] == {"t0": ["typo-id"]}
    assert notes["skipped_queries"]["count"] == 1
    report = (tmp_path / "out" / "report.md").read_text()
    assert "1 judgement (1 relevant) in 1 query name 1 document that is not in the corpus (t0: typo-id)" in report
    assert "1 query skipped, not evaluated: empty judgement list (empty-1)" in report
    # the typo is a relevant document never found: the figures are what ranx gives with it
    clean = evaluation(fake_dataset(), Settings(home=tmp_path / "h2"), systems=["bm25"], depth=8, k=5, sweep=[]).run()
    assert "unknown_judged_docs" not in clean["systems"]["bm25"] and "notes" not in clean["dataset"]
    assert metrics["bm25"]["recall@8"] < clean["systems"]["bm25"]["recall@8"]


def test_default_sweep_stops_at_depth_unless_asked():
    """Issue 16.11: ``--depth 10`` must not rerank to 200 behind the user's back."""
    assert EvalConfig(systems=["bm25"], depth=10).sweep == [10]
    assert EvalConfig(systems=["bm25"], depth=30).sweep == [10, 20, 30]
    assert EvalConfig(systems=["bm25"], depth=30).retrieve_depth == 30
    asked = EvalConfig(systems=["bm25"], depth=10, sweep=[10, 50])
    assert asked.sweep == [10, 50] and asked.retrieve_depth == 50


def test_plan_predicts_the_pairs_scored_and_then_nothing(settings):
    """The cost printed before a run is the work the run does: pairs the reranker scores, texts embedded."""
    ds = fake_dataset()
    model, scorer = BowModel(), OverlapScorer()
    cfg = {"systems": ["bm25", "dense", "dense+rerank"], "depth": 6, "k": 5, "sweep": [3, 6, 8], "sweep_queries": 2}
    ev = evaluation(ds, settings, embed_model=model, scorer=scorer, latency_queries=3, **cfg)
    plan = ev.plan()
    assert model.calls == 0 and scorer.pairs == 0  # planning loads and runs no model
    ev.run()
    assert plan["pairs_timed"] + plan["pairs_untimed"] == scorer.pairs
    # timed: 3 queries at depth 6, 2 queries at 3 and at 8; untimed: the rest of each list to depth 8
    assert plan["pairs_timed"] == 3 * 6 + 2 * 3 + 2 * 8
    assert plan["texts_to_embed"] == len(ds.doc_ids) + len(ds.queries) == model.texts
    assert plan["cpu_seconds"] > 0
    again = evaluation(ds, settings, latency_queries=3, **cfg).plan()
    assert (again["texts_to_embed"], again["pairs_timed"], again["pairs_untimed"]) == (0, 0, 0)


def test_deterministic_mode_keys_its_own_stages(settings):
    """A deterministic run must not take the scores a batched run cached (they differ by rounding)."""
    ds = fake_dataset()
    det = settings.model_copy(update={"engine": settings.engine.model_copy(update={"deterministic": True})})
    plain = evaluation(ds, settings, systems=["dense+rerank"], embed_model=BowModel(), scorer=OverlapScorer())
    strict = evaluation(ds, det, systems=["dense+rerank"], embed_model=BowModel(), scorer=OverlapScorer())
    for role in ("embedder", "reranker"):
        assert strict._model_identity(role) == {**plain._model_identity(role), "deterministic": True}


def test_a_copied_model_folder_finds_its_stages_and_another_model_does_not(settings, tmp_path, minilm_dir, ce_dir,
                                                                            random_ce_dir, ce):
    """Stage keys name a local model by its content fingerprint, as qrank's live caches do (types.model_key_name),
    never by its path: a byte-identical copy of the folder elsewhere loads every stage and no model, while
    another model computes its own stages."""
    import shutil

    ds = fake_dataset()

    def evaluation_of(embedder, reranker, loaded=None):
        config = EvalConfig(systems=["dense", "dense+rerank"], embedder=str(embedder), reranker=str(reranker),
                            depth=4, k=4, sweep=[], latency_queries=2)
        return Evaluation(ds, config, settings, progress=False, reranker=loaded)

    first = evaluation_of(minilm_dir, ce_dir).run()
    assert not any(s["cached"] for s in first["systems"].values())
    copies = tmp_path / "elsewhere"
    shutil.copytree(minilm_dir, copies / "embedder")
    shutil.copytree(ce_dir, copies / "reranker")

    ev = evaluation_of(copies / "embedder", copies / "reranker")
    again = ev.run()
    assert all(s["cached"] for s in again["systems"].values()), again["cache"]
    assert ev._embedder is None and ev._reranker is None  # everything came from the store: no model loaded
    for system, values in first["systems"].items():
        assert again["systems"][system]["ndcg@4"] == values["ndcg@4"]
        assert again["systems"][system]["latency_p50_ms"] == values["latency_p50_ms"]

    ev = evaluation_of(copies / "embedder", random_ce_dir)
    other = ev.run()
    assert other["systems"]["dense"]["cached"] and not other["systems"]["dense+rerank"]["cached"]
    assert ev._reranker is not None and ev._embedder is None  # only the new reranker's stages were computed

    # a loaded model is keyed by the same rule: the copy and the original give one identity
    copy_loaded = Reranker.from_pretrained(str(copies / "reranker"), device="cpu")
    assert copy_loaded.info.id != ce.info.id
    assert (evaluation_of(minilm_dir, copies / "reranker", copy_loaded)._model_identity("reranker")
            == evaluation_of(minilm_dir, ce_dir, ce)._model_identity("reranker"))
