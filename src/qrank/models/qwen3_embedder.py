"""Qwen3-Embedding: instruction-prefixed queries, last-token pooling, L2 norm, MRL dimensions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..engine import pipelined_last_hidden
from ..settings import EngineSettings, ModelSettings
from ..types import ModelInfo
from .base import (
    Encoded,
    ResolvedModel,
    dtype_name,
    load_tokenizer,
    one_by_one,
    pick_device,
    pick_dtype,
    text_tokenizer,
)
from .fp8_checkpoints import load_transformers_model, open_fp8_checkpoint
from .pooling import finish_embeddings
from .quantization import gated_backend, revision_suffix

DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def format_query(task: str, query: str) -> str:
    """The model card's query format (no space after ``Query:``).

    >>> format_query("T", "q")
    'Instruct: T\\nQuery:q'
    """
    return f"Instruct: {task}\nQuery:{query}"


def special_wrap(text_tok, fallback_eos: int | None) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's post-processor puts before and after a text.

    Qwen3-Embedding's tokenizer appends ``<|endoftext|>``; last-token pooling depends on it, so an
    older tokenizer that adds nothing gets the end-of-text token appended here.
    """
    plain = text_tok.encode("a", add_special_tokens=False).ids
    full = text_tok.encode("a", add_special_tokens=True).ids
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            before, after = full[:i], full[i + len(plain) :]
            break
    else:  # pragma: no cover - a post-processor that rewrites the text itself
        before, after = [], []
    if not before and not after and fallback_eos is not None:
        after = [fallback_eos]
    return before, after


class Qwen3Embedder:
    """A Qwen3-Embedding checkpoint (``Qwen3Model``).

    ``Qwen3Embedder.load(resolve_model("Qwen/Qwen3-Embedding-0.6B"), ModelSettings())`` loads the published
    checkpoint (a hub download, so no example runs it here); ``em.embed_batch(["a question"], is_query=True,
    dim=256)`` is then a float32 array of shape (1, 256). tests/numerics/test_qwen3_embedder.py checks a tiny
    random checkpoint with the real tokenizer against the official recipe.
    """

    kind = "qwen3-embedding"

    def __init__(self, model, tokenizer, info: ModelInfo, engine_settings: EngineSettings | None = None) -> None:
        from ..engine import make_engine

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self.text_tok = text_tokenizer(tokenizer)
        eos = model.config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        self.before, self.after = special_wrap(self.text_tok, eos if eos is not None else tokenizer.pad_token_id)
        engine_settings = engine_settings or EngineSettings()
        self.deterministic = engine_settings.deterministic  # one text per pass and per norm (one_by_one)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.after or [0])[-1]
        self.engine = make_engine(
            getattr(model, "base_model", model), pad_id=pad_id, device=info.device, settings=engine_settings
        )
        self.info = replace(info, extra={**info.extra, "engine": self.engine.describe()})  # decided at load

    @classmethod
    def load(cls, resolved: ResolvedModel, settings: ModelSettings, engine_settings: EngineSettings | None = None):
        from transformers import AutoModel

        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        # check_fp8_request, before minutes of loading weights; a pre-quantized FP8 checkpoint loads in FP8
        # whatever `quantization` says (docs/quantization.md)
        checkpoint, settings = open_fp8_checkpoint(resolved, settings, device, dtype)
        tokenizer = load_tokenizer(resolved.path, padding_side="left", trust_remote_code=settings.trust_remote_code)
        model = load_transformers_model(AutoModel, resolved, checkpoint, dtype=dtype,
                                        trust_remote_code=settings.trust_remote_code)
        model.to(device)
        model_max = int(resolved.config.get("max_position_embeddings") or 32768)
        info = ModelInfo(
            id=resolved.name,
            kind=cls.kind,
            role="embedder",
            max_length=min(settings.max_length, model_max),
            dtype=dtype_name(dtype),
            device=str(device),
            # FP8 scores differ from bfloat16 ones: caches must not mix them
            revision=resolved.revision + revision_suffix(settings),
            dim=int(resolved.config["hidden_size"]),
            supports_dims=True,
            default_instruction=settings.query_task or DEFAULT_TASK,
            extra={"pooling": "lasttoken"},  # sentence-transformers' name, as classic embedders say theirs
        )
        return gated_backend(lambda: cls(model, tokenizer, info, engine_settings),
                             getattr(model, "base_model", model), settings, checkpoint)

    def encode(
        self, texts: Sequence[str], *, is_query: bool = False, instruction: str | None = None,
        max_length: int | None = None,
    ) -> list[list[int]]:
        """Token ids per text (a query gets the task instruction), truncated to ``max_length`` (default: the
        model's) with the end-of-text token kept. The server asks for one token more than the window when it
        refuses over-long inputs, so that an input filling the window exactly is told from one that was cut."""
        if is_query:
            task = instruction or self.info.default_instruction or DEFAULT_TASK
            texts = [format_query(task, t) for t in texts]
        room = (max_length or self.info.max_length) - len(self.before) - len(self.after)
        encs = self.text_tok.encode_batch(list(texts), add_special_tokens=False)
        return [self.before + e.ids[:room] + self.after for e in encs]

    def encode_texts(
        self, texts: Sequence[str], *, is_query: bool = False, instruction: str | None = None,
        max_length: int | None = None,
    ) -> list[Encoded]:
        encoded = self.encode(texts, is_query=is_query, instruction=instruction, max_length=max_length)
        return [Encoded(tuple(ids)) for ids in encoded]

    def count_tokens(
        self, texts: Sequence[str], *, is_query: bool = False, instruction: str | None = None,
        max_length: int | None = None,
    ) -> list[int]:
        return [len(ids) for ids in self.encode(texts, is_query=is_query, instruction=instruction,
                                                max_length=max_length)]

    def embed_encoded(self, encoded: Sequence[Encoded], *, dim: int | None = None) -> np.ndarray:
        """Vectors of already encoded texts (the server tokenized them at its door)."""
        if not encoded:
            return np.zeros((0, dim or self.info.dim), dtype=np.float32)
        run = lambda rows: finish_embeddings(self.engine.last_hidden([list(e.ids) for e in rows]).numpy(), dim)  # noqa: E731
        if self.deterministic:
            return one_by_one(run, list(encoded), np.zeros((0, dim or self.info.dim), dtype=np.float32))
        return run(encoded)

    def embed_batch(
        self, texts: Sequence[str], *, is_query: bool = False, instruction: str | None = None, dim: int | None = None
    ) -> np.ndarray:
        """``embed_encoded(encode_texts(texts))``, with each chunk's tokenizing overlapping the GPU's work."""
        if not texts:
            return np.zeros((0, dim or self.info.dim), dtype=np.float32)
        if self.deterministic:  # one text at a time: nothing to overlap
            return self.embed_encoded(self.encode_texts(texts, is_query=is_query, instruction=instruction), dim=dim)
        encode = lambda chunk: self.encode(chunk, is_query=is_query, instruction=instruction)  # noqa: E731
        hidden = pipelined_last_hidden(self.engine, list(texts), encode)
        return finish_embeddings(hidden.numpy(), dim)
