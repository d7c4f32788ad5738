"""The public embedding API: validation, single-vs-batch shapes and dimensions above ``embed_batch``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .deprecation import warn_deprecated
from .errors import InvalidInput
from .models.base import EmbeddingModel, check_finite, check_vectors
from .reranker import _with_overrides
from .settings import INSTRUCTION_SETTING, Settings
from .types import ModelInfo


def query_instruction(info: ModelInfo, *, query_task: str | None = None, query_prompt: str | None = None) -> str | None:
    """The backend's ``instruction`` for a query, from the role-specific name the caller used.

    ``query_task`` is a Qwen3-Embedding task (qrank writes ``Instruct: {task}\nQuery: `` around it),
    ``query_prompt`` a raw prefix of a sentence-transformers model; the wrong one for ``info.kind`` is an
    error rather than a silently odd prefix. Kinds qrank cannot see (a remote model) take either.

    >>> info = ModelInfo(id="m", kind="st-embedder", role="embedder", max_length=512, dtype="float32", device="cpu")
    >>> query_instruction(info, query_prompt="query: ")
    'query: '
    >>> query_instruction(info, query_task="Find the law")
    Traceback (most recent call last):
    qrank.errors.InvalidInput: query_task: st-embedder models take a raw query prefix; use query_prompt
    """
    if query_task is not None and query_prompt is not None:
        raise InvalidInput("query_task", "give query_task (Qwen3-Embedding) or query_prompt (sentence-transformers), "
                           "not both")
    name, value = ("query_task", query_task) if query_task is not None else ("query_prompt", query_prompt)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(name, "must be a string")
    takes = INSTRUCTION_SETTING.get(info.kind, name)
    if takes != name:
        what = "a task (Qwen3-Embedding)" if takes == "query_task" else "a raw query prefix"
        raise InvalidInput(name, f"{info.kind} models take {what}; use {takes}")
    return value


def query_keyword(info: ModelInfo) -> str:
    """The role-specific keyword of :meth:`Embedder.embed` that carries this model's query instruction.

    >>> query_keyword(ModelInfo(id="m", kind="qwen3-embedding", role="embedder", max_length=8, dtype="f", device="cpu"))
    'query_task'
    """
    return "query_prompt" if INSTRUCTION_SETTING.get(info.kind) == "query_prompt" else "query_task"


def legacy_query(info: ModelInfo, instruction: str | None, query_task: str | None, query_prompt: str | None
                 ) -> tuple[str | None, str | None]:
    """``(query_task, query_prompt)`` with a deprecated one-for-all ``instruction`` given to the role ``info.kind``
    takes, as it was before the split, unless the caller named a role.

    >>> info = ModelInfo(id="m", kind="st-embedder", role="embedder", max_length=8, dtype="f", device="cpu")
    >>> legacy_query(info, "query: ", None, None)
    (None, 'query: ')
    """
    if instruction is None or query_task is not None or query_prompt is not None:
        return query_task, query_prompt
    return (None, instruction) if query_keyword(info) == "query_prompt" else (instruction, None)


def check_dim(info: ModelInfo, dim: object, field: str = "dim", name: str | None = None) -> int | None:
    """The output width to ask ``info``'s model for: None for its full width, else ``dim`` (Matryoshka).

    The one check of a requested dimension, for :meth:`Embedder.embed` and the server's ``dimensions``: an
    integer from 1 to ``info.dim``; the full width is always accepted, any other only when the model was
    trained to be cut (``info.supports_dims``), since a prefix of another model's vector is not an embedding.
    ``name`` is the model's name in messages (default ``info.id``; the server gives its served name).

    >>> info = ModelInfo(id="m", kind="st-embedder", role="embedder", max_length=8, dtype="f", device="cpu", dim=384)
    >>> check_dim(info, 384) is None
    True
    >>> check_dim(info, 128)
    Traceback (most recent call last):
    qrank.errors.InvalidInput: dim: m does not support other dimensions than 384 (not a Matryoshka model)
    """
    if dim is None:
        return None
    full, name = int(info.dim or 0), name or info.id
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= full:
        raise InvalidInput(field, f"must be an integer between 1 and {full} for {name}, got {dim!r}")
    if dim == full:
        return None
    if not info.supports_dims:
        raise InvalidInput(field, f"{name} does not support other dimensions than {full} (not a Matryoshka model)")
    return dim


def check_texts(texts: Sequence[str], field: str) -> None:
    """Refuse a text that is not a string, or is empty or blank (it has nothing to embed), naming ``field[i]``.

    >>> check_texts(["a", " "], "texts")
    Traceback (most recent call last):
    qrank.errors.InvalidInput: texts[1]: must not be empty or blank
    """
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInput(f"{field}[{i}]", f"must be a string, got {type(t).__name__}")
        if not t.strip():
            raise InvalidInput(f"{field}[{i}]", "must not be empty or blank")


class Embedder:
    """Embed texts with any embedding model qrank can load; rows are L2-normalised float32.

    >>> em = Embedder.from_pretrained("../shared/models/all-MiniLM-L6-v2")
    >>> em.embed(["first text", "second text"]).shape
    (2, 384)
    >>> em.embed("a question", is_query=True).shape
    (384,)

    MiniLM was not trained with a Matryoshka loss, so a shorter ``dim`` is refused (Qwen3-Embedding takes one):

    >>> em.embed("a question", dim=128)
    Traceback (most recent call last):
    qrank.errors.InvalidInput: dim: ...MiniLM-L6-v2 does not support other dimensions than 384 (not a Matryoshka model)
    """

    # a remote embedder leaves the upper bound of ``dim`` to its server, which names its own field
    _local_dim_bound = True

    def __init__(self, model: EmbeddingModel) -> None:
        self.model = model

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        settings: Settings | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int | None = None,
        query_task: str | None = None,
        query_prompt: str | None = None,
        engine: str | None = None,
        instruction: str | None = None,
        quantization: str | None = None,
        deterministic: bool | None = None,
        quantization_check: bool | None = None,
        quantization_fast_accumulation: bool | None = None,
        quantization_fp8_attention: bool | None = None,
    ) -> Embedder:
        """Load a Qwen3-Embedding or sentence-transformers model from a local folder or a hub id.

        ``query_task`` (Qwen3-Embedding) or ``query_prompt`` (sentence-transformers) replaces the model's
        default query instruction (settings ``models.query_task`` / ``models.query_prompt``); ``instruction``
        is their deprecated one-for-all spelling. ``quantization="fp8"`` (Qwen3, GPUs with FP8 units) is checked
        against bfloat16 at load (docs/quantization.md; ``quantization_check=False`` serves it even below the gate's
        thresholds; ``quantization_fast_accumulation=True``: FP8 products without float32 promotion, faster and a
        little less exact; ``quantization_fp8_attention=True``: attention's ``q k^T`` in FP8 too, faster on long
        texts and less exact). ``deterministic=True`` (setting ``engine.deterministic``): a text's vector is
        bit-identical whatever else is in the call or batch (docs/deterministic.md).
        """
        from .models.registry import load_model

        if instruction is not None:
            warn_deprecated("Embedder.from_pretrained(instruction=...)",
                            "query_task= (Qwen3-Embedding) or query_prompt= (sentence-transformers)")
            query_task = query_task if query_task is not None else instruction
            query_prompt = query_prompt if query_prompt is not None else instruction
        settings = _with_overrides(settings, device=device, dtype=dtype, max_length=max_length, query_task=query_task,
                                   query_prompt=query_prompt, engine=engine, quantization=quantization,
                                   deterministic=deterministic, quantization_check=quantization_check,
                                   quantization_fast_accumulation=quantization_fast_accumulation,
                                   quantization_fp8_attention=quantization_fp8_attention)
        model = load_model(name, "embedder", settings.models, settings.engine)
        # one role given by name (keyword, setting, flag or env var) that the loaded kind does not take is the
        # caller's mistake: say so (with both given, each model kind takes its own, as a server of several does)
        task, prompt = settings.models.named_query_instruction()
        if instruction is None and (task is None) != (prompt is None):
            query_instruction(model.info, query_task=task, query_prompt=prompt)
        return cls(model)

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def dim(self) -> int:
        return int(self.info.dim or 0)

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        is_query: bool = False,
        query_task: str | None = None,
        query_prompt: str | None = None,
        dim: int | None = None,
        instruction: str | None = None,
    ) -> np.ndarray:
        """One vector for a string, an ``(n, dim)`` matrix for a list.

        ``is_query`` applies the model's query instruction: its task (Qwen3-Embedding; ``query_task``
        replaces it for this call) or its query prompt (sentence-transformers; ``query_prompt`` replaces
        it). ``dim`` truncates Matryoshka-style and renormalises; a model not trained for it
        (``info.supports_dims`` false) takes only its full width (:func:`check_dim`). Empty or blank texts
        are refused. ``instruction`` is the deprecated spelling of whichever of the two the model takes.
        """
        if instruction is not None:
            warn_deprecated("Embedder.embed(instruction=...)",
                            "query_task= (Qwen3-Embedding) or query_prompt= (sentence-transformers)")
            query_task, query_prompt = legacy_query(self.info, instruction, query_task, query_prompt)
        backend_instruction = query_instruction(self.info, query_task=query_task, query_prompt=query_prompt)
        single = isinstance(texts, str)
        batch = [texts] if single else texts
        if not isinstance(batch, Sequence) or isinstance(batch, (bytes, bytearray)):
            raise InvalidInput("texts", f"must be a string or a list of strings, got {type(texts).__name__}")
        if len(batch) == 0:
            raise InvalidInput("texts", "must not be empty")
        check_texts(batch, "texts")
        if self._local_dim_bound:
            dim = check_dim(self.info, dim)
        elif dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise InvalidInput("dim", f"must be a positive integer, got {dim!r}")
        raw = self.model.embed_batch(list(batch), is_query=is_query, instruction=backend_instruction, dim=dim)
        vectors = check_finite(check_vectors(raw, len(batch)))
        return vectors[0] if single else vectors

    def embed_query(self, text: str, *, dim: int | None = None) -> np.ndarray:
        """``embed(text, is_query=True)``."""
        return self.embed(text, is_query=True, dim=dim)

    def embed_documents(self, texts: Sequence[str], *, dim: int | None = None) -> np.ndarray:
        """``embed(texts, is_query=False)``."""
        return self.embed(list(texts), is_query=False, dim=dim)

    def __repr__(self) -> str:
        return f"Embedder({self.info.id!r}, kind={self.info.kind!r}, dim={self.dim})"


class QwenEmbedding(Embedder):
    """The name used in the Qwen3 getting-started guides: ``QwenEmbedding(model_name=...).embed(text)``.

    ``QwenEmbedding(model_name="Qwen/Qwen3-Embedding-0.6B").embed("hello")`` gives one 1,024-wide vector; a local
    folder works the same way:

    >>> QwenEmbedding(model_name="../shared/models/all-MiniLM-L6-v2").embed("hello").shape
    (384,)
    """

    def __init__(self, model_name: str = "Qwen/Qwen3-Embedding-0.6B", **kwargs) -> None:
        loaded = Embedder.from_pretrained(model_name, **kwargs)
        super().__init__(loaded.model)
