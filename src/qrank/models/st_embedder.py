"""Sentence-transformers embedders (MiniLM, bge, e5, gte…): Transformer → Pooling (→ Normalize).

Vectors equal ``SentenceTransformer.encode(..., normalize_embeddings=True)`` for the same folder. The
folder's ``modules.json`` is read as data; a module qrank does not implement is refused by name. Other
dimensions than the full one (``dim``) are offered only when the folder declares Matryoshka training
(:func:`declares_matryoshka`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UnsupportedModel
from ..settings import EngineSettings, ModelSettings
from ..types import ModelInfo
from .base import Encoded, ResolvedModel, dtype_name, load_tokenizer, one_by_one, pick_device, pick_dtype
from . import packed_encoder, packed_runs
from .hf_encoder import (
    check_quantization,
    quantization_info,
    max_input_length,
    quantize_padded,
    run_encoder_batches,
    to_encoded,
    to_features,
    tokenize_texts,
)
from .pooling import finish_embeddings, pool

log = logging.getLogger(__name__)

# model-card tags that say the vectors were trained to be cut: the hub's "matryoshka", and the ``loss:<class>`` tags
# sentence-transformers' trainer writes into README.md (MatryoshkaLoss, Matryoshka2dLoss)
MATRYOSHKA_TAGS = frozenset({"matryoshka", "loss:matryoshkaloss", "loss:matryoshka2dloss"})

_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_st_layout(path: Path) -> dict:
    """Pooling mode, max length and prompts from a sentence-transformers folder (defaults: mean pooling)."""
    modules = _json(path / "modules.json") if (path / "modules.json").is_file() else []
    mode = "mean"
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            cfg = _json(path / module.get("path", "") / "config.json")
            if "pooling_mode" in cfg:
                mode = cfg["pooling_mode"]
            else:
                chosen = [v for k, v in _POOLING_KEYS.items() if cfg.get(k)]
                if len(chosen) != 1:
                    raise UnsupportedModel(f"{path}: pooling {chosen or 'none'} is not supported (one mode expected)")
                mode = chosen[0]
        elif kind not in ("Transformer", "Normalize"):
            raise UnsupportedModel(f"{path}: sentence-transformers module {kind!r} is not supported by qrank")
    bert_cfg = _json(path / "sentence_bert_config.json")
    st_cfg = _json(path / "config_sentence_transformers.json")
    return {"pooling": mode, "max_seq_length": bert_cfg.get("max_seq_length"), "prompts": st_cfg.get("prompts") or {}}


def declares_matryoshka(path: Path) -> bool:
    """Whether a sentence-transformers folder says its vectors may be cut to a prefix (Matryoshka), from its files.

    True when ``config_sentence_transformers.json`` has a ``truncate_dim`` (sentence-transformers saves the one its
    author chose), or when the model card's metadata (``README.md``) carries a tag ``matryoshka`` or the
    ``loss:MatryoshkaLoss`` / ``loss:Matryoshka2dLoss`` tag sentence-transformers' trainer writes. The model's
    name is never read: a prefix of any other model's vector is a different, untrained embedding.

    >>> declares_matryoshka(Path("../shared/models/all-MiniLM-L6-v2"))
    False
    """
    if _json(path / "config_sentence_transformers.json").get("truncate_dim") is not None:
        return True
    card = path / "README.md"
    if not card.is_file():
        return False
    from huggingface_hub import metadata_load

    try:
        tags = (metadata_load(card) or {}).get("tags") or []
    except Exception as exc:  # a malformed card (YAML) declares nothing; it must not stop the model loading
        log.warning("%s: model card metadata unreadable (%s); assuming no Matryoshka dimensions", card, exc)
        return False
    tags = [tags] if isinstance(tags, str) else tags
    return any(isinstance(t, str) and t.lower() in MATRYOSHKA_TAGS for t in tags)


def write_st_layout(path: Path, dim: int, pooling: str, max_seq_length: int = 512) -> Path:
    """Write the sentence-transformers files (Transformer → Pooling(``pooling``) → Normalize) beside a model's
    weights in ``path``: the layout :func:`read_st_layout` reads (tests and benchmarks build random embedders).

    >>> import tempfile; read_st_layout(write_st_layout(Path(tempfile.mkdtemp()), 8, "cls"))["pooling"]
    'cls'
    """
    mods = [("0", "", "Transformer"), ("1", "1_Pooling", "Pooling"), ("2", "2_Normalize", "Normalize")]
    (path / "modules.json").write_text(json.dumps(
        [{"idx": int(i), "name": i, "path": p, "type": f"sentence_transformers.models.{t}"} for i, p, t in mods]))
    (path / "1_Pooling").mkdir(exist_ok=True)
    key = {v: k for k, v in _POOLING_KEYS.items()}[pooling]
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": dim, key: True}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                               "do_lower_case": False}))
    return path


class STEmbedder:
    """A sentence-transformers style encoder.

    >>> from qrank.models.base import resolve_model
    >>> em = STEmbedder.load(resolve_model("../shared/models/all-MiniLM-L6-v2"), ModelSettings())
    >>> em.embed_batch(["hello"]).shape
    (1, 384)
    """

    kind = "st-embedder"

    def __init__(self, model, tokenizer, info: ModelInfo, layout: dict, engine_settings: EngineSettings | None = None,
                 quantization: str = "none"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self.layout = layout
        self.engine_settings = engine_settings or EngineSettings()
        quantization = check_quantization(quantization, info.device, info.id)
        self.packed = None
        if layout["pooling"] in packed_encoder.POOLING:  # BERT / XLM-R texts packed, nothing padded
            self.packed = packed_encoder.packed_or_none(self.model, "hidden", self.engine_settings.engine, info.id,
                                                        quantization, compile=self.engine_settings.compile)
        else:
            packed_encoder.log.info("%s: pooling %r is not packed; using the padded transformers path", info.id,
                                    layout["pooling"])
        if self.packed is None:
            self.model = quantize_padded(self.model, quantization)

    @classmethod
    def load(cls, resolved: ResolvedModel, settings: ModelSettings, engine_settings: EngineSettings | None = None):
        from transformers import AutoModel

        layout = read_st_layout(resolved.path)
        device = pick_device(settings.device)
        check_quantization(settings.quantization, device, resolved.name)
        dtype = pick_dtype(settings.dtype, device)
        tokenizer = load_tokenizer(resolved.path, trust_remote_code=settings.trust_remote_code)
        model = AutoModel.from_pretrained(
            str(resolved.path), dtype=dtype, trust_remote_code=settings.trust_remote_code
        ).to(device)
        prompts = layout["prompts"]
        info = ModelInfo(
            id=resolved.name,
            kind=cls.kind,
            role="embedder",
            max_length=max_input_length(tokenizer, resolved.config, settings.max_length, layout["max_seq_length"]),
            dtype=dtype_name(dtype),
            device=str(device),
            revision=resolved.revision,
            dim=int(resolved.config["hidden_size"]),
            supports_dims=declares_matryoshka(resolved.path),
            default_instruction=settings.query_prompt or prompts.get("query") or None,
            extra={"pooling": layout["pooling"], **quantization_info(settings.quantization)},
        )
        return cls(model, tokenizer, info, layout, engine_settings, settings.quantization)

    def _prompted(self, texts: Sequence[str], is_query: bool, instruction: str | None) -> list[str]:
        prefix = (
            (instruction or self.info.default_instruction or "")
            if is_query
            else self.layout["prompts"].get("document", "")
        )
        return [prefix + t for t in texts] if prefix else list(texts)

    def encode_texts(
        self, texts: Sequence[str], *, is_query: bool = False, instruction: str | None = None,
        max_length: int | None = None,
    ) -> list[Encoded]:
        """Token ids per text, cut at ``max_length`` tokens (default: the model's window; the server asks for one
        more when it refuses over-long inputs, to tell an input that fills the window from one that was cut)."""
        prompted = self._prompted(texts, is_query, instruction)
        return to_encoded(tokenize_texts(self.tokenizer, prompted, max_length or self.info.max_length))

    def count_tokens(
        self, texts: Sequence[str], *, is_query: bool = False, instruction: str | None = None,
        max_length: int | None = None,
    ) -> list[int]:
        return [len(e) for e in self.encode_texts(texts, is_query=is_query, instruction=instruction,
                                                  max_length=max_length)]

    def embed_encoded(self, encoded: Sequence[Encoded], *, dim: int | None = None) -> np.ndarray:
        if not encoded:
            return np.zeros((0, dim or self.info.dim), dtype=np.float32)
        if self.engine_settings.deterministic:  # one text per forward and per norm
            return one_by_one(lambda rows: self._embed(rows, dim), list(encoded),
                              np.zeros((0, dim or self.info.dim), dtype=np.float32))
        return self._embed(encoded, dim)

    def _embed(self, encoded: Sequence[Encoded], dim: int | None) -> np.ndarray:
        mode = self.layout["pooling"]

        def forward(batch):
            out = self.model(**batch).last_hidden_state
            return pool(out, batch["attention_mask"], mode)

        features = to_features(encoded)
        if self.packed is not None:
            rows = self.packed.run(features["input_ids"], features.get("token_type_ids"),
                                   self.engine_settings.max_batch_tokens, self.packed.pooled(mode))
            return finish_embeddings(np.stack([r.numpy() for r in rows]), dim)
        rows = run_encoder_batches(self.tokenizer, features, forward, self.engine_settings, self.info.device)
        return finish_embeddings(np.stack([r.numpy() for r in rows]), dim)

    def embed_batch(
        self, texts: Sequence[str], *, is_query: bool = False, instruction: str | None = None, dim: int | None = None
    ) -> np.ndarray:
        """``embed_encoded(encode_texts(texts))``."""
        if not texts:
            return np.zeros((0, dim or self.info.dim), dtype=np.float32)
        def encode(part):
            return self.encode_texts(part, is_query=is_query, instruction=instruction)

        forward = self.packed.pooled(self.layout["pooling"]) if self.packed is not None else None
        vectors = packed_runs.overlapped_rows(self.packed, forward, texts, encode, self.engine_settings)
        if vectors is not None:  # a big request on a GPU: tokenizing overlapped with the runs
            return finish_embeddings(vectors.numpy(), dim)
        return self.embed_encoded(encode(texts), dim=dim)
