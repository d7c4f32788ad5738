"""Model contracts and the loading helpers every backend shares.

A model implements :class:`ScoringModel` (``score_pairs``) or :class:`EmbeddingModel` (``embed_batch``),
plus ``count_tokens`` and ``info``. Backends that tokenize locally also implement the tokenize-once pair
(:class:`PairEncoder` / :class:`TextEncoder`) over :class:`Encoded` items. Layers (cache, counting,
queue, remote, Ray) are models wrapping a model; ranking, top-n, validation and the finiteness check
live once above them all (:mod:`qrank.reranker`, :mod:`qrank.embedder`).
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

from ..errors import InvalidInput, ModelNotFound, QrankError, UnsupportedModel
from ..settings import ModelSettings
from ..types import ModelInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """One model-ready input: token ids (template, instruction and truncation applied) and, for BERT
    pairs, the token type ids. ``len(e)`` is its exact token count.

    >>> e = Encoded((101, 7, 102), (0, 0, 0))
    >>> len(e), e.type_ids is not None
    (3, True)
    """

    ids: tuple[int, ...]
    type_ids: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class DocumentLayout:
    """Where one pair's document sits in the model's window (what long-document policies need).

    ``overhead`` is the tokens of everything but the document (template, instruction, query, special
    tokens), so ``budget = max_length - overhead`` document tokens fit; ``offsets`` holds, per document
    token as the model tokenizes it in this pair, its ``(start, end)`` characters in the caller's document;
    ``query_tokens`` is the query's. ``encoded``, when the layout pass made it, is the pair exactly as
    ``encode_pairs`` would encode it (so a door that lays documents out still tokenizes each text once).

    >>> lay = DocumentLayout(overhead=10, max_length=16, query_tokens=2, offsets=((0, 3), (3, 7)))
    >>> lay.budget, lay.fits
    (6, True)
    """

    overhead: int
    max_length: int
    query_tokens: int
    offsets: tuple[tuple[int, int], ...]
    encoded: Encoded | None = None

    @property
    def budget(self) -> int:
        return self.max_length - self.overhead

    @property
    def fits(self) -> bool:
        return len(self.offsets) <= self.budget


@runtime_checkable
class ScoringModel(Protocol):
    """Scores (query, document) pairs; higher means more relevant.

    ``info.score_activation`` says what the scores are ("sigmoid": probabilities, "identity": raw logits).
    Layers (cache, queue, remote, counting, Ray) are ScoringModels wrapping another one.
    """

    info: ModelInfo

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None) -> np.ndarray:
        """float32 scores, one per pair, in the caller's order."""
        ...

    def count_tokens(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None) -> list[int]:
        """Exact tokens per pair as the model will see them (from its tokenizer)."""
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

    def count_tokens(
        self, texts: Sequence[str], *, is_query: bool = False, instruction: str | None = None
    ) -> list[int]:
        """Exact tokens per text as the model will see them."""
        ...


@runtime_checkable
class PairEncoder(Protocol):
    """A scorer that tokenizes locally: ``score_pairs(p) == score_encoded(encode_pairs(p))``.

    The server tokenizes once at its door with ``encode_pairs`` and its worker runs ``score_encoded``. With
    truncation off the door asks for ``max_length=`` one token past the window (so a pair that fills the window is
    told from one that was cut): an encoder takes that keyword, default its own window.
    """

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None,
                     max_length: int | None = None) -> list[Encoded]: ...

    def score_encoded(self, encoded: Sequence[Encoded]) -> np.ndarray: ...


@runtime_checkable
class DocumentSplitter(Protocol):
    """A scorer that can say where each document sits in its window, so that qrank can cut or chunk a
    long document by the model's own tokens (:mod:`qrank.long_documents`)."""

    def document_layouts(
        self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None
    ) -> list[DocumentLayout]: ...


@runtime_checkable
class TextEncoder(Protocol):
    """An embedder that tokenizes locally: ``embed_batch(t) == embed_encoded(encode_texts(t))``; ``max_length``
    as in :class:`PairEncoder` (and vLLM's ``truncate_prompt_tokens``)."""

    def encode_texts(
        self, texts: Sequence[str], *, is_query: bool = False, instruction: str | None = None,
        max_length: int | None = None,
    ) -> list[Encoded]: ...

    def embed_encoded(self, encoded: Sequence[Encoded], *, dim: int | None = None) -> np.ndarray: ...


