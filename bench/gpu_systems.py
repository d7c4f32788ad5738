"""Workloads, systems and floors for bench/gpu_bench.py (kept apart so the driver stays short).

Systems compared on the same in-memory model:
  official  the model cards' transformers recipes: batches of 8 in the caller's order, left padding,
            full causal-LM logits (reranker) / last-token pooling (embedder)
  baseline  transformers best effort: length-sorted batches of 32, last-position logits only
            (``logits_to_keep=1``); sentence-transformers ``encode`` for the embedder
  qrank     qrank's Qwen3 backends on the fast engine
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from qrank.models.qwen3_reranker import DEFAULT_INSTRUCTION, PREFIX, SUFFIX, format_user_turn

SHARED = Path(os.environ.get("QRANK_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
PEAK_TFLOPS = 800.0  # bf16 dense matmul rate the floor assumes (H100/H200 measured ~790-800)


# ---------------------------------------------------------------- models


def build_model(kind: str, size: str, device: str = "cuda", tiny: bool = False):
    """Random bf16 weights of a real Qwen3 shape, built directly on the GPU (never downloaded).

    ``tiny`` shrinks the shape (for a CPU smoke run of the script)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    raw = json.loads((SHARED / "configs" / f"qwen3-{kind}-{size}.json").read_text())
    raw.pop("architectures", None)
    raw.pop("torch_dtype", None)
    if tiny:
        raw.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16)
    cfg = Qwen3Config(**raw)
    cls = Qwen3ForCausalLM if kind == "reranker" else Qwen3Model
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = cls(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    return model, cfg


def tokenizer_for(kind: str):
    from transformers import AutoTokenizer

    name = "qwen3" if kind == "reranker" else "qwen3-embedding"
    return AutoTokenizer.from_pretrained(str(SHARED / "tokenizers" / name), padding_side="left")


def non_embedding_params(cfg) -> int:
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    per_layer = h * d * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads) + 3 * h * i
    return per_layer * cfg.num_hidden_layers


# ---------------------------------------------------------------- workloads


def _scifact():
    corpus, queries = [], []
    cpath, qpath = SHARED / "datasets" / "scifact" / "corpus.jsonl", SHARED / "datasets" / "scifact" / "queries.jsonl"
    if cpath.is_file():
        corpus = [(r.get("title", "") + ". " + r["text"]).strip() for r in map(json.loads, cpath.open())]
        queries = [r["text"] for r in map(json.loads, qpath.open())]
    if len(corpus) < 100:  # synthetic fallback: deterministic word soup
        rng = random.Random(0)
        words = "cell protein gene study patients risk model data effect brain cancer immune response".split()
        corpus = [" ".join(rng.choice(words) for _ in range(600)) for _ in range(2000)]
        queries = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(300)]
    return corpus, queries


def documents(tok, n: int, seed: int, lo: int = 50, hi: int = 450) -> list[str]:
    """``n`` texts of ``lo``..``hi`` tokens (uniform), cut from SciFact abstracts."""
    corpus, _ = _scifact()
    rng = random.Random(seed)
    texts = rng.sample(corpus, n)
    out = []
    for t in texts:
        want = rng.randint(lo, hi)
        ids = tok(t, add_special_tokens=False)["input_ids"]
        while len(ids) < want:
            ids = ids + tok(" " + rng.choice(corpus), add_special_tokens=False)["input_ids"]
        out.append(tok.decode(ids[:want]))
    return out


def queries_for(tok, n: int, seed: int, prefix_tokens: int = 80) -> list[str]:
    """Queries padded so template + instruction + query is about ``prefix_tokens`` tokens."""
    _, queries = _scifact()
    rng = random.Random(seed)
    head = len(tok(PREFIX + format_user_turn(DEFAULT_INSTRUCTION, "", ""), add_special_tokens=False)["input_ids"])
    out = []
    for q in rng.sample(queries, n):
        ids = tok(q, add_special_tokens=False)["input_ids"]
        while len(ids) < prefix_tokens - head:
            ids = ids + tok(" " + rng.choice(queries), add_special_tokens=False)["input_ids"]
        out.append(tok.decode(ids[: max(prefix_tokens - head, 1)]))
    return out


# ---------------------------------------------------------------- floors


