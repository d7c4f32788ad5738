"""Tiny randomly initialised models built from the real architectures and the real tokenizers in ../shared.

They prove numerics and plumbing, never retrieval quality.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# ../shared beside the checkout; QRANK_SHARED_DIR points elsewhere (e.g. a carried copy on a GPU box)
SHARED = Path(os.environ.get("QRANK_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16)


def shared_path(*parts: str) -> Path:
    return SHARED.joinpath(*parts)


def _qwen3_config(name: str, **overrides):
    from transformers import Qwen3Config

    raw = json.loads(shared_path("configs", name).read_text())
    raw.update(TINY)
    raw.update(overrides)
    raw.pop("architectures", None)
    raw.pop("torch_dtype", None)
    return Qwen3Config(**raw)


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file() and f.suffix in (".json", ".txt") and f.name not in ("config.json", "generation_config.json"):
            shutil.copy(f, dst / f.name)


def build_qwen3_reranker(dst: Path, seed: int = 0) -> Path:
    """A tiny Qwen3ForCausalLM with the real Qwen tokenizer, saved like the published checkpoint."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(_qwen3_config("qwen3-reranker-0.6b.json")).eval()
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    _copy_tokenizer(shared_path("tokenizers", "qwen3"), dst)
    return dst


def build_qwen3_seq_cls(causal_dir: Path, dst: Path) -> Path:
    """Convert a causal reranker to a one-label Qwen3ForSequenceClassification (score row = w_yes - w_no)."""
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM, Qwen3ForSequenceClassification

    causal = Qwen3ForCausalLM.from_pretrained(causal_dir).eval()
    tok = AutoTokenizer.from_pretrained(causal_dir)
    cfg = causal.config
    cfg.num_labels = 1
    cfg.architectures = ["Qwen3ForSequenceClassification"]
    cfg.pad_token_id = tok.pad_token_id
    seq = Qwen3ForSequenceClassification(cfg).eval()
    seq.model.load_state_dict(causal.model.state_dict())
    w = causal.lm_head.weight
    with torch.no_grad():
        seq.score.weight.copy_((w[tok.convert_tokens_to_ids("yes")] - w[tok.convert_tokens_to_ids("no")])[None])
    dst.mkdir(parents=True, exist_ok=True)
    seq.save_pretrained(dst)
    _copy_tokenizer(causal_dir, dst)
    return dst


def build_qwen3_embedder(dst: Path, seed: int = 0) -> Path:
    """A tiny Qwen3Model with the real Qwen3-Embedding tokenizer (appends <|endoftext|>, pads left)."""
    import torch
    from transformers import Qwen3Model

    torch.manual_seed(seed)
    model = Qwen3Model(_qwen3_config("qwen3-embedding-0.6b.json")).eval()
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    _copy_tokenizer(shared_path("tokenizers", "qwen3-embedding"), dst)
    return dst


def build_random_cross_encoder(dst: Path, seed: int = 0) -> Path:
    """A random BertForSequenceClassification(num_labels=1) from all-MiniLM-L6-v2's config and vocab."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    src = shared_path("models", "all-MiniLM-L6-v2")
    cfg = BertConfig.from_pretrained(src, num_labels=1)
    model = BertForSequenceClassification(cfg).eval()
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, dst / name)
    return dst
