"""Request bodies, validated with pydantic (types only: the size limits are settings
and are checked by the core, which answers 413)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EmbedRequest(BaseModel):
    """POST /v1/embed"""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    texts: list[str]
    normalize: bool = True
    encoding: Literal["float", "base64", "int8", "binary"] = "float"


class OpenAIEmbeddingsRequest(BaseModel):
    """POST /v1/embeddings, the OpenAI shape. Unknown fields (``user``...) are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, defer_build=True)

    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


Scalar = str | int | float | bool | None


class SearchRequest(BaseModel):
    """POST /v1/search. Ranges (k, offset) are settings, checked by the core."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    query: str
    k: int = 10
    offset: int = 0
    collection: str | None = None  # None: the default collection
    filter: dict[str, Scalar] | None = None
    include_text: bool = True


class DocumentIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    id: str
    text: str
    metadata: dict[str, Scalar] = Field(default_factory=dict)


class DocumentsRequest(BaseModel):
    """POST /v1/collections/{c}/documents"""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    documents: list[DocumentIn]