def check_scores(raw, n: int) -> np.ndarray:
    """A model's answer as float32 scores, checked to hold one score per pair.

    >>> check_scores([0.5, 1], 2).dtype.name
    'float32'
    """
    scores = np.asarray(raw, dtype=np.float32)
    if scores.shape != (n,):
        raise QrankError(f"model returned {scores.shape} scores for {n} pairs")
    return scores


def check_vectors(raw, n: int) -> np.ndarray:
    """A model's answer as a float32 ``(n, dim)`` matrix."""
    vectors = np.asarray(raw, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise QrankError(f"model returned an array of shape {vectors.shape} for {n} texts")
    return vectors


def check_finite(values: np.ndarray, *, error: type[QrankError] = QrankError, context: str = "") -> np.ndarray:
    """``values`` unchanged, or ``error`` when they hold NaN or infinity (the one finiteness check).

    >>> check_finite(np.array([np.nan]), context=" for this request")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.QrankError: the model produced non-finite values (NaN or inf) for this request
    """
    if not np.isfinite(values).all():
        raise error(
            f"the model produced non-finite values (NaN or inf){context}; check the model's dtype and weights"
        )
    return values


def one_by_one(run, items: Sequence, empty: np.ndarray) -> np.ndarray:
    """``run([item])`` for each item alone, the rows stacked in order: deterministic mode
    (``engine.deterministic``).

    An item's answer then never depends on what else is in the call: each forward pass has the same shapes
    whatever the batch, and so does the post-processing, which matters too — a sigmoid or norm vectorized over
    a batch and run over one row can differ in the last bit (SIMD body against scalar tail).

    >>> one_by_one(lambda rows: np.array([len(r) for r in rows], np.float32), ["ab", "c"], np.zeros(0)).tolist()
    [2.0, 1.0]
    """
    if not len(items):
        return empty
    return np.concatenate([run(items[i : i + 1]) for i in range(len(items))])


def require_count_tokens(model, name: str) -> None:
    """Refuse a model that cannot count its tokens (budgets and limits need exact counts)."""
    if not callable(getattr(model, "count_tokens", None)):
        raise UnsupportedModel(
            f"{name}: {type(model).__name__} has no count_tokens(); a served model must count its tokens exactly "
            "(implement count_tokens, see qrank.models.base.ScoringModel / EmbeddingModel)"
        )


class Layer:
    """A model wrapping a model: ``info`` and ``count_tokens`` are the inner model's."""

    def __init__(self, inner) -> None:
        self.inner = inner

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def count_tokens(self, items, **kwargs) -> list[int]:
        return self.inner.count_tokens(items, **kwargs)

    @property
    def tokenizer(self):
        """The tokenizer of the model underneath (None when it has none, e.g. a remote model): a collection's
        chunker cuts text on its tokens, and a layer never changes what the model sees."""
        return getattr(self.inner, "tokenizer", None)

    def document_layouts(self, pairs, *, instruction: str | None = None) -> list[DocumentLayout]:
        # a layer never changes what the model sees, so the inner model's layout is the layer's
        inner = getattr(self.inner, "document_layouts", None)
        if inner is None:
            raise UnsupportedModel(
                f"{type(self.inner).__name__} cannot lay documents out in its window; long_documents 'chunk' and "
                "'error' need a model that tokenizes locally", field="long_documents"
            )
        return inner(pairs, instruction=instruction)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


class CountingScorer(Layer):
    """Counts the pairs that reach the inner model (``count``), e.g. below a cache to see its misses.

    >>> from qrank.types import ModelInfo
    >>> class One:
    ...     info = ModelInfo("m", "k", "reranker", 8, "float32", "cpu")
    ...     def score_pairs(self, pairs, *, instruction=None): return np.ones(len(pairs))
    >>> c = CountingScorer(One()); _ = c.score_pairs([("q", "a"), ("q", "b")]); c.count
    2
    """

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.count = 0

    def score_pairs(self, pairs, *, instruction: str | None = None) -> np.ndarray:
        self.count += len(pairs)
        return self.inner.score_pairs(pairs, instruction=instruction)


class CountingEmbeddingModel(Layer):
    """Counts the texts that reach the inner model (``count``)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.count = 0

    def embed_batch(self, texts, *, is_query: bool = False, instruction: str | None = None, dim: int | None = None):
        self.count += len(texts)
        return self.inner.embed_batch(texts, is_query=is_query, instruction=instruction, dim=dim)


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
        return ResolvedModel(
            name=name, path=path.resolve(), revision=_local_revision(path), config=_read_json(path / "config.json")
        )
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
        raise ModelNotFound(
            f"{name}: not a local directory and could not be fetched from the hub ({exc.__class__.__name__}: {exc})"
        ) from exc
    path = Path(local)
    commit = path.name if len(path.name) == 40 else _local_revision(path)
    return ResolvedModel(name=name, path=path, revision=commit, config=_read_json(path / "config.json"))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{path}: unreadable ({exc})") from exc


_SAMPLE_BYTES = 1 << 20  # read at each end of a weight file, and spread over the middle


_SETTINGS_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")  # tokenizer, pooling, prompts, templates
_SETTINGS_MAX_BYTES = 64 << 20


def _local_revision(path: Path) -> str:
    """A fingerprint of a local model folder, from its contents alone: ``config.json``; every settings file of the
    folder and its direct subfolders (tokenizer, ``modules.json``, pooling, prompts, chat template: the ``.json``,
    ``.txt``, ``.model``, ``.jinja`` files) by name and bytes; and, for each weight file, its name, size and
    samples of its bytes (the first and last MiB and 32 blocks of 32 KiB spread between).

    A copy of the folder (another path, a rebuilt image, a re-extracted archive) has the same fingerprint, so its
    collections and cached answers stay valid (the file times used until 2026-12-07 changed with every copy);
    re-trained weights of the same shape differ in every sample, and the same weights with another pooling or
    tokenizer are another model (from 2026-12-08; before, only ``config.json`` and the weights counted).

    >>> import tempfile
    >>> a, b = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    >>> for d in (a, b):
    ...     _ = (d / "model.safetensors").write_bytes(bytes(range(256)) * 20000)
    >>> _local_revision(a) == _local_revision(b)
    True
    >>> (b / "1_Pooling").mkdir(); _ = (b / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    >>> _local_revision(a) == _local_revision(b)  # same weights, another pooling
    False
    >>> _ = (b / "model.safetensors").write_bytes(bytes(range(255, -1, -1)) * 20000)  # same size, other weights
    >>> _local_revision(a) == _local_revision(b)
    False
    """
    return _content_fingerprint(path, settings_files=True)


def _content_fingerprint(path: Path, *, settings_files: bool) -> str:
    h = hashlib.sha256()
    cfg = path / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    if settings_files:
        found = [f for pattern in ("*", "*/*") for f in path.glob(pattern)
                 if f.suffix in _SETTINGS_SUFFIXES and f.is_file() and f != cfg]
        for f in sorted(found, key=lambda f: f.relative_to(path).as_posix()):
            size = f.stat().st_size
            h.update(f"{f.relative_to(path).as_posix()}:{size}".encode())
            if size <= _SETTINGS_MAX_BYTES:
                h.update(f.read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            if size <= 3 * _SAMPLE_BYTES:
                h.update(fh.read())
                continue
            block = _SAMPLE_BYTES // 32
            starts = [0, *(_SAMPLE_BYTES + i * (size - 3 * _SAMPLE_BYTES) // 31 for i in range(32)),
                      size - _SAMPLE_BYTES]
            for start, n in zip(starts, [_SAMPLE_BYTES, *[block] * 32, _SAMPLE_BYTES]):
                fh.seek(start)
                h.update(fh.read(n))
    return "local-" + h.hexdigest()[:16]


def legacy_local_revisions(path: Path) -> tuple[str, str]:
    """The fingerprints local folders had before: until 2026-12-07 (config text, weight file names, sizes and file
    times) and on 2026-12-07 (config text and weights, without the settings files). Kept only to recognise
    collections built then: their manifests hold one, and the pipeline re-stamps them with :func:`_local_revision`
    when this folder still gives the same (the same files).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "model.safetensors").write_bytes(b"w" * 64)
    >>> _local_revision(d) == legacy_local_revisions(d)[1]  # no settings file: 2026-12-07's scheme gives the same
    True
    >>> _ = (d / "tokenizer.json").write_text("{}")
    >>> _local_revision(d) in legacy_local_revisions(d), legacy_local_revisions(d) == legacy_local_revisions(d)
    (False, True)
    """
    h = hashlib.sha256()
    cfg = path / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return "local-" + h.hexdigest()[:16], _content_fingerprint(path, settings_files=False)


def pick_device(device: str = "auto") -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; a device asked for by name must be there.

    >>> pick_device("cpu")
    'cpu'
    """
    if device == "cpu":  # no torch import for what needs no check
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            seen = f"{count} CUDA device(s) are visible" if count else "no CUDA GPU is visible to torch"
            raise InvalidInput("device", f"{device!r} is not available here: {seen} (use 'auto' or 'cpu')")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise InvalidInput("device", "'mps' is not available here (use 'auto' or 'cpu')")
    return device


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
