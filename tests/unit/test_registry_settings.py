"""Model kinds come from config.json and files, never names; settings come from env and flags."""

from __future__ import annotations

import json

import pytest

from qrank.errors import ModelNotFound, UnsupportedModel
from qrank.models.registry import detect_kind, load_model
from qrank.settings import Settings


@pytest.mark.parametrize(
    "config,files,kind",
    [
        ({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}, [], "qwen3-reranker"),
        ({"model_type": "qwen3", "architectures": ["Qwen3ForSequenceClassification"]}, [], "qwen3-reranker-seq-cls"),
        ({"model_type": "qwen3", "architectures": ["Qwen3Model"]}, ["modules.json"], "qwen3-embedding"),
        ({"model_type": "bert", "architectures": ["BertForSequenceClassification"]}, [], "cross-encoder"),
        ({"model_type": "xlm-roberta", "architectures": ["XLMRobertaForSequenceClassification"]}, [], "cross-encoder"),
        ({"model_type": "modernbert", "architectures": ["ModernBertForSequenceClassification"]}, [], "cross-encoder"),
        ({"model_type": "bert", "architectures": ["BertModel"]}, ["modules.json"], "st-embedder"),
    ],
)
def test_kind_from_config(tmp_path, config, files, kind):
    for f in files:
        (tmp_path / f).write_text("[]")
    assert detect_kind(config, tmp_path).name == kind


def test_name_does_not_decide_the_kind(tmp_path):
    # a folder *named* like a reranker but holding an embedder config is an embedder
    d = tmp_path / "Qwen3-Reranker-0.6B"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    assert detect_kind(json.loads((d / "config.json").read_text()), d).name == "st-embedder"
    with pytest.raises(UnsupportedModel, match="Embedder"):
        load_model(str(d), "reranker")


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(UnsupportedModel):
        detect_kind({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}, tmp_path)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound):
        load_model(str(tmp_path / "nope"), "reranker")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="config.json"):
        load_model(str(tmp_path / "empty"), "reranker")


def test_hub_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="Qwen/Qwen3-Reranker-0.6B"):
        load_model("Qwen/Qwen3-Reranker-0.6B", "reranker")


def test_settings_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("QRANK_ENGINE__MAX_BATCH_TOKENS", "4096")
    monkeypatch.setenv("QRANK_MODELS__DTYPE", "bfloat16")
    monkeypatch.setenv("QRANK_HOME", str(tmp_path))
    s = Settings()
    assert s.engine.max_batch_tokens == 4096 and s.models.dtype == "bfloat16" and s.home == tmp_path


def test_bad_setting_is_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(engine={"max_batch_tokens": 0})


def test_the_removed_index_fusion_key_of_old_configs_is_ignored(monkeypatch):
    # index.fusion had one value ("rrf") and nothing read it; old environments and configs must still load
    monkeypatch.setenv("QRANK_INDEX__FUSION", "rrf")
    monkeypatch.setenv("QRANK_INDEX__RRF_K", "30")
    s = Settings()
    assert s.index.rrf_k == 30 and not hasattr(s.index, "fusion")
    assert Settings(index={"fusion": "rrf", "rrf_k": 7}).index.rrf_k == 7


def test_engine_num_threads_applies_where_models_load(ce_dir):
    """``engine.num_threads`` (a setting the CLI used to apply itself) sets torch's CPU threads at load."""
    import torch

    from qrank.settings import EngineSettings, ModelSettings

    before = torch.get_num_threads()
    want = 2 if before != 2 else 1  # a value other than the current one
    try:
        load_model(str(ce_dir), "reranker", ModelSettings(device="cpu"), EngineSettings(num_threads=want))
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", ""])
def test_an_unknown_device_is_refused_by_the_settings(device):
    """'gpu' reached torch and came back as a traceback from deep in the load (found 2026-12-07)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="is not a device: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        Settings(models={"device": device})
    assert Settings(models={"device": " CUDA:1 "}).models.device == "cuda:1"


def test_a_cuda_device_that_is_not_there_is_a_clear_error(ce_dir):
    import torch

    from qrank import Reranker
    from qrank.errors import InvalidInput
    from qrank.models.base import pick_device

    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last visible GPU (cuda:0 on a CPU machine)
    with pytest.raises(InvalidInput) as err:
        pick_device(missing)
    assert err.value.field == "device" and "is not available here" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        Reranker.from_pretrained(str(ce_dir), device=missing)
    assert err.value.field == "device"


def test_index_chunk_overlap_must_be_smaller_than_the_window():
    """QRANK_INDEX__CHUNK_TOKENS=32 (default overlap 64) was accepted and shown by `index info` as used."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"chunk_overlap \(64\) must be smaller than chunk_tokens \(32\)"):
        Settings(index={"chunk_tokens": 32})
    assert Settings(index={"chunk_tokens": 32, "chunk_overlap": 8}).index.chunk_overlap == 8
