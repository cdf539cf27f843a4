"""Settings: environment variable names (defined once, imported by the runtime and by
the CDK app) and one frozen, validated settings object per function.

Explicit argument beats environment beats default. No other module reads ragserve's
variables (``observability.tracing`` reads the Lambda and Powertools ones, as
Powertools itself does).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Env:
    """Names of the environment variables ragserve reads."""

    ARTIFACTS_DIR = "RAGSERVE_ARTIFACTS_DIR"
    MODEL_ID = "RAGSERVE_MODEL_ID"
    MODEL_VARIANT = "RAGSERVE_MODEL_VARIANT"
    THREADS = "RAGSERVE_THREADS"
    TOKEN_BUDGET = "RAGSERVE_TOKEN_BUDGET"
    MAX_BATCH = "RAGSERVE_MAX_BATCH"
    MAX_TEXTS = "RAGSERVE_MAX_TEXTS"
    MAX_TEXT_CHARS = "RAGSERVE_MAX_TEXT_CHARS"
    MAX_QUERY_CHARS = "RAGSERVE_MAX_QUERY_CHARS"
    MAX_BODY_BYTES = "RAGSERVE_MAX_BODY_BYTES"
    API_KEYS = "RAGSERVE_API_KEYS"
    RATE_LIMIT_RPS = "RAGSERVE_RATE_LIMIT_RPS"
    RATE_LIMIT_BURST = "RAGSERVE_RATE_LIMIT_BURST"
    DATA_DIR = "RAGSERVE_DATA_DIR"
    STORE = "RAGSERVE_STORE"
    SNAPSHOT_BUCKET = "RAGSERVE_SNAPSHOT_BUCKET"
    SNAPSHOT_PREFIX = "RAGSERVE_SNAPSHOT_PREFIX"
    CACHE_DIR = "RAGSERVE_CACHE_DIR"
    RECHECK_SECONDS = "RAGSERVE_RECHECK_SECONDS"
    DEFAULT_COLLECTION = "RAGSERVE_DEFAULT_COLLECTION"
    MAX_K = "RAGSERVE_MAX_K"
    MAX_OFFSET = "RAGSERVE_MAX_OFFSET"
    MAX_DOCUMENTS = "RAGSERVE_MAX_DOCUMENTS"
    QUEUE_URL = "RAGSERVE_QUEUE_URL"
    DEAD_LETTER_URL = "RAGSERVE_DEAD_LETTER_URL"
    COMPACTION_FUNCTION = "RAGSERVE_COMPACTION_FUNCTION"
    INDEX_DTYPE = "RAGSERVE_INDEX_DTYPE"
    INDEX_CONNECTIVITY = "RAGSERVE_INDEX_CONNECTIVITY"
    INDEX_EXPANSION_ADD = "RAGSERVE_INDEX_EXPANSION_ADD"
    INDEX_EXPANSION_SEARCH = "RAGSERVE_INDEX_EXPANSION_SEARCH"
    INDEX_HNSW_MIN_ROWS = "RAGSERVE_INDEX_HNSW_MIN_ROWS"
    SEGMENTS_PER_TIER = "RAGSERVE_SEGMENTS_PER_TIER"
    MAX_MERGE_AT_ONCE = "RAGSERVE_MAX_MERGE_AT_ONCE"
    MAX_SEGMENT_ROWS = "RAGSERVE_MAX_SEGMENT_ROWS"
    DELETES_PCT_ALLOWED = "RAGSERVE_DELETES_PCT_ALLOWED"
    COMPACTION_ENABLED = "RAGSERVE_COMPACTION_ENABLED"
    RETENTION_SECONDS = "RAGSERVE_RETENTION_SECONDS"
    DEMO_COLLECTION = "RAGSERVE_DEMO_COLLECTION"
    # AWS resources (set by the CDK stack) and the ops / authorizer functions
    STAGE = "RAGSERVE_STAGE"
    KEYS_TABLE = "RAGSERVE_KEYS_TABLE"
    EMBEDDING_CACHE_TABLE = "RAGSERVE_EMBEDDING_CACHE_TABLE"
    IDEMPOTENCY_TABLE = "RAGSERVE_IDEMPOTENCY_TABLE"
    QUERY_CACHE_URL = "RAGSERVE_QUERY_CACHE_URL"
    METRICS_SOURCE = "RAGSERVE_METRICS_SOURCE"
    METRICS_NAMESPACE = "RAGSERVE_METRICS_NAMESPACE"
    METRICS_WINDOW_SECONDS = "RAGSERVE_METRICS_WINDOW_SECONDS"
    METRICS_CACHE_SECONDS = "RAGSERVE_METRICS_CACHE_SECONDS"
    METRICS_PERCENTILES = "RAGSERVE_METRICS_PERCENTILES"
    HEALTH_CACHE_SECONDS = "RAGSERVE_HEALTH_CACHE_SECONDS"
    # caches (ragserve.cache); the table and URL above name the AWS backends
    CACHE_ENABLED = "RAGSERVE_CACHE_ENABLED"
    EMBEDDING_CACHE_FILE = "RAGSERVE_EMBEDDING_CACHE_FILE"
    EMBEDDING_CACHE_TTL_SECONDS = "RAGSERVE_EMBEDDING_CACHE_TTL_SECONDS"
    EMBEDDING_CACHE_MAX_ITEMS = "RAGSERVE_EMBEDDING_CACHE_MAX_ITEMS"
    EMBEDDING_CACHE_TIMEOUT_MS = "RAGSERVE_EMBEDDING_CACHE_TIMEOUT_MS"
    QUERY_CACHE_TTL_SECONDS = "RAGSERVE_QUERY_CACHE_TTL_SECONDS"
    QUERY_CACHE_MAX_ITEMS = "RAGSERVE_QUERY_CACHE_MAX_ITEMS"
    QUERY_CACHE_TIMEOUT_MS = "RAGSERVE_QUERY_CACHE_TIMEOUT_MS"
    CACHE_BREAKER_FAILURES = "RAGSERVE_CACHE_BREAKER_FAILURES"
    CACHE_BREAKER_RESET_SECONDS = "RAGSERVE_CACHE_BREAKER_RESET_SECONDS"


class SettingsError(ValueError):
    """An environment variable holds a value that the settings cannot accept."""


class _EnvSettings(BaseModel):
    """Base: frozen, and built from the environment by ``from_env``."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    ENV_NAMES: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any):
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {
            field: environ[name] for field, name in cls.ENV_NAMES.items() if environ.get(name, "") != ""
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls.ENV_NAMES.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
            )
            raise SettingsError(f"invalid {cls.__name__}: {problems}") from None


