"""Request bodies, validated with pydantic (types only: the size limits are settings
and are checked by the core, which answers 413)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from ragserve.documents import MAX_SAFE_INTEGER, is_safe_number


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


def _scalar(value: object) -> object:
    """One clear error for a value that is not a flat scalar, or a number out of range
    (rather than one per member of the union)."""
    if not isinstance(value, str | int | float | bool | None):
        raise PydanticCustomError("flat_value", "metadata and filter values are a string, a number, a boolean or "
                                  "null, never a list or an object")
    if not is_safe_number(value):
        raise PydanticCustomError(
            "unsafe_number", "numbers in metadata and filters are at most 2^53 - 1 ({limit}) in magnitude; "
            "send larger ones as strings", {"limit": MAX_SAFE_INTEGER})
    return value


_SAFE_INT = Annotated[int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
_SAFE_FLOAT = Annotated[float, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
# A metadata value or filter value: flat; numbers within 2^53 - 1 (docs/ARCHITECTURE.md section 3.4).
Scalar = Annotated[str | _SAFE_INT | _SAFE_FLOAT | bool | None, BeforeValidator(_scalar)]


class SearchRequest(BaseModel):
    """POST /v1/search. Ranges (k, offset) are settings, checked by the core."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)

    query: str
    k: int = 10
    offset: int = 0
    collection: Annotated[str, Field(min_length=1)] | None = None  # None (not ""): the default collection
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
