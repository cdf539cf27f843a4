"""Response bodies, as pydantic models: the OpenAPI document's response schemas (the
handlers build plain dicts; tests and schemathesis hold the answers to these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ragserve.api.requests import Scalar

_CLOSED = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class ErrorDetail(BaseModel):
    model_config = _CLOSED

    code: str  # stable and machine-readable, e.g. "text_too_long"
    message: str  # for people: says what was wrong
    request_id: str  # API Gateway's request id ("" when the local server refuses before routing)


class ErrorResponse(BaseModel):
    """Every refusal, whatever the status: ``{"error": {"code", "message", "request_id"}}``."""

    model_config = _CLOSED

    error: ErrorDetail


class EmbedUsage(BaseModel):
    model_config = _CLOSED

    tokens: int
    truncated: int  # texts cut at the model's maximum length


class EmbedResponse(BaseModel):
    """POST /v1/embed. ``embeddings``: float lists, base64 strings (float32 little-endian),
    int8 lists (-127..127) or packed sign bits (0..255), by ``encoding``."""

    model_config = _CLOSED

    model: str
    dimensions: int
    encoding: Literal["float", "base64", "int8", "binary"]
    embeddings: list[list[float]] | list[str]
    usage: EmbedUsage


class OpenAIEmbedding(BaseModel):
    model_config = _CLOSED

    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    model_config = _CLOSED

    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    """POST /v1/embeddings, the OpenAI shape."""

    model_config = _CLOSED

    object: Literal["list"]
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class SearchHit(BaseModel):
    model_config = _CLOSED

    id: str
    score: float
    text: str | None = None  # absent when include_text is false
    metadata: dict[str, Scalar]


class SearchResponse(BaseModel):
    """POST /v1/search. ``next_offset`` is null on the last page."""

    model_config = _CLOSED

    results: list[SearchHit]
    index_version: int
    next_offset: int | None


class SegmentInfo(BaseModel):
    """One segment of the live version."""

    model_config = _CLOSED

    id: str
    rows: int
    deleted: int  # rows replaced or deleted since it was written (purged by compaction)
    bytes: int  # its files (vectors, documents, ids, graph)
    index: Literal["hnsw", "exact"]  # small segments are searched exactly


class SegmentsInfo(BaseModel):
    """The segments of the live version, for watching compaction."""

    model_config = _CLOSED

    count: int
    rows: int
    deleted_rows: int
    bytes: int
    indexed: int  # segments with an HNSW graph
    items: list[SegmentInfo]


class CollectionInfo(BaseModel):
    """GET /v1/collections/{c}: the live version of a collection."""

    model_config = _CLOSED

    collection: str
    documents: int
    index_version: int
    dtype: Literal["f16", "i8", "b1"]
    built_at: str  # ISO-8601 UTC: when this version was published
    model: str
    segments: SegmentsInfo


class AcceptedResponse(BaseModel):
    """202: the write is durable in the queue; the single writer applies it shortly."""

    model_config = _CLOSED

    accepted: int
    job_id: str


class HealthResponse(BaseModel):
    """GET /health: the worst check decides ``status`` (503 when unhealthy)."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)

    status: Literal["healthy", "degraded", "unhealthy"]
    model: str | None
    index_version: int | None
    checks: dict[str, str]