def default_artifacts_dir() -> Path:
    """``model_artifacts/`` beside the package: in the repo (layers/ragserve/../../)
    and in the Lambda image (/var/task/ragserve/../)."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "model_artifacts", package.parent.parent / "model_artifacts"):
        if (candidate / "manifest.json").exists():
            return candidate
    return package.parent.parent / "model_artifacts"


class EncoderSettings(_EnvSettings):
    """Which model to load and how to run it."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "artifacts_dir": Env.ARTIFACTS_DIR,
        "model_id": Env.MODEL_ID,
        "variant": Env.MODEL_VARIANT,
        "threads": Env.THREADS,
        "token_budget": Env.TOKEN_BUDGET,
        "max_batch": Env.MAX_BATCH,
    }

    artifacts_dir: Path = Field(default_factory=default_artifacts_dir)
    model_id: str | None = None  # None: the manifest's default model
    variant: Literal["int8", "fp32"] | None = None  # None: the model's default variant
    threads: int | None = Field(default=None, ge=1, le=64)  # parallel workers; None: the CPUs available
    token_budget: int = Field(default=256, ge=16, le=1 << 20)  # padded tokens per micro-batch
    max_batch: int = Field(default=64, ge=1, le=4096)  # texts per micro-batch (the manifest may cap it)


