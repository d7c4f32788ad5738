"""Pre-quantized FP8 checkpoints on the CPU: compressed-tensors FP8_DYNAMIC (per channel, per tensor, sharded) and
Qwen's block fp8, written here from a tiny Qwen3 model by an independent writer (plain torch + safetensors, none of
qrank's quantizer), then loaded by :mod:`qrank.models.fp8_checkpoints`.

Most tests take the load path below the hardware check the way test_fp8.py's ``fp8_tiny`` does (build the
backend over the loaded body, run the gate directly) in float32, where the CPU runs fp8_linear's emulation; the
end-to-end tests let the CPU stand in for an FP8 GPU (``fp8_supported`` says yes) and load in bfloat16.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fp8_checkpoint_writer import (
    E4M3_MAX,
    is_projection,
    write_checkpoint,
    block_config,
    ct_config,
    dequantize_written_blocks,
    quantize_blocks,
    quantize_ct,
)

from qrank.engine.fp8 import Fp8Linear
from qrank.errors import UnsupportedModel
from qrank.models import quantization as qz
from qrank.models.fp8_checkpoints import Fp8Checkpoint, detect_fp8_checkpoint
from qrank.settings import EngineSettings, ModelSettings

PAIRS = [("what is bm25?", "BM25 is a ranking function used by search engines."),
         ("what is bm25?", "The capital of France is Paris."),
         ("高血压的症状", "高血压通常没有明显症状，但可能引起头痛。"),
         ("how do vaccines work", "Vaccines train the immune system to recognise a pathogen.")]


# ---- fixtures and the load below the hardware check ----------------------------------------------------------------

@pytest.fixture(scope="module")
def spread_dir(tmp_path_factory, shared):
    """The suite's tiny Qwen3 reranker with 2.5x the default init spread, as in test_fp8.py."""
    import tiny_models

    return tiny_models.build_qwen3_reranker(tmp_path_factory.mktemp("fp8ckpt-orig"), spread=0.05)


@pytest.fixture(scope="module")
def original(spread_dir):
    """The float32 original, unquantized (its tokenizer and info serve the checkpoints' backends too)."""
    from qrank.models.base import resolve_model
    from qrank.models.qwen3_reranker import Qwen3Reranker

    s = ModelSettings(device="cpu")
    return Qwen3Reranker.load(resolve_model(str(spread_dir), s), s)


@pytest.fixture(scope="module")
def own_fp8(spread_dir):
    """qrank quantizing the original itself (test_fp8.py's fp8_tiny), float32 on the CPU."""
    from qrank.models.base import resolve_model
    from qrank.models.qwen3_reranker import Qwen3Reranker

    s = ModelSettings(device="cpu")
    rr = Qwen3Reranker.load(resolve_model(str(spread_dir), s), s)
    build = lambda: Qwen3Reranker(rr.model, rr.tokenizer, rr.info, EngineSettings())  # noqa: E731
    return qz.quantize_backend(build, rr.model.model, ModelSettings(quantization="fp8"))


def _open(folder):
    cfg = json.loads((folder / "config.json").read_text())
    return Fp8Checkpoint(folder, detect_fp8_checkpoint(cfg))


def _load(folder, original, *, gate=True, install=True):
    """Qwen3Reranker.load's steps for a pre-quantized checkpoint, below the hardware check: the dequantized model,
    then the gate (or the bare install, or neither: the gate's reference). Returns (checkpoint, backend)."""
    from transformers import AutoModelForCausalLM

    from qrank.models.qwen3_reranker import Qwen3Reranker

    ckpt = _open(folder)
    model = ckpt.load_model(AutoModelForCausalLM, dtype=torch.float32)
    info = replace(original.info, id=str(folder), extra={})
    build = lambda: Qwen3Reranker(model, original.tokenizer, info, EngineSettings())  # noqa: E731
    if gate and install:
        return ckpt, ckpt.gate(build, model.model, ModelSettings(quantization="fp8"))
    if install:
        ckpt.install(model.model)
    return ckpt, build()


def _fp8_modules(backend):
    return {name: m for name, m in backend.model.named_modules() if isinstance(m, Fp8Linear)}


