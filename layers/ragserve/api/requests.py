"""Request bodies, validated with pydantic (types only: the size limits are settings
and are checked by the core, which answers 413)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EmbedRequest(BaseModel):
    """POST /v1/embed"""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    texts: list[str]
    normalize: bool = True
    encoding: Literal["float", "base64", "int8", "binary"] = "float"


class OpenAIEmbeddingsRequest(BaseModel):
    """POST /v1/embeddings, the OpenAI shape. Unknown fields (``user``...) are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