class Limits(_EnvSettings):
    """Request limits of docs/ARCHITECTURE.md section 3."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "max_texts": Env.MAX_TEXTS,
        "max_text_chars": Env.MAX_TEXT_CHARS,
        "max_query_chars": Env.MAX_QUERY_CHARS,
        "max_body_bytes": Env.MAX_BODY_BYTES,
    }

    max_texts: int = Field(default=100, ge=1)
    max_text_chars: int = Field(default=8192, ge=1)
    max_query_chars: int = Field(default=500, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1)


class EmbedSettings(BaseModel):
    """Everything the embed function reads at init."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    encoder: EncoderSettings
    limits: Limits

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmbedSettings:
        return cls(encoder=EncoderSettings.from_env(environ), limits=Limits.from_env(environ))


def default_data_dir() -> Path:
    return Path(".ragserve")


class StoreSettings(_EnvSettings):
    """Where collection snapshots live: a local directory (default) or S3."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "kind": Env.STORE,
        "data_dir": Env.DATA_DIR,
        "bucket": Env.SNAPSHOT_BUCKET,
        "prefix": Env.SNAPSHOT_PREFIX,
        "cache_dir": Env.CACHE_DIR,
    }

    kind: Literal["local", "s3"] = "local"
    data_dir: Path = Field(default_factory=default_data_dir)  # local snapshots, the local queue
    bucket: str = ""  # s3
    prefix: str = ""  # s3 key prefix
    cache_dir: Path | None = None  # where S3 snapshots are downloaded; None: <data_dir>/cache

    @property
    def download_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"


class IndexSettings(_EnvSettings):
    """Build parameters of new collections (an existing collection keeps its dtype)."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "dtype": Env.INDEX_DTYPE,
        "connectivity": Env.INDEX_CONNECTIVITY,
        "expansion_add": Env.INDEX_EXPANSION_ADD,
        "expansion_search": Env.INDEX_EXPANSION_SEARCH,
        "hnsw_min_rows": Env.INDEX_HNSW_MIN_ROWS,
    }

    dtype: Literal["f16", "i8", "b1"] = "f16"
    connectivity: int = Field(default=16, ge=4, le=128)
    expansion_add: int = Field(default=128, ge=8, le=4096)
    expansion_search: int = Field(default=64, ge=8, le=4096)
    # A segment of fewer rows gets no HNSW graph and is searched exactly (fresh writes).
    hnsw_min_rows: int = Field(default=4096, ge=1)


class CompactionSettings(_EnvSettings):
    """The tiered merge policy (``ragserve.segments.policy``) and retention."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "enabled": Env.COMPACTION_ENABLED,
        "segments_per_tier": Env.SEGMENTS_PER_TIER,
        "max_merge_at_once": Env.MAX_MERGE_AT_ONCE,
        "max_segment_rows": Env.MAX_SEGMENT_ROWS,
        "deletes_pct_allowed": Env.DELETES_PCT_ALLOWED,
        "retention_seconds": Env.RETENTION_SECONDS,
    }

    enabled: bool = True
    segments_per_tier: int = Field(default=10, ge=2, le=100)
    max_merge_at_once: int = Field(default=10, ge=2, le=100)
    # A merge never builds a segment larger than this: an HNSW build of 500k x 384 takes
    # about 340 s on 2 cores (1.48k rows/s measured), well inside one Lambda's 15 minutes.
    max_segment_rows: int = Field(default=500_000, ge=1_000)
    deletes_pct_allowed: float = Field(default=20.0, ge=1.0, le=50.0)
    # Versions published within this window (and the live one) are kept with every blob
    # they reference; older manifests and unreferenced blobs are deleted.
    retention_seconds: float = Field(default=3_600.0, ge=0)


class SearchLimits(_EnvSettings):
    ENV_NAMES: ClassVar[dict[str, str]] = {
        "max_k": Env.MAX_K,
        "max_offset": Env.MAX_OFFSET,
        "recheck_seconds": Env.RECHECK_SECONDS,
        "default_collection": Env.DEFAULT_COLLECTION,
    }

    max_k: int = Field(default=100, ge=1, le=1000)
    max_offset: int = Field(default=1000, ge=0)
    recheck_seconds: float = Field(default=5.0, ge=0)  # how often CURRENT is re-read
    default_collection: str = "default"


class SearchSettings(BaseModel):
    """Everything the search function reads at init."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    encoder: EncoderSettings
    limits: Limits
    search: SearchLimits
    store: StoreSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SearchSettings:
        return cls(encoder=EncoderSettings.from_env(environ), limits=Limits.from_env(environ),
                   search=SearchLimits.from_env(environ), store=StoreSettings.from_env(environ))