# ---- detection ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qc, strategy", [(ct_config("channel"), "channel"), (ct_config("tensor"), "tensor"),
                                          (ct_config(format="naive-quantized"), "channel"),
                                          (block_config((128, 128)), "block")])
def test_detects_the_published_layouts(qc, strategy):
    assert detect_fp8_checkpoint({"quantization_config": qc}).strategy == strategy
    assert detect_fp8_checkpoint({"model_type": "qwen3"}) is None


@pytest.mark.parametrize("qc, named", [
    (ct_config(activations={"dynamic": False, "strategy": "tensor"}), "static activation scales"),
    (ct_config(weights={"num_bits": 4, "type": "int"}), "num_bits=4"),
    (ct_config(weights={"type": "int"}), "type='int'"),
    (ct_config("group", weights={"group_size": 128}), "strategy 'group'"),
    (ct_config(format="pack-quantized"), "format 'pack-quantized'"),
    (ct_config(kv_cache_scheme={"num_bits": 8, "type": "float"}), "kv_cache_scheme"),
    ({**block_config((128, 128)), "activation_scheme": "static"}, "static activation scales"),
    ({"quant_method": "awq", "bits": 4}, "quant_method 'awq'"),
])
def test_unsupported_schemes_are_named(qc, named):
    with pytest.raises(UnsupportedModel) as err:
        detect_fp8_checkpoint({"quantization_config": qc})
    assert named in str(err.value), str(err.value)


# ---- compressed-tensors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shards", [1, 3])
def test_compressed_tensors_loads_bit_exact(spread_dir, original, tmp_path, shards):
    written = quantize_ct(spread_dir)
    folder = write_checkpoint(spread_dir, tmp_path / "ct", written, ct_config(), shards=shards)
    _, fp8 = _load(folder, original, gate=False)
    loaded = _fp8_modules(fp8)
    assert len(loaded) == 7 * len(fp8.model.model.layers)
    for name, m in loaded.items():
        key = name + ".weight"
        assert torch.equal(m.weight_fp8.view(torch.uint8), written[key].view(torch.uint8)), name  # the bits
        assert torch.equal(m.weight_scale, written[key + "_scale"][:, 0]), name
    # what was not quantized arrives as it was (the tied embeddings / LM head, the norms)
    for k, v in written.items():
        if not is_projection(k) and not k.endswith("_scale"):
            assert torch.equal(fp8.model.get_parameter(k), v), k


def test_compressed_tensors_scores_equal_qrank_quantizing_the_original(spread_dir, original, own_fp8, tmp_path):
    """The same recipe: the loaded checkpoint scores as qrank's own quantization of the original, and the gate
    (against the dequantized weights) passes with its numbers and the source in the model info."""
    folder = write_checkpoint(spread_dir, tmp_path / "ct", quantize_ct(spread_dir), ct_config())
    _, fp8 = _load(folder, original)
    np.testing.assert_allclose(fp8.score_pairs(PAIRS), own_fp8.score_pairs(PAIRS), rtol=1e-6, atol=1e-6)
    q = fp8.info.extra["quantization"]
    print("gate on the compressed-tensors checkpoint:", q)
    assert q["source"] == "checkpoint (compressed-tensors FP8_DYNAMIC)" and "dequantized" in q["reference"]
    assert q["check"] == "passed" and q["layers_quantized"] == 14 and q["pairs"] == 80
    assert q["top1_agreement"] == 1.0 and q["max_abs_delta"] < 0.02
    from qrank.cli.serve import _quantization_note

    assert "fp8 from a checkpoint (compressed-tensors FP8_DYNAMIC), vs the checkpoint's weights dequantized" in \
        _quantization_note(fp8.info)


def test_per_tensor_scales_broadcast_per_channel(spread_dir, original, tmp_path):
    written = quantize_ct(spread_dir, "tensor")
    folder = write_checkpoint(spread_dir, tmp_path / "ct-tensor", written, ct_config("tensor"))
    _, fp8 = _load(folder, original, gate=False)
    for name, m in _fp8_modules(fp8).items():
        key = name + ".weight"
        assert torch.equal(m.weight_fp8.view(torch.uint8), written[key].view(torch.uint8))
        assert torch.equal(m.weight_scale, written[key + "_scale"].expand(m.out_features))
        torch.testing.assert_close(m.fp8.dequantize(), written[key].float() * written[key + "_scale"], rtol=0, atol=0)


