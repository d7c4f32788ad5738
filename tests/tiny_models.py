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


def build_qwen3_reranker(dst: Path, seed: int = 0, *, spread: float | None = None, dtype=None) -> Path:
    """A tiny Qwen3ForCausalLM with the real Qwen tokenizer, saved like the published checkpoint.

    ``spread``: the init's standard deviation (the FP8 tests take 0.05, 2.5x the default: the default's scores
    crowd within ~0.01 of 0.5, so near-ties flip the top-1 under any rounding); ``dtype``: saved in it."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    extra = {"initializer_range": spread} if spread else {}
    model = Qwen3ForCausalLM(_qwen3_config("qwen3-reranker-0.6b.json", **extra)).eval()
    if dtype is not None:
        model = model.to(dtype)
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


def build_xlmr_tokenizer(dst: Path, vocab_size: int = 2000) -> Path:
    """A SentencePiece-style Unigram tokenizer trained here on SciFact abstracts, wrapped as XLM-R's
    (``<s> A </s></s> B </s>``, pad id 1, no segment ids): no XLM-R vocabulary is available offline."""
    import json as _json

    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaTokenizerFast

    with open(shared_path("datasets", "scifact", "corpus.jsonl"), encoding="utf-8") as f:
        texts = [_json.loads(line)["text"] for line, _ in zip(f, range(2000))]
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                           unk_token="<unk>", show_progress=False)
    tok = XLMRobertaTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                  cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                  model_max_length=512)
    dst.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(dst)
    return dst


def build_random_encoder(dst: Path, tokenizer_dir: Path, model_type: str, role: str, pooling: str = "mean",
                         seed: int = 0) -> Path:
    """A tiny random XLM-R / ModernBERT / BERT sequence classifier (``role="reranker"``) or sentence-transformers
    embedder (``role="embedder"``, Transformer + Pooling(``pooling``) + Normalize), with ``tokenizer_dir``'s vocab."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    # a wide init: scores that differ visibly between inputs (the default 0.02 gives near-equal ones)
    extra = dict(pad_token_id=tok.pad_token_id, max_position_embeddings=514, initializer_range=0.2, hidden_size=64,
                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=1)
    if model_type == "xlm-roberta":
        extra.update(type_vocab_size=1, bos_token_id=0, eos_token_id=2)
    if model_type == "modernbert":
        extra.update(global_attn_every_n_layers=2, local_attention=16, num_hidden_layers=3, classifier_pooling=pooling)
    cfg = AutoConfig.for_model(model_type, vocab_size=len(tok), **extra)
    torch.manual_seed(seed)
    model = (AutoModelForSequenceClassification if role == "reranker" else AutoModel).from_config(cfg).eval()
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    if role == "embedder":
        from qrank.models.st_embedder import write_st_layout

        write_st_layout(dst, 64, pooling, max_seq_length=256)
    return dst