class IngestSettings(BaseModel):
    """Everything the ingest function (API routes and queue consumer) reads at init."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    encoder: EncoderSettings
    limits: Limits
    store: StoreSettings
    index: IndexSettings
    compaction: CompactionSettings = Field(default_factory=CompactionSettings)
    queue_url: str = ""  # SQS FIFO queue; empty: the local durable queue under data_dir
    dead_letter_url: str = ""  # its dead-letter queue (the consumer moves poison messages there)
    compaction_function: str = ""  # AWS: invoked (async) after a publish that leaves a merge to do
    idempotency_table: str = ""  # DynamoDB (Powertools idempotency); empty: a SQLite file under data_dir
    max_documents: int = Field(default=100, ge=1)  # per POST

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> IngestSettings:
        env = os.environ if environ is None else environ
        try:
            max_documents = int(env.get(Env.MAX_DOCUMENTS) or 100)
        except ValueError:
            raise SettingsError(f"{Env.MAX_DOCUMENTS}: not an integer") from None
        return cls(encoder=EncoderSettings.from_env(environ), limits=Limits.from_env(environ),
                   store=StoreSettings.from_env(environ), index=IndexSettings.from_env(environ),
                   compaction=CompactionSettings.from_env(environ), queue_url=env.get(Env.QUEUE_URL, ""),
                   dead_letter_url=env.get(Env.DEAD_LETTER_URL, ""),
                   compaction_function=env.get(Env.COMPACTION_FUNCTION, ""),
                   idempotency_table=env.get(Env.IDEMPOTENCY_TABLE, ""),
                   max_documents=max_documents)


class GatewaySettings(_EnvSettings):
    """The local API Gateway emulator: keys and the per-key token bucket."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "api_keys": Env.API_KEYS,
        "rate_limit_rps": Env.RATE_LIMIT_RPS,
        "rate_limit_burst": Env.RATE_LIMIT_BURST,
    }

    api_keys: str = ""  # "KEY:read,KEY2:write"
    rate_limit_rps: float = Field(default=50.0, gt=0)
    rate_limit_burst: int = Field(default=100, ge=1)


class KeysSettings(_EnvSettings):
    """API keys in AWS: the DynamoDB table of hashed keys (authorizer, ``ragserve keys``)
    and the stage whose usage plans (``ragserve-<stage>-<tier>``) meter them."""

    ENV_NAMES: ClassVar[dict[str, str]] = {"table": Env.KEYS_TABLE, "stage": Env.STAGE}

    table: str = ""
    stage: str = ""