# ---- Qwen block fp8 ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [(128, 128), (48, 48)])  # one partial block per matrix; several, edges partial
def test_block_checkpoint_is_requantized_per_channel(spread_dir, original, own_fp8, tmp_path, block):
    """Loaded: the written blocks dequantized and requantized per channel. Measured: the second rounding's weight
    error and score error against the original, beside qrank quantizing the original once (printed)."""
    written = quantize_blocks(spread_dir, block)
    folder = write_checkpoint(spread_dir, tmp_path / "blk", written, block_config(block))
    _, dequantized = _load(folder, original, install=False)
    _, fp8 = _load(folder, original)
    orig = load_file(spread_dir / "model.safetensors")
    errs = {"block": [], "requantized": [], "direct": []}
    for name, m in _fp8_modules(fp8).items():
        key = name + ".weight"
        deq = dequantize_written_blocks(written[key], written[key + "_scale_inv"], block)
        # per output channel from the dequantized blocks: scale max|row| / 448, values e4m3(row / scale)
        scale = deq.abs().amax(dim=1) / E4M3_MAX
        assert torch.equal(m.weight_scale, scale), name
        assert torch.equal(m.weight_fp8.view(torch.uint8),
                           (deq / scale[:, None]).to(torch.float8_e4m3fn).view(torch.uint8)), name
        assert torch.equal(dequantized.model.get_parameter(key), deq), name  # the gate's reference
        w, norm = orig[key].float(), orig[key].float().norm()
        errs["block"].append(float((deq - w).norm() / norm))
        errs["requantized"].append(float((m.fp8.dequantize() - w).norm() / norm))
        own = dict(own_fp8.model.named_modules())[name]
        errs["direct"].append(float((own.fp8.dequantize() - w).norm() / norm))
    mean = {k: float(np.mean(v)) for k, v in errs.items()}
    exact = original.score_pairs(PAIRS)
    delta = {name: float(np.abs(b.score_pairs(PAIRS) - exact).max())
             for name, b in (("block", dequantized), ("requantized", fp8), ("direct", own_fp8))}
    q = fp8.info.extra["quantization"]
    print(f"block {block}: relative weight error (Frobenius, mean over projections) of the block checkpoint "
          f"{mean['block']:.4f}, requantized per channel {mean['requantized']:.4f}, qrank from the original "
          f"{mean['direct']:.4f}; max |Δ score| vs the original on {len(PAIRS)} pairs: block weights "
          f"{delta['block']:.4f}, requantized + FP8 activations {delta['requantized']:.4f}, qrank from the original "
          f"{delta['direct']:.4f}; gate {q}")
    # two independent roundings: about sqrt(2) times one, never twice
    assert mean["direct"] < mean["requantized"] < 1.7 * mean["direct"]
    assert delta["requantized"] < 0.05 and q["max_abs_delta"] < 0.05  # these scores sit around 0.5
    assert q["source"] == f"checkpoint (fp8 block {block[0]}x{block[1]}, requantized per channel)"
    assert q["check"] == "passed" and "requantized" in q["weights"]


# ---- refusals ------------------------------------------------------------------------------------------------------

def test_gate_catches_a_scale_layout_bug(spread_dir, original, tmp_path, monkeypatch):
    """What the gate is for with a pre-quantized checkpoint: a loader that misreads the scales' layout (here each
    row gets its neighbour's scale) is refused against the dequantized weights."""
    from qrank.engine.fp8 import Fp8Weight

    folder = write_checkpoint(spread_dir, tmp_path / "ct", quantize_ct(spread_dir), ct_config())
    real = Fp8Checkpoint.fp8_weight

    def misread(self, module):
        w = real(self, module)
        return Fp8Weight(w.data, w.scale.roll(1))

    monkeypatch.setattr(Fp8Checkpoint, "fp8_weight", misread)
    with pytest.raises(UnsupportedModel) as err:
        _load(folder, original)
    msg = str(err.value)
    assert err.value.field == "quantization" and "compressed-tensors FP8_DYNAMIC" in msg and "dequantized" in msg
    assert "Kendall tau" in msg and "max |Δ score|" in msg


