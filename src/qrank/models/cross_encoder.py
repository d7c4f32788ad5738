"""Classic cross-encoders (BERT, XLM-R, ModernBERT… sequence classifiers with one output).

Scores equal sentence-transformers' ``CrossEncoder.predict`` for the same weights: the pair is encoded
as ``[CLS] query [SEP] document [SEP]`` (longest-first truncation) and the one logit goes through the
model's activation (sigmoid unless the checkpoint says otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UnsupportedModel
from ..settings import EngineSettings, ModelSettings
from ..types import ModelInfo
from . import packed_encoder, packed_runs
from .base import (
    DocumentLayout,
    Encoded,
    ResolvedModel,
    dtype_name,
    load_tokenizer,
    one_by_one,
    pick_device,
    pick_dtype,
)
from .hf_encoder import (
    check_quantization,
    quantization_info,
    max_input_length,
    quantize_padded,
    run_encoder_batches,
    to_encoded,
    to_features,
    tokenize_pairs,
)

_ACTIVATIONS = {
    "Sigmoid": "sigmoid",
    "Identity": "identity",
    "Tanh": "tanh",
}


def activation_of(config: dict, path: Path) -> str:
    """The checkpoint's activation: sentence-transformers records it in config.json or its own config."""
    name = None
    st = config.get("sentence_transformers") or {}
    if isinstance(st, dict):
        name = st.get("activation_fn")
    ce_cfg = path / "config_sentence_transformers.json"
    if name is None and ce_cfg.is_file():
        try:
            name = json.loads(ce_cfg.read_text()).get("activation_fn")
        except ValueError:
            name = None
    if not name:
        return "sigmoid"
    short = str(name).rsplit(".", 1)[-1]
    if short not in _ACTIVATIONS:
        raise UnsupportedModel(f"unsupported cross-encoder activation {name!r}")
    return _ACTIVATIONS[short]


def apply_activation(logits: np.ndarray, activation: str) -> np.ndarray:
    """
    >>> apply_activation(np.array([0.0]), "sigmoid").tolist()
    [0.5]
    """
    logits = logits.astype(np.float64)
    if activation == "sigmoid":
        out = 1.0 / (1.0 + np.exp(-logits))
    elif activation == "tanh":
        out = np.tanh(logits)
    else:
        out = logits
    return out.astype(np.float32)