class OpsSettings(_EnvSettings):
    """The ops function: where /metrics reads from, and the dependencies /health checks
    (an empty name: not deployed here, not checked)."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "metrics_source": Env.METRICS_SOURCE,
        "metrics_namespace": Env.METRICS_NAMESPACE,
        "metrics_window_seconds": Env.METRICS_WINDOW_SECONDS,
        "metrics_cache_seconds": Env.METRICS_CACHE_SECONDS,
        "metrics_percentiles": Env.METRICS_PERCENTILES,
        "health_cache_seconds": Env.HEALTH_CACHE_SECONDS,
        "stage": Env.STAGE,
        "keys_table": Env.KEYS_TABLE,
        "embedding_cache_table": Env.EMBEDDING_CACHE_TABLE,
        "idempotency_table": Env.IDEMPOTENCY_TABLE,
        "snapshot_bucket": Env.SNAPSHOT_BUCKET,
        "queue_url": Env.QUEUE_URL,
    }

    metrics_source: Literal["local", "cloudwatch"] = "local"  # local: this process's registry
    metrics_namespace: str = "ragserve"
    metrics_window_seconds: int = Field(default=300, ge=60, le=86_400)  # CloudWatch statistics window
    metrics_cache_seconds: float = Field(default=30.0, ge=0)  # GetMetricData at most this often
    metrics_percentiles: str = Field(default="p50,p95,p99", pattern=r"^(none|p\d{1,2}(\.\d+)?(,p\d{1,2}(\.\d+)?)*)$")
    health_cache_seconds: float = Field(default=30.0, ge=0)  # dependency probes at most this often
    stage: str = ""
    keys_table: str = ""
    embedding_cache_table: str = ""
    idempotency_table: str = ""
    snapshot_bucket: str = ""
    queue_url: str = ""

    @property
    def percentiles(self) -> tuple[str, ...]:
        """Of RequestLatency on /metrics (``none``: no percentiles)."""
        return () if self.metrics_percentiles == "none" else tuple(self.metrics_percentiles.split(","))


class CacheSettings(_EnvSettings):
    """The embedding and query caches (docs/ARCHITECTURE.md section 6). In AWS the stack sets the
    table and the URL; without them the caches are in-process (plus an optional SQLite
    file for embeddings)."""

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "enabled": Env.CACHE_ENABLED,
        "embedding_table": Env.EMBEDDING_CACHE_TABLE,
        "embedding_file": Env.EMBEDDING_CACHE_FILE,
        "embedding_ttl_seconds": Env.EMBEDDING_CACHE_TTL_SECONDS,
        "embedding_max_items": Env.EMBEDDING_CACHE_MAX_ITEMS,
        "embedding_timeout_ms": Env.EMBEDDING_CACHE_TIMEOUT_MS,
        "query_url": Env.QUERY_CACHE_URL,
        "query_ttl_seconds": Env.QUERY_CACHE_TTL_SECONDS,
        "query_max_items": Env.QUERY_CACHE_MAX_ITEMS,
        "query_timeout_ms": Env.QUERY_CACHE_TIMEOUT_MS,
        "breaker_failures": Env.CACHE_BREAKER_FAILURES,
        "breaker_reset_seconds": Env.CACHE_BREAKER_RESET_SECONDS,
    }

    enabled: bool = True  # false: no caches at all
    embedding_table: str = ""  # DynamoDB table; empty: none
    embedding_file: Path | None = None  # SQLite file behind the in-process tier; None: none
    embedding_ttl_seconds: int = Field(default=7 * 86_400, ge=60)
    embedding_max_items: int = Field(default=10_000, ge=0)  # in-process entries (~1 kB each); 0: no local tier
    embedding_timeout_ms: int = Field(default=250, ge=1, le=10_000)  # deadline of one remote cache call
    query_url: str = Field(default="", pattern=r"^(|rediss?://.+)$")  # redis:// or rediss:// (TLS); empty: none
    query_ttl_seconds: int = Field(default=3_600, ge=1)
    query_max_items: int = Field(default=2_000, ge=0)  # in-process entries; 0: no local tier
    query_timeout_ms: int = Field(default=100, ge=1, le=10_000)
    breaker_failures: int = Field(default=3, ge=1)  # consecutive failures that open a backend's circuit
    breaker_reset_seconds: float = Field(default=10.0, gt=0)  # open -> one trial call after this