@pytest.mark.parametrize("corrupt, named", [
    (lambda t, k: t.__setitem__(k + "_scale", t[k + "_scale"][:-1]), "weight_scale is F32 [63, 1]"),
    (lambda t, k: t.__setitem__(k + "_scale", t[k + "_scale"].reshape(-1, 2)), "a float tensor of shape [64, 1]"),
    (lambda t, k: t.__setitem__(k, t[k].float()), "a 2-D float8_e4m3fn (F8_E4M3) matrix expected"),
    (lambda t, k: t.pop(k + "_scale"), "is FP8 but has no weight_scale"),
    (lambda t, k: t[k + "_scale"].__setitem__(0, float("nan")), "NaN scales"),
])
def test_corrupt_checkpoints_fail_clearly(spread_dir, original, tmp_path, corrupt, named):
    tensors = quantize_ct(spread_dir)
    corrupt(tensors, "model.layers.1.self_attn.q_proj.weight")
    folder = write_checkpoint(spread_dir, tmp_path / "bad", tensors, ct_config())
    with pytest.raises(UnsupportedModel) as err:
        _load(folder, original)
    assert named in str(err.value) and "corrupt or mismatched FP8 checkpoint" in str(err.value), str(err.value)


def test_block_scale_shape_and_missing_shard(spread_dir, original, tmp_path):
    tensors = quantize_blocks(spread_dir, (48, 48))
    tensors["model.layers.0.mlp.down_proj.weight_scale_inv"] = torch.ones(2, 2)  # (64, 128): 2 x 3 blocks of 48
    with pytest.raises(UnsupportedModel, match=r"down_proj.weight_scale_inv is F32 \[2, 2\].*shape \[2, 3\]"):
        _load(write_checkpoint(spread_dir, tmp_path / "bad-blk", tensors, block_config((48, 48))), original)
    sharded = write_checkpoint(spread_dir, tmp_path / "shards", quantize_ct(spread_dir), ct_config(), shards=2)
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(UnsupportedModel, match="missing shards"):
        _open(sharded)


# ---- through the doors ---------------------------------------------------------------------------------------------

def test_prequantized_checkpoint_on_the_cpu_is_refused_naming_it(spread_dir, tmp_path):
    from qrank import Reranker

    folder = write_checkpoint(spread_dir, tmp_path / "ct", quantize_ct(spread_dir), ct_config())
    with pytest.raises(UnsupportedModel) as err:
        Reranker.from_pretrained(str(folder), device="cpu")  # quantization='none' (the default)
    msg = str(err.value)
    assert err.value.field == "quantization"
    assert "pre-quantized FP8 checkpoint (compressed-tensors FP8_DYNAMIC)" in msg and "compute capability" in msg
    assert "device 'cpu' is not a CUDA GPU" in msg and "bfloat16 original" in msg
    assert "use quantization='none'" not in msg  # 'none' loads this checkpoint in FP8 as well
    unsupported = write_checkpoint(spread_dir, tmp_path / "static", quantize_ct(spread_dir),
                         ct_config(activations={"dynamic": False, "strategy": "tensor"}))
    with pytest.raises(UnsupportedModel, match="static activation scales"):  # named before the hardware's refusal
        Reranker.from_pretrained(str(unsupported), device="cpu")


def _bf16_copy(src, dst):
    """``src`` with its weights rounded to bfloat16, as a published bfloat16 original holds them (stored in float32,
    so the writer and qrank's own quantization of a bfloat16 load start from the same values)."""
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    save_file({k: v.to(torch.bfloat16).float() for k, v in load_file(src / "model.safetensors").items()},
              dst / "model.safetensors")
    return dst