def attention_flops(cfg, rows: list[tuple[int, int]]) -> float:
    """Causal attention FLOPs (QK^T and PV) for rows of (prefix keys seen, own tokens), all layers."""
    per = 4 * cfg.num_attention_heads * cfg.head_dim
    total = sum(q * p + q * (q + 1) / 2 for p, q in rows)
    return per * total * cfg.num_hidden_layers


def floor_seconds(cfg, computed_tokens: int, rows) -> float:
    flops = 2 * non_embedding_params(cfg) * computed_tokens + attention_flops(cfg, rows)
    return flops / (PEAK_TFLOPS * 1e12)


# ---------------------------------------------------------------- reranker systems


class RerankSystems:
    def __init__(self, model, tok, max_length: int = 8192) -> None:
        self.model, self.tok = model, tok
        self.prefix = tok.encode(PREFIX, add_special_tokens=False)
        self.suffix = tok.encode(SUFFIX, add_special_tokens=False)
        self.yes, self.no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
        self.max_length = max_length

    def _ids(self, pairs):
        texts = [format_user_turn(DEFAULT_INSTRUCTION, q, d) for q, d in pairs]
        room = self.max_length - len(self.prefix) - len(self.suffix)
        enc = self.tok(texts, padding=False, truncation="longest_first", return_attention_mask=False, max_length=room)
        return [self.prefix + ids + self.suffix for ids in enc["input_ids"]]

    def fed_tokens(self, pairs) -> int:
        return sum(len(x) for x in self._ids(pairs))

    @torch.inference_mode()
    def official(self, pairs, batch_size: int = 8):
        scores = []
        for s in range(0, len(pairs), batch_size):
            ids = self._ids(pairs[s : s + batch_size])
            inputs = self.tok.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.model.device)
            logits = self.model(**inputs).logits[:, -1, :]
            pair = torch.stack([logits[:, self.no], logits[:, self.yes]], dim=1).float()
            scores.extend(F.log_softmax(pair, dim=1)[:, 1].exp().tolist())
        return scores

    @torch.inference_mode()
    def baseline(self, pairs, batch_size: int = 32):
        ids = self._ids(pairs)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = torch.empty(len(ids), device=self.model.device)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            inputs = self.tok.pad({"input_ids": [ids[i] for i in idx]}, padding=True, return_tensors="pt").to(
                self.model.device
            )
            logits = self.model(**inputs, logits_to_keep=1).logits[:, -1, :]
            pair = torch.stack([logits[:, self.no], logits[:, self.yes]], dim=1).float()
            out[torch.as_tensor(idx, device=out.device)] = F.log_softmax(pair, dim=1)[:, 1].exp()
        return out.tolist()


# ---------------------------------------------------------------- embedder systems


class EmbedSystems:
    def __init__(self, model, tok, max_length: int = 8192) -> None:
        self.model, self.tok, self.max_length = model, tok, max_length

    def fed_tokens(self, texts) -> int:
        return sum(len(x) for x in self.tok(texts, truncation=True, max_length=self.max_length)["input_ids"])

    @torch.inference_mode()
    def official(self, texts, batch_size: int = 8):
        out = []
        for s in range(0, len(texts), batch_size):
            batch = self.tok(texts[s : s + batch_size], padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
            hidden = self.model(**batch.to(self.model.device)).last_hidden_state[:, -1]  # left padding
            out.append(F.normalize(hidden.float(), p=2, dim=1).cpu())
        return torch.cat(out).numpy()

    def sentence_transformers(self, workdir: Path):
        """A SentenceTransformer over the same weights (saved once, as the published layout)."""
        from sentence_transformers import SentenceTransformer

        workdir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(workdir)
        self.tok.save_pretrained(workdir)
        mods = [("0", "", "Transformer"), ("1", "1_Pooling", "Pooling"), ("2", "2_Normalize", "Normalize")]
        (workdir / "modules.json").write_text(
            json.dumps(
                [{"idx": int(i), "name": i, "path": p, "type": f"sentence_transformers.models.{t}"} for i, p, t in mods]
            )
        )
        (workdir / "1_Pooling").mkdir(exist_ok=True)
        (workdir / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {"word_embedding_dimension": self.model.config.hidden_size, "pooling_mode_lasttoken": True,
                 "include_prompt": True}
            )
        )
        (workdir / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_length, "do_lower_case": False})
        )
        return SentenceTransformer(str(workdir), device=str(self.model.device), model_kwargs={"dtype": torch.bfloat16})
