"""The explicit registry of model kinds, chosen from the model's ``config.json`` and files, never its name.

Adding a kind is one backend module plus one :class:`Kind` line in :data:`KINDS`. Order matters: the
first kind whose ``matches`` is true wins.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UnsupportedModel
from ..settings import EngineSettings, ModelSettings
from .base import ResolvedModel, resolve_model, set_torch_threads

log = logging.getLogger(__name__)


def _archs(config: dict) -> list[str]:
    return [str(a) for a in (config.get("architectures") or [])]


def _is_qwen3(config: dict) -> bool:
    return config.get("model_type") in ("qwen3", "qwen2")


@dataclass(frozen=True)
class Kind:
    """One model kind: its name, its role, when it applies, and how to load it."""

    name: str
    role: str  # "reranker" | "embedder"
    description: str
    matches: Callable[[dict, Path], bool]
    loader: str  # "module:Class" with a ``load(resolved, model_settings, engine_settings)`` classmethod

    def load(self, resolved: ResolvedModel, settings: ModelSettings, engine: EngineSettings | None = None):
        import importlib

        module, cls = self.loader.split(":")
        backend = getattr(importlib.import_module(module, package=__package__), cls)
        return backend.load(resolved, settings, engine)


KINDS: list[Kind] = [
    Kind(
        "qwen3-reranker",
        "reranker",
        "Qwen3-Reranker causal LM (yes/no at the last position)",
        lambda c, p: _is_qwen3(c) and any(a in ("Qwen3ForCausalLM", "Qwen2ForCausalLM") for a in _archs(c)),
        ".qwen3_reranker:Qwen3Reranker",
    ),
    Kind(
        "qwen3-reranker-seq-cls",
        "reranker",
        "Qwen3-Reranker converted to one-label sequence classification",
        lambda c, p: _is_qwen3(c) and any(a.endswith("ForSequenceClassification") for a in _archs(c)),
        ".qwen3_reranker:Qwen3Reranker",
    ),
    Kind(
        "qwen3-embedding",
        "embedder",
        "Qwen3-Embedding (last-token pooling, instruction on queries)",
        lambda c, p: _is_qwen3(c) and any(a in ("Qwen3Model", "Qwen2Model") for a in _archs(c)),
        ".qwen3_embedder:Qwen3Embedder",
    ),
    Kind(
        "cross-encoder",
        "reranker",
        "encoder sequence classifier with one label (BERT, XLM-R, ModernBERT…)",
        lambda c, p: not _is_qwen3(c) and any(a.endswith("ForSequenceClassification") for a in _archs(c)),
        ".cross_encoder:CrossEncoderModel",
    ),
    Kind(
        "st-embedder",
        "embedder",
        "sentence-transformers encoder (Transformer + Pooling [+ Normalize])",
        lambda c, p: not _is_qwen3(c)
        and ((p / "modules.json").is_file() or any(a.endswith("Model") for a in _archs(c))),
        ".st_embedder:STEmbedder",
    ),
]


def detect_kind(config: dict, path: Path) -> Kind:
    """The kind of a model folder.

    >>> detect_kind({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}, Path(".")).name
    'qwen3-reranker'
    >>> detect_kind({"model_type": "bert", "architectures": ["BertForSequenceClassification"]}, Path(".")).role
    'reranker'
    """
    for kind in KINDS:
        if kind.matches(config, path):
            return kind
    raise UnsupportedModel(
        f"{path}: model_type={config.get('model_type')!r}, architectures={_archs(config)} is not a kind qrank knows "
        f"({', '.join(k.name for k in KINDS)})"
    )


def model_kind(name: str, role: str, settings: ModelSettings | None = None):
    """``(resolved, kind)`` of ``name`` (local folder or hub id) without loading weights; a model of another role
    is refused here, for every door (``load_model``, ``qrank index add --reranker``)."""
    resolved = resolve_model(name, settings or ModelSettings())
    kind = detect_kind(resolved.config, resolved.path)
    if kind.role != role:
        # every door reaches here: name the way each one spells the other role
        use = ("Embedder in Python, --embedder or `qrank embed` on the command line" if kind.role == "embedder"
               else "Reranker in Python, --reranker or `qrank rerank` on the command line")
        raise UnsupportedModel(f"{name} is a {kind.name} model ({kind.role}), not a {role}: use it as one ({use})")
    return resolved, kind


def load_model(name: str, role: str, settings: ModelSettings | None = None, engine: EngineSettings | None = None):
    """Resolve ``name`` (local folder or hub id), check its role and load its backend."""
    settings = settings or ModelSettings()
    resolved, kind = model_kind(name, role, settings)
    if settings.quantization == "fp8" and not kind.name.startswith("qwen3"):
        raise UnsupportedModel(f"quantization='fp8' is for Qwen3 rerankers and embedders; {name} is a {kind.name} "
                               "model", field="quantization")
    log.info("loading %s as %s", name, kind.name)
    engine = engine or EngineSettings()
    set_torch_threads(engine.num_threads)
    model = kind.load(resolved, settings, engine)
    if engine.deterministic:
        # shown in /v1/models and `qrank models -v`, and read by the cache keys: the two modes' scores never mix
        model.info = replace(model.info, extra={**model.info.extra, "deterministic": True})
    return model


def list_local_models(roots: list[Path]) -> list[dict]:
    """Model folders under ``roots`` (searched two levels deep) with the kind each would load as."""
    found = []
    seen: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        candidates = (
            [root] + sorted(p for p in root.glob("*") if p.is_dir()) + sorted(p for p in root.glob("*/*") if p.is_dir())
        )
        for p in candidates:
            cfg = p / "config.json"
            if p in seen or not cfg.is_file():
                continue
            seen.add(p)
            try:
                kind = detect_kind(json.loads(cfg.read_text()), p)
                found.append({"path": str(p), "kind": kind.name, "role": kind.role})
            except (UnsupportedModel, ValueError):
                continue
    return found
