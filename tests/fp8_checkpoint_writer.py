"""An independent writer of pre-quantized FP8 checkpoints (plain torch + safetensors, none of qrank's quantizer):
compressed-tensors FP8_DYNAMIC as llm-compressor writes it and Qwen's block fp8, from an unquantized folder.
Used by tests/numerics/test_fp8_checkpoints.py (CPU) and tests/gpu/test_fp8_gpu.py (the real kernels)."""

from __future__ import annotations

import json
import shutil

import torch
from safetensors.torch import load_file, save_file

E4M3_MAX = 448.0
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_projection(key: str) -> bool:
    parts = key.split(".")
    return parts[-1] == "weight" and parts[-2] in PROJECTIONS


def ct_config(strategy="channel", weights=None, activations=None, **top) -> dict:
    """A compressed-tensors quantization_config as llm-compressor writes FP8_DYNAMIC."""
    w = {"num_bits": 8, "type": "float", "strategy": strategy, "symmetric": True, "dynamic": False, **(weights or {})}
    a = {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True, "dynamic": True, **(activations or {})}
    return {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
            "ignore": ["lm_head"], "config_groups": {"group_0": {"targets": ["Linear"], "weights": w,
                                                                 "input_activations": a}}, **top}


def block_config(block) -> dict:
    return {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": list(block), "fmt": "e4m3"}


def write_checkpoint(src, dst, tensors: dict, qc: dict, shards: int = 1):
    """``tensors`` as the checkpoint at ``dst`` (config with ``qc``, ``src``'s tokenizer); shards round-robin, so a
    module's weight and its scale sit in different files."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = qc
    (dst / "config.json").write_text(json.dumps(cfg))
    if shards == 1:
        save_file(tensors, dst / "model.safetensors")
        return dst
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {k: names[i % shards] for i, k in enumerate(sorted(tensors))}
    for name in names:
        save_file({k: v for k, v in tensors.items() if weight_map[k] == name}, dst / name)
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dst


def quantize_ct(src, strategy="channel") -> dict:
    """Every projection: scale = max|row| / 448 (or max|W| / 448), weight = e4m3(W / scale)."""
    out = {}
    for k, w in load_file(src / "model.safetensors").items():
        if is_projection(k):
            w = w.float()
            amax = w.abs().amax(dim=1, keepdim=True) if strategy == "channel" else w.abs().amax().reshape(1)
            scale = amax / E4M3_MAX
            out[k], out[k + "_scale"] = (w / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale
        else:
            out[k] = w
    return out


def quantize_blocks(src, block) -> dict:
    """Every projection in (bn, bk) blocks (the edges zero-padded): scale_inv = max|block| / 448."""
    bn, bk = block
    out = {}
    for k, w in load_file(src / "model.safetensors").items():
        if not is_projection(k):
            out[k] = w
            continue
        n, kk = w.shape
        nb, kb = -(-n // bn), -(-kk // bk)
        padded = torch.zeros(nb * bn, kb * bk)
        padded[:n, :kk] = w.float()
        blocks = padded.reshape(nb, bn, kb, bk)
        scale = blocks.abs().amax(dim=(1, 3)) / E4M3_MAX
        q = (blocks / scale[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).reshape(nb * bn, kb * bk)[:n, :kk]
        out[k], out[k + "_scale_inv"] = q.contiguous().to(torch.float8_e4m3fn), scale
    return out


def dequantize_written_blocks(data, scale, block):
    """The independent inverse: pad, multiply block by block, cut."""
    bn, bk = block
    n, k = data.shape
    nb, kb = scale.shape
    padded = torch.zeros(nb * bn, kb * bk)
    padded[:n, :k] = data.float()
    return (padded.reshape(nb, bn, kb, bk) * scale[:, None, :, None]).reshape(nb * bn, kb * bk)[:n, :k]