class CrossEncoderModel:
    """A one-label sequence classifier used as a reranker.

    >>> from qrank.models.base import resolve_model
    >>> ce = CrossEncoderModel.load(resolve_model("../shared/models/scifact-minilm-ce"), ModelSettings())
    >>> scores = ce.score_pairs([("what is bm25?", "BM25 ranks documents."), ("what is bm25?", "Cats purr.")])
    >>> scores.dtype, scores.shape, bool(scores[0] > scores[1])
    (dtype('float32'), (2,), True)
    """

    kind = "cross-encoder"

    def __init__(self, model, tokenizer, info: ModelInfo, activation: str,
                 engine_settings: EngineSettings | None = None, quantization: str = "none"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self.activation = activation
        self.engine_settings = engine_settings or EngineSettings()
        # BERT / XLM-R pairs are packed, nothing padded (see packed_encoder); others keep the padded path
        quantization = check_quantization(quantization, info.device, info.id)
        self.packed = packed_encoder.packed_or_none(self.model, "classifier", self.engine_settings.engine, info.id,
                                                    quantization, compile=self.engine_settings.compile)
        if self.packed is None:
            self.model = quantize_padded(self.model, quantization)

    @classmethod
    def load(cls, resolved: ResolvedModel, settings: ModelSettings, engine_settings: EngineSettings | None = None):
        from transformers import AutoModelForSequenceClassification

        num_labels = len(resolved.config.get("id2label") or {0: 0})
        if resolved.config.get("num_labels", num_labels) != 1:
            raise UnsupportedModel(
                f"{resolved.name}: a cross-encoder reranker needs exactly one output label, this one has {num_labels}"
            )
        device = pick_device(settings.device)
        check_quantization(settings.quantization, device, resolved.name)
        dtype = pick_dtype(settings.dtype, device)
        tokenizer = load_tokenizer(resolved.path, trust_remote_code=settings.trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(resolved.path), dtype=dtype, trust_remote_code=settings.trust_remote_code
        ).to(device)
        activation = activation_of(resolved.config, resolved.path)
        info = ModelInfo(
            id=resolved.name,
            kind=cls.kind,
            role="reranker",
            max_length=max_input_length(tokenizer, resolved.config, settings.max_length),
            dtype=dtype_name(dtype),
            device=str(device),
            revision=resolved.revision,
            score_activation=activation,
            extra={"architecture": (resolved.config.get("architectures") or [None])[0],
                   **quantization_info(settings.quantization)},
        )
        return cls(model, tokenizer, info, activation, engine_settings, settings.quantization)

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None,
                     max_length: int | None = None) -> list[Encoded]:
        """Token ids per pair, cut (longest first) at ``max_length`` tokens: default the model's window; the server
        asks for one more when it refuses over-long pairs, to tell a pair that fills the window from a cut one."""
        # cross-encoders take no instruction; it is accepted so that callers need not care
        return to_encoded(tokenize_pairs(self.tokenizer, pairs, max_length or self.info.max_length))

    def count_tokens(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None,
                     max_length: int | None = None) -> list[int]:
        return [len(e) for e in self.encode_pairs(pairs, max_length=max_length)]

    def document_layouts(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None):
        """Per pair, the document's tokens and its budget: ``max_length`` minus special tokens and the query."""
        if not pairs:
            return []
        feats = self.tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=False,
                               return_offsets_mapping=True, return_attention_mask=False, verbose=False)
        types = feats.get("token_type_ids")
        out = []
        for i in range(len(pairs)):
            seq = feats.sequence_ids(i)
            doc = tuple(tuple(o) for o, s in zip(feats["offset_mapping"][i], seq) if s == 1)
            query = sum(1 for s in seq if s == 0)
            # a pair that fits is what encode_pairs gives; a longer one is left to its truncation
            fits = len(seq) <= self.info.max_length
            type_ids = tuple(types[i]) if types is not None else None
            encoded = Encoded(tuple(feats["input_ids"][i]), type_ids) if fits else None
            out.append(DocumentLayout(len(seq) - len(doc), self.info.max_length, query, doc, encoded))
        return out

    def score_encoded(self, encoded: Sequence[Encoded]) -> np.ndarray:
        if self.engine_settings.deterministic:  # one pair per forward and per activation
            return one_by_one(lambda rows: self._score_features(to_features(rows)), list(encoded),
                              np.zeros((0,), dtype=np.float32))
        return self._score_features(to_features(encoded))

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None) -> np.ndarray:
        """``score_encoded(encode_pairs(pairs))``."""
        if not pairs:
            return np.zeros((0,), dtype=np.float32)
        forward = self.packed.logits if self.packed is not None else None
        rows = packed_runs.overlapped_rows(self.packed, forward, pairs, self.encode_pairs, self.engine_settings)
        if rows is not None:  # a big request on a GPU: tokenizing overlapped with the runs
            return apply_activation(rows[:, 0].numpy(), self.activation)
        return self.score_encoded(self.encode_pairs(pairs))

    def _score_features(self, features: dict) -> np.ndarray:
        if not features["input_ids"]:
            return np.zeros((0,), dtype=np.float32)
        if self.packed is not None:
            rows = self.packed.run(features["input_ids"], features.get("token_type_ids"),
                                   self.engine_settings.max_batch_tokens, self.packed.logits)
            rows = [r[0] for r in rows]
        else:
            rows = run_encoder_batches(
                self.tokenizer, features, lambda b: self.model(**b).logits[:, 0], self.engine_settings, self.info.device
            )
        logits = np.array([float(r) for r in rows], dtype=np.float32)
        return apply_activation(logits, self.activation)