@pytest.fixture
def cpu_as_fp8_gpu(monkeypatch):
    """The CPU stands in for an FP8 GPU: fp8_supported says yes, and tensors off CUDA send fp8_linear to its
    emulation (test-local; nothing global is added)."""
    from qrank.engine import fp8

    monkeypatch.setattr(fp8, "fp8_supported", lambda device: (True, ""))


def test_reranker_from_pretrained_loads_fp8_with_quantization_none(spread_dir, tmp_path, cpu_as_fp8_gpu, caplog):
    from qrank import Reranker

    src = _bf16_copy(spread_dir, tmp_path / "bf16")
    folder = write_checkpoint(src, tmp_path / "ct", quantize_ct(src), ct_config(), shards=2)
    with caplog.at_level(logging.INFO, logger="qrank.models.fp8_checkpoints"):
        rr = Reranker.from_pretrained(str(folder), device="cpu", dtype="bfloat16")
    assert any("pre-quantized FP8" in r.getMessage() and "quantization='none'" in r.getMessage()
               for r in caplog.records)
    info = rr.info
    assert info.revision.endswith("+fp8") and info.dtype == "bfloat16"
    assert info.extra["quantization"]["source"] == "checkpoint (compressed-tensors FP8_DYNAMIC)"
    assert info.extra["quantization"]["check"] == "passed"
    own = Reranker.from_pretrained(str(src), device="cpu", dtype="bfloat16", quantization="fp8")
    assert own.info.revision.endswith("+fp8") and "source" not in own.info.extra["quantization"]
    np.testing.assert_allclose(rr.score([q for q, _ in PAIRS][0], [d for _, d in PAIRS]),
                               own.score([q for q, _ in PAIRS][0], [d for _, d in PAIRS]), atol=1e-6)


def test_checkpoint_with_fast_accumulation(spread_dir, tmp_path, cpu_as_fp8_gpu):
    """``quantization_fast_accumulation`` reaches a checkpoint's installed FP8 weights too (set after install, as after
    qrank's own quantization), and its revision and card say so."""
    from qrank import Reranker
    from qrank.engine.fp8 import Fp8Linear

    folder = write_checkpoint(spread_dir, tmp_path / "ct", quantize_ct(spread_dir), ct_config())
    rr = Reranker.from_pretrained(str(folder), device="cpu", dtype="bfloat16", quantization_fast_accumulation=True)
    modules = [m for m in rr.model.model.modules() if isinstance(m, Fp8Linear)]
    assert len(modules) == 14 and all(m.fast_accum for m in modules)
    assert rr.info.revision.endswith("+fp8-fastacc")
    q = rr.info.extra["quantization"]
    assert q["accumulation"] == "fast" and q["source"] == "checkpoint (compressed-tensors FP8_DYNAMIC)"


def test_embedder_checkpoint_loads(qwen3_embedder_dir, tmp_path, cpu_as_fp8_gpu):
    """A Qwen3-Embedding checkpoint (``Qwen3Model``: keys without the ``model.`` prefix) through the embedder's
    load path: the same vectors as qrank quantizing the bfloat16 original."""
    from qrank import Embedder

    src = _bf16_copy(qwen3_embedder_dir, tmp_path / "bf16")
    written = quantize_ct(src)
    assert written and not any(k.startswith("model.") for k in written)
    folder = write_checkpoint(src, tmp_path / "emb-ct", written, ct_config())
    # the tiny embedder's cosines crowd together, so near-ties may cost it top-1 under any rounding: no verdict here
    em = Embedder.from_pretrained(str(folder), device="cpu", dtype="bfloat16", quantization_check=False)
    q = em.info.extra["quantization"]
    print("gate on the tiny embedder checkpoint:", q)
    assert q["source"] == "checkpoint (compressed-tensors FP8_DYNAMIC)" and q["layers_quantized"] == 14
    assert em.info.revision.endswith("+fp8") and q["max_abs_delta"] < 0.05
    own = Embedder.from_pretrained(str(src), device="cpu", dtype="bfloat16", quantization="fp8",
                                   quantization_check=False)
    texts = ["a query", "a passage about bm25", "高血压的症状"]
    np.testing.assert_allclose(em.embed(texts), own.embed(texts), atol=1e-6)
