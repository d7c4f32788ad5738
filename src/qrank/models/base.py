"""Model contracts and the loading helpers every backend shares.

A backend implements one batch method: :class:`ScoringModel.score_pairs` or
:class:`EmbeddingModel.embed_batch`. Ranking, top-n, validation and normalisation live once above them
(:mod:`qrank.reranker`, :mod:`qrank.embedder`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidInput, ModelNotFound
from ..settings import ModelSettings
from ..types import ModelInfo

log = logging.getLogger(__name__)


@runtime_checkable
class ScoringModel(Protocol):
    """Scores (query, document) pairs; higher means more relevant."""

    info: ModelInfo

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None) -> np.ndarray:
        """float32 scores, one per pair, in the caller's order."""
        ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    info: ModelInfo

    def embed_batch(
        self,
        texts: Sequence[str],
        *,
        is_query: bool = False,
        instruction: str | None = None,
        dim: int | None = None,
    ) -> np.ndarray:
        """float32 array (len(texts), dim), rows L2-normalised, in the caller's order."""
        ...


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved to a local directory plus what identifies its weights."""

    name: str
    path: Path
    revision: str
    config: dict


def resolve_model(name: str, settings: ModelSettings | None = None) -> ResolvedModel:
    """Turn a local directory or a hub id into a local directory with a ``config.json``.

    A hub id is downloaded with ``huggingface_hub`` unless ``local_files_only`` (or
    ``HF_HUB_OFFLINE=1``) is set; nothing is downloaded for a local path.

    >>> resolve_model("/nonexistent/dir")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.ModelNotFound: ...
    """
    settings = settings or ModelSettings()
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("model", "must be a non-empty model name or path")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{name}: directory has no config.json, so it is not a model folder")
        return ResolvedModel(name=name, path=path.resolve(), revision=_local_revision(path), config=_read_json(path / "config.json"))
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    if looks_local or name.count("/") > 1:
        raise ModelNotFound(f"{name}: no such local model directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # transformers depends on it, so this is a broken install
        raise ModelNotFound(f"{name}: not a local directory and huggingface_hub is missing") from exc
    try:
        local = snapshot_download(
            name,
            revision=settings.revision,
            local_files_only=settings.local_files_only,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*/*.json", "merges.txt"],
        )
    except Exception as exc:  # the hub raises many classes; all mean "cannot get it"
        raise ModelNotFound(f"{name}: not a local directory and could not be fetched from the hub ({exc.__class__.__name__}: {exc})") from exc
    path = Path(local)
    commit = path.name if len(path.name) == 40 else _local_revision(path)
    return ResolvedModel(name=name, path=path, revision=commit, config=_read_json(path / "config.json"))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{path}: unreadable ({exc})") from exc


def _local_revision(path: Path) -> str:
    """A fingerprint of a local model: config text plus weight file names and sizes."""
    h = hashlib.sha256()
    cfg = path / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return "local-" + h.hexdigest()[:16]


def pick_device(device: str = "auto") -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'.

    >>> pick_device("cpu")
    'cpu'
    """
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str):
    """'auto' → float32 on CPU, bfloat16 on GPU.

    >>> str(pick_dtype("auto", "cpu"))
    'torch.float32'
    """
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def load_tokenizer(path: Path, **kwargs):
    """A fast Hugging Face tokenizer from ``path``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), **kwargs)
    except Exception as exc:
        raise ModelNotFound(f"{path}: no usable tokenizer ({exc.__class__.__name__}: {exc})") from exc


def text_tokenizer(tokenizer):
    """A copy of the fast tokenizer's backend that encodes special-token spellings as plain text.

    User text that spells ``<|im_end|>`` must never close a template early; a private copy keeps that
    switch from leaking into other callers and is safe to share between threads.
    """
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelNotFound("qrank needs a fast (Rust) tokenizer; this model only has a slow one")
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    copy.encode_special_tokens = True
    return copy


def set_torch_threads(num_threads: int | None) -> None:
    """``engine.num_threads``: torch's CPU threads (process-wide, so the last model loaded with a value sets
    it); None leaves torch's default."""
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
