"""One typed settings object for every door.

Values come from (highest first) explicit arguments, environment variables ``QRANK_<SECTION>__<FIELD>``
(for example ``QRANK_ENGINE__MAX_BATCH_TOKENS=8192``), a few short aliases (``QRANK_HOME``), and the
defaults below. CLI flags are derived from the same fields (see ``qrank.cli``).

>>> s = Settings()
>>> s.engine.max_batch_tokens > 0
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(os.environ.get("QRANK_HOME", "~/.qrank")).expanduser()


class ModelSettings(BaseModel):
    """How models are loaded."""

    device: str = Field("auto", description="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1'…")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto' = float32 on CPU, bfloat16 on GPU"
    )
    max_length: int = Field(8192, ge=16, le=32768, description="tokens per input (template included)")
    instruction: str | None = Field(None, description="default instruction for Qwen3 rerankers / embedder queries")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    trust_remote_code: bool = False
    local_files_only: bool = Field(False, description="never contact the hub")


class EngineSettings(BaseModel):
    """How inputs are batched and run."""

    engine: Literal["auto", "reference", "fast"] = Field(
        "auto", description="'auto' = fast engine on CUDA, reference elsewhere"
    )
    max_batch_tokens: int = Field(16384, ge=64, description="token budget of one forward pass (padded tokens)")
    max_batch_size: int = Field(256, ge=1, description="sequences per forward pass at most")
    prefix_sharing: bool = Field(True, description="prefill a query's shared template prefix once (fast engine)")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch (None = torch's default)")


class ServerSettings(BaseModel):
    """HTTP server (`qrank serve`)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = None
    max_documents: int = Field(1000, ge=1, description="documents per rerank request")
    max_inputs: int = Field(2048, ge=1, description="inputs per embeddings request")
    max_document_chars: int = Field(100_000, ge=1, description="characters per document or input")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="request body size")
    truncate: bool = Field(True, description="truncate long inputs (else answer 413)")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the batcher waits to fill a batch")
    max_queue: int = Field(256, ge=1, description="queued requests before answering 429")
    max_concurrent: int = Field(64, ge=1, description="requests in flight at once")
    shutdown_timeout_s: float = Field(30.0, ge=0)


class IndexSettings(BaseModel):
    """Collections (`qrank index`, `Pipeline`)."""

    backend: Literal["faiss", "milvus"] = "faiss"
    hnsw_threshold: int = Field(50_000, ge=0, description="above this many vectors FAISS uses HNSW")
    milvus_uri: str | None = Field(None, description="Milvus URI; None = Milvus Lite file in the collection dir")
    candidates: int = Field(100, ge=1, description="dense candidates passed to the reranker")
    fusion: Literal["rrf"] = "rrf"
    rrf_k: int = Field(60, ge=1)
    chunk_tokens: int = Field(512, ge=16)
    chunk_overlap: int = Field(64, ge=0)


class CacheSettings(BaseModel):
    """Persistent caches of embeddings and reranker scores."""

    enabled: bool = True
    max_bytes: int = Field(2 * 1024**3, ge=0, description="size limit; least recently used entries go first")


class Settings(BaseSettings):
    """Everything qrank can be told, in sections.

    >>> Settings(engine={"max_batch_tokens": 4096}).engine.max_batch_tokens
    4096
    """

    model_config = SettingsConfigDict(env_prefix="QRANK_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="data directory (collections, caches)")
    models: ModelSettings = Field(default_factory=ModelSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.home = Path(self.home).expanduser()
        return self
