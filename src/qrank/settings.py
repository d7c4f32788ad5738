"""One typed settings object for every door.

Values come from (highest first) explicit arguments, environment variables ``QRANK_<SECTION>__<FIELD>``
(for example ``QRANK_ENGINE__MAX_BATCH_TOKENS=8192``), a few short aliases (``QRANK_HOME``), and the
defaults below. CLI flags are derived from the same fields (see ``qrank.cli``).

>>> s = Settings()
>>> s.engine.max_batch_tokens > 0
True
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .deprecation import warn_deprecated


def _default_home() -> Path:
    return Path(os.environ.get("QRANK_HOME", "~/.qrank")).expanduser()


class ModelSettings(BaseModel):
    """How models are loaded."""

    # the roles the deprecated ``instruction`` filled (set by its validator): not the caller's choice of role
    _filled_by_instruction: frozenset = PrivateAttr(default_factory=frozenset)

    device: str = Field("auto", description="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1'…")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto' = float32 on CPU, bfloat16 on GPU"
    )
    max_length: int = Field(8192, ge=16, le=32768, description="tokens per input (template included)")
    # long documents live here, beside max_length: they are measured in this model's tokens and apply wherever a
    # reranker is built (Python facade, CLI, server, Pipeline, UI); see qrank.long_documents
    long_documents: Literal["chunk", "truncate", "error"] = Field(
        "truncate", description="rerankers, documents longer than the window: 'truncate' (cut the document part, "
        "reported 'truncated'), 'chunk' (score overlapping windows, aggregate) or 'error' (refuse, 422)"
    )
    chunk_tokens: int | None = Field(
        None, ge=1, description="long_documents='chunk': document tokens per chunk (None = what fits beside the "
        "template and query)"
    )
    chunk_overlap: int | None = Field(
        None, ge=0, description="long_documents='chunk': tokens shared by neighbouring chunks (None = an eighth of "
        "a chunk, at most 32)"
    )
    chunk_aggregate: Literal["max", "mean_top_k", "first"] = Field(
        "max", description="long_documents='chunk': a document's score from its chunks' (best, mean of the best "
        "chunk_top_k, or the first chunk)"
    )
    chunk_top_k: int = Field(3, ge=1, description="chunk_aggregate='mean_top_k': chunks averaged")
    max_chars_per_document: int = Field(
        1_000_000, ge=1, description="rerankers: characters per document laid out in tokens (413 above)"
    )
    max_chunks_per_document: int = Field(
        64, ge=1, description="long_documents='chunk': chunks per document (413 above)"
    )
    max_chunks_per_request: int = Field(4096, ge=1, description="long_documents='chunk': chunks per call (413 above)")
    # one setting per role: the three strings mean different things, and one server may load all three kinds
    reranker_instruction: str | None = Field(
        None, description="Qwen3 rerankers: the '<Instruct>' task of requests that give none (None = the model's "
        "default)"
    )
    query_task: str | None = Field(
        None, description="Qwen3-Embedding: the task in 'Instruct: {task}\\nQuery: ' before each query (None = the "
        "model's default)"
    )
    query_prompt: str | None = Field(
        None, description="sentence-transformers embedders: raw prefix of each query, e.g. 'query: ' (None = the "
        "model's 'query' prompt)"
    )
    instruction: str | None = Field(
        None, description="deprecated: fills each of reranker_instruction, query_task and query_prompt left unset"
    )
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    quantization: Literal["none", "int8", "fp8"] = Field(
        "none", description="'fp8': Qwen3 rerankers/embedders on GPUs with FP8 units (compute capability 8.9+), "
        "checked against bfloat16 at load (docs/quantization.md); 'int8': dynamic int8 Linear layers for "
        "cross-encoders and ST embedders on the CPU (opt-in, not exact)"
    )
    calibrated: bool = Field(
        False, description="rerankers: return calibrated P(relevant), with the map `qrank eval --calibrate` saved "
        "for the model and revision (an error naming the path when none was fitted)"
    )
    quantization_check: bool = Field(True, description="refuse an FP8 model whose probe-set scores drift from bfloat16")
    quantization_fast_accumulation: bool = Field(
        False, description="FP8: Hopper's fast accumulation (no periodic float32 promotion, as vLLM's and torchao's "
        "FP8 kernels run): 8B 1.60x bf16 instead of 1.47x on an H100, products' error at most one bf16 step larger "
        "(docs/quantization.md); the gate checks the model as served"
    )
    quantization_fp8_attention: bool = Field(
        False, description="FP8: attention's q k^T in FP8 as well (qrank's Triton kernel on CUDA; q/k scaled by their "
        "norms' bound): 8B on long documents 1.46x bf16 instead of 1.42x on an H100 (1.60x with fast accumulation), "
        "less exact (docs/quantization.md); the gate checks the model as served"
    )
    quantization_min_tau: float = Field(0.8, ge=-1, le=1, description="FP8 gate: least mean Kendall tau per query")
    quantization_min_top1: float = Field(0.9, ge=0, le=1, description="FP8 gate: least top-1 agreement")
    quantization_max_delta: float = Field(0.1, ge=0, description="FP8 gate: largest |score difference| allowed")
    trust_remote_code: bool = False
    local_files_only: bool = Field(False, description="never contact the hub")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        # torch's own error for 'gpu' is a traceback from deep in the load; say what is accepted, up front
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value.strip().lower()):
            raise ValueError(f"{value!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return value.strip().lower()

    @model_validator(mode="after")
    def _check_chunks(self) -> ModelSettings:
        if self.chunk_tokens is not None and self.chunk_overlap is not None and self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens "
                             f"({self.chunk_tokens})")
        return self

    @model_validator(mode="after")
    def _split_old_instruction(self) -> ModelSettings:
        # the old one-for-all setting keeps its meaning for one release: it fills every role not set by name;
        # it is then cleared so that copies of these settings neither warn again nor override a role later
        if self.instruction is not None:
            warn_deprecated("models.instruction (QRANK_MODELS__INSTRUCTION, --instruction)",
                            "models.reranker_instruction, models.query_task or models.query_prompt", stacklevel=2)
            filled = []
            for role in ("reranker_instruction", "query_task", "query_prompt"):
                if getattr(self, role) is None:
                    setattr(self, role, self.instruction)
                    filled.append(role)
            self._filled_by_instruction = frozenset(filled)
            self.instruction = None
        return self

    def named_query_instruction(self) -> tuple[str | None, str | None]:
        """``(query_task, query_prompt)`` as set by name (a role filled by the deprecated ``instruction`` is None).

        >>> ModelSettings(query_task="Find the law").named_query_instruction()
        ('Find the law', None)
        """
        old = self._filled_by_instruction
        return (None if "query_task" in old else self.query_task, None if "query_prompt" in old else self.query_prompt)

    def instruction_for(self, kind: str) -> str | None:
        """The configured instruction of a model ``kind`` (None: the model's own default, or a kind that takes none).

        >>> ModelSettings(query_task="Find the law").instruction_for("qwen3-embedding")
        'Find the law'
        >>> ModelSettings(query_task="Find the law").instruction_for("st-embedder") is None
        True
        """
        role = INSTRUCTION_SETTING.get(kind)
        return getattr(self, role) if role else None


# which setting carries the instruction of each model kind (kind names: qrank.models.registry.KINDS)
INSTRUCTION_SETTING = {
    "qwen3-reranker": "reranker_instruction",
    "qwen3-reranker-seq-cls": "reranker_instruction",
    "qwen3-embedding": "query_task",
    "st-embedder": "query_prompt",
}


class EngineSettings(BaseModel):
    """How inputs are batched and run."""

    engine: Literal["auto", "reference", "fast"] = Field(
        "auto", description="'auto' = fast engine on CUDA, reference elsewhere"
    )
    max_batch_tokens: int = Field(16384, ge=64, description="token budget of one forward pass (padded tokens)")
    max_batch_size: int = Field(256, ge=1, description="sequences per forward pass at most")
    prefix_sharing: bool = Field(True, description="prefill a query's shared template prefix once (fast engine)")
    attention: Literal["auto", "triton", "varlen", "sdpa", "sdpa-cudnn"] = Field(
        "auto", description="fast engine attention: 'auto' = qrank's Triton kernel on CUDA (FlashAttention varlen "
        "without Triton), bucketed SDPA elsewhere"
    )
    long_row_attention: Literal["same", "triton", "varlen", "sdpa", "sdpa-cudnn"] = Field(
        "same", description="fast engine attention for passes where a row sees >= 1,024 keys (documents of ~1,000 "
        "tokens or more); 'same' = attention's kind (on an H100 the Triton kernel beat varlen and cuDNN there too)"
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="fast engine: fuse each layer's element-wise work with torch.compile ('auto' = on CUDA)"
    )
    cuda_graphs: Literal["auto", "on", "off"] = Field(
        "auto", description="fast engine: replay each varlen pass as a CUDA graph ('auto' = on CUDA for small "
        "models and FP8 ones, whose GPU otherwise waits on kernel launches; big bf16 ones are compute-bound and lose "
        "to the padding)"
    )
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch (None = torch's default)")
    deterministic: bool = Field(
        False, description="a pair's score (a text's vector) is bit-identical whatever else shares the batch or "
        "request, on CPU and GPU: one input per forward pass, no shared prefix, post-processing row by row, "
        "deterministic kernels (slower; docs/deterministic.md)"
    )


_NameList = Annotated[list[str], NoDecode]


class ServerSettings(BaseModel):
    """HTTP server (`qrank serve`)."""

    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port)")
    api_key: str | None = Field(None, description="require 'Authorization: Bearer KEY' on every route")
    rerankers: _NameList = Field(default_factory=list, description="reranker models to serve (folders or hub ids)")
    embedders: _NameList = Field(default_factory=list, description="embedding models to serve (folders or hub ids)")
    served_model_names: _NameList = Field(
        default_factory=list, description="public names, one per model: rerankers first, then embedders"
    )
    max_documents: int = Field(1000, ge=1, le=100_000, description="documents per rerank request (and top_n)")
    max_inputs: int = Field(2048, ge=1, le=100_000, description="inputs per embeddings request")
    max_document_chars: int = Field(100_000, ge=1, description="characters per document, input or query")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="request body size")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="request line + headers size")
    body_timeout_s: float = Field(
        20.0, gt=0, le=3600, description="seconds a request body may take to arrive in full (else 408, and the "
        "connection is closed): a slow or stalled client never keeps one of max_concurrent's slots for long"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="seconds a request's line and headers may take to arrive (else 408, and "
        "the connection is closed; an idle connection is closed silently): a client that trickles header bytes "
        "never holds a connection for long"
    )
    max_connections: int = Field(
        1000, ge=1, le=1_000_000, description="open HTTP connections at once; one more is answered 503 and closed "
        "(keep it under the process's file-descriptor limit, `ulimit -n`)"
    )
    truncate: bool = Field(True, description="truncate long inputs (else answer 413)")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="how long the batcher waits to fill a batch")
    batch_workers: int | None = Field(
        None, ge=1, le=1024, description="batches in flight per model at once (default: 3 for a model on a GPU, "
        "so the next batches are tokenized while the GPU runs one; 1 on a CPU; on Ray Serve at least two per replica)"
    )
    batch_max_tokens: int | None = Field(
        None, ge=64, description="tokens of queued requests gathered into one model call "
        "(default: 64 x engine.max_batch_tokens on a GPU, 4 x on a CPU)"
    )
    max_queue: int = Field(256, ge=1, description="queued requests per model before answering 429")
    max_concurrent: int = Field(512, ge=1, description="requests in flight at once before answering 429")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="grace period for in-flight requests on shutdown")
    ready_timeout_s: float = Field(30.0, gt=0, description="how long /ready waits for its probe forward pass")
    access_log: bool = Field(True, description="log one line per request")
    allowed_hosts: _NameList = Field(
        default_factory=list, description="Host header names the server answers (DNS-rebinding guard); default: "
        "loopback names when bound to a loopback address, any otherwise; '*' = any"
    )
    malloc_arena_max: int = Field(
        2, ge=0, le=1024, description="glibc malloc arenas of `qrank serve` (0 = the C library's default, up to 8 "
        "per core): more arenas fragment and the server's memory grows with traffic; MALLOC_ARENA_MAX wins if set"
    )

    @field_validator("rerankers", "embedders", "served_model_names", "allowed_hosts", mode="before")
    @classmethod
    def _split_names(cls, value):
        # env vars may give a JSON list or a comma-separated one: QRANK_SERVER__RERANKERS=a,b
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class IndexSettings(BaseModel):
    """Collections (`qrank index`, `qrank search`, `Pipeline`); see docs/index.md.

    Hybrid search always fuses by reciprocal rank fusion; the old ``index.fusion`` key (whose one value was
    ``"rrf"``) is gone, and like any unknown key in an old environment or config it is ignored.
    """

    backend: Literal["faiss", "milvus"] = Field("faiss", description="vector store of new collections")
    hnsw_threshold: int = Field(50_000, ge=0, description="above this many vectors FAISS uses HNSW (exact below)")
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW graph degree (FAISS and Milvus HNSW)")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build beam width")
    hnsw_ef_search: int = Field(256, ge=1, description="HNSW search beam width (raised to k when smaller)")
    milvus_uri: str | None = Field(
        None, description="Milvus URI (http://host:19530); None = Milvus Lite file in the collection dir"
    )
    milvus_token: str | None = Field(None, description="Milvus token ('user:password' or an API key)")
    milvus_db: str | None = Field(None, description="Milvus database name (cluster only; None = default)")
    milvus_index: Literal["FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"] = Field(
        "FLAT", description="Milvus index of new collections (FLAT = exact; HNSW uses hnsw_m/hnsw_ef_*)"
    )
    milvus_shards: int = Field(
        1, ge=1, le=16,
        description="shards of new Milvus collections (cluster: spreads writes over data nodes; Lite has one)",
    )
    milvus_partition_key: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$",
        description="metadata key whose value routes documents to partitions of new Milvus collections; "
        "filters on it search only the matching partitions (e.g. a tenant id)",
    )
    milvus_partitions: int = Field(64, ge=1, le=1024, description="partitions behind milvus_partition_key")
    milvus_connect_timeout_s: float = Field(
        5.0, gt=0, le=300,
        description="longest wait for a Milvus server to accept a connection (also each reconnect after it went "
        "away); past it the collection is reported unavailable",
    )
    milvus_request_timeout_s: float = Field(
        60.0, gt=0, le=3600,
        description="longest wait for a Milvus server to answer one request after connecting (a search, a query, "
        "one insert batch, a delete; loading a collection or a flush as a whole); past it the collection is "
        "reported unavailable instead of the call hanging on a hung server. 60 s leaves a wide margin: one insert "
        "batch is at most 2000 rows (about 10 MB), which a healthy server takes well under a few seconds to accept",
    )
    candidates: int = Field(100, ge=1, description="first-stage candidates passed to the reranker")
    rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant: score = sum 1/(rrf_k + rank)")
    chunk_tokens: int = Field(512, ge=16, description="passage length in tokens (capped by the embedder's max length)")
    chunk_overlap: int = Field(64, ge=0, description="tokens shared by neighbouring passages")
    rerank_passages: int = Field(
        4, ge=1, description="passages per candidate document scored by the reranker (max-passage)"
    )
    ingest_window: int = Field(
        256, ge=1, description="documents chunked, embedded and committed together while indexing"
    )
    bm25_stopwords: str | None = Field("en", description="bm25s stopword list ('en') or None")

    @model_validator(mode="after")
    def _check_chunks(self) -> IndexSettings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens "
                             f"({self.chunk_tokens})")
        return self


class UISettings(BaseModel):
    """Web UI (`qrank ui`, `qrank serve --ui`); see docs/ui.md."""

    host: str = Field("127.0.0.1", description="address the UI binds; 0.0.0.0 exposes it to the network")
    port: int = Field(7860, ge=0, le=65535, description="TCP port of the UI (0 = any free port)")
    server_url: str | None = Field(
        None, description="call this qrank server instead of loading models in the UI process"
    )
    report_dir: Path | None = Field(None, description="where to look for `qrank eval` reports (None = <home>/reports)")
    max_documents: int = Field(1000, ge=1, le=100_000, description="documents per playground or compare request")


class CacheSettings(BaseModel):
    """Persistent caches of embeddings and reranker scores."""

    enabled: bool = Field(True, description="cache embeddings and reranker scores on disk")
    path: Path | None = Field(None, description="cache database (None = <home>/cache/cache.sqlite)")
    max_bytes: int = Field(2 * 1024**3, ge=0, description="size limit; least recently used entries go first")


class DistributedSettings(BaseModel):
    """Scale-out on Ray Serve (`qrank serve --ray`); see docs/deploy.md."""

    ray_address: str | None = Field(
        None, description="Ray cluster to join ('auto', 'ray://host:10001'); None = start a local one"
    )
    replicas: int = Field(1, ge=1, le=1024, description="replicas per model (fixed; see autoscale_min/max)")
    autoscale_min: int | None = Field(
        None, ge=0, description="autoscaling: fewest replicas per model (with autoscale_max)"
    )
    autoscale_max: int | None = Field(None, ge=1, description="autoscaling: most replicas per model")
    target_ongoing_requests: float = Field(
        4.0, gt=0, description="autoscaling: requests in flight per replica to aim for"
    )
    num_gpus_per_replica: float = Field(
        0.0, ge=0, description="GPUs each model replica reserves (1 = one replica per GPU)"
    )
    num_cpus_per_replica: float = Field(1.0, ge=0, description="CPUs each model replica reserves")
    ingress_replicas: int = Field(1, ge=1, description="replicas of the HTTP front (routes, validation, batching)")
    replica_batch_size: int = Field(64, ge=1, description="calls merged by one replica's dynamic batcher")
    replica_batch_wait_ms: float = Field(2.0, ge=0, description="how long a replica waits to merge calls")
    retries: int = Field(3, ge=0, le=20, description="retries of a call whose replica died (another replica answers)")
    call_timeout_s: float = Field(120.0, gt=0, description="time limit of one call to a model replica")


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
    ui: UISettings = Field(default_factory=UISettings)
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.home = Path(self.home).expanduser()
        return self
