"""Issue 15.4: the reranker instruction, the Qwen3-Embedding query task and the sentence-transformers query
prompt are three settings and three keywords; the old one-for-all spellings still work, with a warning.

Checked against the backends called directly (the contract's ``instruction`` keyword), with the tiny random
Qwen3 models and the real MiniLM embedder.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from qrank import Embedder, Reranker, Settings
from qrank.cache import CachedEmbedder
from qrank.cli import build_parser
from qrank.cli.common import settings_from_args
from qrank.errors import InvalidInput
from qrank.settings import ModelSettings

QUERY = "how do statins lower cholesterol?"
DOCS = [
    {"id": "d1", "text": "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase."},
    {"id": "d2", "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris."},
    {"id": "d3", "text": "High cholesterol raises the risk of heart disease."},
]
TASK = "Given a medical question, retrieve passages that answer it"
RERANK_TASK = "Judge whether the document is about geography"


# --- settings -------------------------------------------------------------------------------------
def test_role_settings_from_env_do_not_warn(monkeypatch):
    monkeypatch.setenv("QRANK_MODELS__RERANKER_INSTRUCTION", "r")
    monkeypatch.setenv("QRANK_MODELS__QUERY_TASK", "t")
    monkeypatch.setenv("QRANK_MODELS__QUERY_PROMPT", "query: ")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        m = Settings().models
    assert (m.reranker_instruction, m.query_task, m.query_prompt, m.instruction) == ("r", "t", "query: ", None)
    assert [m.instruction_for(k) for k in ("qwen3-reranker", "qwen3-embedding", "st-embedder", "cross-encoder")] == [
        "r", "t", "query: ", None]


def test_old_env_var_warns_and_fills_the_roles_not_given(monkeypatch):
    monkeypatch.setenv("QRANK_MODELS__INSTRUCTION", "old")
    monkeypatch.setenv("QRANK_MODELS__QUERY_PROMPT", "query: ")
    with pytest.warns(DeprecationWarning, match=r"models\.instruction .*use models\.reranker_instruction"):
        m = Settings().models
    assert (m.reranker_instruction, m.query_task, m.query_prompt) == ("old", "old", "query: ")
    # cleared once moved: a copy of the settings neither warns again nor overrides a role set later
    assert m.instruction is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        ModelSettings.model_validate({**m.model_dump(), "query_task": "new"})


# --- the CLI ----------------------------------------------------------------------------------------
def test_cli_flags_per_role(monkeypatch):
    for var in ("INSTRUCTION", "RERANKER_INSTRUCTION", "QUERY_TASK", "QUERY_PROMPT"):
        monkeypatch.delenv(f"QRANK_MODELS__{var}", raising=False)
    parser = build_parser()
    rr = settings_from_args(parser.parse_args(["rerank", "-m", "x", "-q", "q", "--reranker-instruction", "r"]))
    assert rr.models.reranker_instruction == "r" and rr.models.query_task is None
    # on `qrank rerank` the old flag can only mean the reranker's instruction: a plain alias
    alias = settings_from_args(parser.parse_args(["rerank", "-m", "x", "-q", "q", "--instruction", "r"]))
    assert alias.models.reranker_instruction == "r" and alias.models.query_prompt is None
    em = settings_from_args(parser.parse_args(["embed", "-m", "x", "--query-task", "t", "--query-prompt", "p", "a"]))
    assert (em.models.query_task, em.models.query_prompt, em.models.reranker_instruction) == ("t", "p", None)
    with pytest.warns(DeprecationWarning, match="models.query_task"):
        old = settings_from_args(parser.parse_args(["embed", "-m", "x", "--instruction", "o", "a"]))
    assert (old.models.query_task, old.models.query_prompt) == ("o", "o")
    s = parser.parse_args(["search", "-c", "c", "q", "--reranker-instruction", "r", "--query-task", "t"])
    assert (s.reranker_instruction, s.query_task, s.query_prompt, s.instruction) == ("r", "t", None, None)


# --- the Embedder facade ------------------------------------------------------------------------------
def test_query_task_reaches_the_qwen3_embedder_and_prompt_is_refused(qwen3_embedder):
    backend = qwen3_embedder.model
    got = qwen3_embedder.embed(QUERY, is_query=True, query_task=TASK)
    np.testing.assert_allclose(got, backend.embed_batch([QUERY], is_query=True, instruction=TASK)[0], atol=1e-6)
    default = backend.embed_batch([QUERY], is_query=True)[0]
    assert not np.allclose(got, default, atol=1e-3)  # the task changed the vector
    with pytest.raises(InvalidInput, match="query_prompt: qwen3-embedding models take a task"):
        qwen3_embedder.embed(QUERY, is_query=True, query_prompt="query: ")
    with pytest.raises(InvalidInput, match="not both"):
        qwen3_embedder.embed(QUERY, is_query=True, query_task=TASK, query_prompt="query: ")


def test_query_prompt_reaches_the_st_embedder_and_task_is_refused(minilm):
    got = minilm.embed(QUERY, is_query=True, query_prompt="query: ")
    ref = minilm.model.embed_batch([QUERY], is_query=True, instruction="query: ")[0]
    np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_allclose(got, minilm.model.embed_batch(["query: " + QUERY])[0], atol=1e-6)
    with pytest.raises(InvalidInput, match="query_task: st-embedder models take a raw query prefix"):
        minilm.embed(QUERY, is_query=True, query_task=TASK)


def test_old_embed_keyword_warns_and_goes_to_the_models_role(qwen3_embedder, minilm):
    for em, role in ((qwen3_embedder, "query_task"), (minilm, "query_prompt")):
        with pytest.warns(DeprecationWarning, match=r"Embedder\.embed\(instruction=\.\.\.\).*use query_task="):
            old = em.embed(QUERY, is_query=True, instruction="Find it: ")
        np.testing.assert_array_equal(old, em.embed(QUERY, is_query=True, **{role: "Find it: "}))


def test_from_pretrained_per_role_and_old_keyword(qwen3_embedder_dir, minilm_dir):
    loaded = Embedder.from_pretrained(str(qwen3_embedder_dir), device="cpu", dtype="float32", query_task=TASK)
    assert loaded.info.default_instruction == TASK
    with pytest.warns(DeprecationWarning, match=r"Embedder\.from_pretrained\(instruction=\.\.\.\)"):
        old = Embedder.from_pretrained(str(minilm_dir), device="cpu", instruction="query: ")
    assert old.info.default_instruction == "query: "
    with pytest.raises(InvalidInput, match="query_task"):
        Embedder.from_pretrained(str(minilm_dir), device="cpu", query_task=TASK)


def test_a_role_from_settings_that_the_model_does_not_take_is_refused(minilm_dir, monkeypatch, capsys):
    """`qrank embed --query-task` (or QRANK_MODELS__QUERY_TASK) on a sentence-transformers embedder was dropped
    without a word, while the keyword was refused (found 2026-12-07)."""
    from qrank.cli import main

    for var in ("INSTRUCTION", "RERANKER_INSTRUCTION", "QUERY_TASK", "QUERY_PROMPT"):
        monkeypatch.delenv(f"QRANK_MODELS__{var}", raising=False)
    with pytest.raises(InvalidInput, match="use query_prompt") as err:
        Embedder.from_pretrained(str(minilm_dir), settings=Settings(models={"device": "cpu", "query_task": TASK}))
    assert err.value.field == "query_task"
    assert main(["embed", "-m", str(minilm_dir), "--device", "cpu", "--query", "--query-task", TASK, "hello"]) == 2
    assert "query_task" in capsys.readouterr().err
    monkeypatch.setenv("QRANK_MODELS__QUERY_TASK", TASK)
    assert main(["embed", "-m", str(minilm_dir), "--device", "cpu", "--query", "hello"]) == 2
    # both roles given: each model kind takes its own (a server of a Qwen3 and a MiniLM embedder)
    both = Settings(models={"device": "cpu", "query_task": TASK, "query_prompt": "query: "})
    assert Embedder.from_pretrained(str(minilm_dir), settings=both).info.default_instruction == "query: "
    with pytest.warns(DeprecationWarning):  # the old one-for-all setting fills both: never refused
        old = Settings(models={"device": "cpu", "instruction": "query: "})
    assert Embedder.from_pretrained(str(minilm_dir), settings=old).info.default_instruction == "query: "


def test_reranker_from_pretrained_instruction_keeps_its_meaning(qwen3_reranker_dir, qwen3_reranker):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        rr = Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", dtype="float32", instruction=RERANK_TASK)
    assert rr.info.default_instruction == RERANK_TASK
    docs = [d["text"] for d in DOCS]
    ref = qwen3_reranker.model.score_pairs([(QUERY, d) for d in docs], instruction=RERANK_TASK)
    np.testing.assert_allclose(rr.score(QUERY, docs), ref, atol=1e-6)


def test_cached_embedder_per_role_and_old_keyword(tmp_path, minilm):
    from qrank.cache import Cache

    cached = CachedEmbedder(minilm, Cache(tmp_path / "c.sqlite", max_bytes=10**8))
    ref = minilm.model.embed_batch([QUERY], is_query=True, instruction="query: ")[0]
    np.testing.assert_allclose(cached.embed(QUERY, is_query=True, query_prompt="query: "), ref, atol=1e-6)
    with pytest.warns(DeprecationWarning, match=r"Embedder\.embed\(instruction=\.\.\.\)"):
        old = cached.embed(QUERY, is_query=True, instruction="query: ")
    np.testing.assert_allclose(old, ref, atol=1e-6)
    assert cached.embedded == 1  # the old spelling found the entry the new one stored: same effective instruction


# --- Pipeline.search: one value per model -------------------------------------------------------------------
@pytest.fixture
def qwen_pipeline(tmp_path, qwen3_embedder, qwen3_reranker):
    pytest.importorskip("faiss")
    pytest.importorskip("bm25s")
    from qrank.pipeline import Pipeline

    p = Pipeline.open("roles", embedder=qwen3_embedder, reranker=qwen3_reranker, settings=Settings(home=tmp_path))
    p.add(DOCS)
    yield p
    p.close()


def _expected(p, embed_backend, score_backend, *, task, rerank_task):
    """Dense and rerank scores computed from the backends directly, with the given instruction each."""
    qv = embed_backend.embed_batch([QUERY], is_query=True, instruction=task)[0]
    vecs = p.collection.store.vectors([d["id"] for d in DOCS])
    dense = {d["id"]: float(np.max(vecs[d["id"]] @ qv)) for d in DOCS}
    scores = score_backend.score_pairs([(QUERY, d["text"]) for d in DOCS], instruction=rerank_task)
    return dense, dict(zip([d["id"] for d in DOCS], scores.tolist()))


def _check(hits, dense, rerank):
    assert {h.id for h in hits} == set(dense)
    for h in hits:
        assert h.dense_score == pytest.approx(dense[h.id], abs=1e-5)
        assert h.rerank_score == pytest.approx(rerank[h.id], abs=1e-5)


@pytest.mark.parametrize("given", [{"reranker_instruction": RERANK_TASK}, {"query_task": TASK}],
                         ids=["reranker_instruction", "query_task"])
def test_search_gives_each_model_only_its_own_instruction(qwen_pipeline, qwen3_embedder, qwen3_reranker, given):
    hits = qwen_pipeline.search(QUERY, k=3, **given)
    task, rerank_task = given.get("query_task"), given.get("reranker_instruction")
    embed_backend, score_backend = qwen3_embedder.model, qwen3_reranker.model
    dense, rerank = _expected(qwen_pipeline, embed_backend, score_backend, task=task, rerank_task=rerank_task)
    _check(hits, dense, rerank)
    # and the test can see a leak: the value used for the other model too gives other scores
    value = task or rerank_task
    leaked_dense, leaked_rerank = _expected(qwen_pipeline, embed_backend, score_backend, task=value, rerank_task=value)
    leaked, kept = (leaked_dense, dense) if task is None else (leaked_rerank, rerank)
    assert any(abs(leaked[i] - kept[i]) > 1e-4 for i in kept)


def test_search_old_instruction_warns_and_still_reaches_both(qwen_pipeline, qwen3_embedder, qwen3_reranker):
    with pytest.warns(DeprecationWarning, match=r"Pipeline\.search\(instruction=\.\.\.\).*use reranker_instruction="):
        hits = qwen_pipeline.search(QUERY, k=3, instruction=TASK)
    dense, rerank = _expected(qwen_pipeline, qwen3_embedder.model, qwen3_reranker.model, task=TASK, rerank_task=TASK)
    _check(hits, dense, rerank)


def test_search_new_spellings_do_not_warn(qwen_pipeline):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        qwen_pipeline.search(QUERY, k=2, reranker_instruction=RERANK_TASK, query_task=TASK)
    with pytest.raises(InvalidInput, match="query_prompt"):
        qwen_pipeline.search(QUERY, k=2, query_prompt="query: ")
