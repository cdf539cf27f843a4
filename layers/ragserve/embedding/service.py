"""Embed texts for a request: limits first, then the encoder, then the encoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ragserve.documents import has_visible_text
from ragserve.embedding.encodings import Encoding, encode_vectors
from ragserve.errors import InvalidInput, PayloadTooLarge
from ragserve.model.encoder import Encoder
from ragserve.settings import Limits


@dataclass(frozen=True, slots=True)
class EmbedResult:
    model: str
    dimensions: int
    embeddings: Any  # encoded vectors, JSON-serialisable
    tokens: int
    truncated: int
    count: int


def validate_texts(texts: Sequence[str], limits: Limits) -> None:
    """Raise InvalidInput (400) or PayloadTooLarge (413) per docs/ARCHITECTURE.md section 3."""
    if len(texts) == 0:
        raise InvalidInput("at least one text is required", code="empty_input")
    if len(texts) > limits.max_texts:
        raise PayloadTooLarge(f"{len(texts)} texts in one request; the limit is {limits.max_texts}",
                              code="too_many_texts")
    for i, text in enumerate(texts):
        if len(text) > limits.max_text_chars:
            raise PayloadTooLarge(
                f"text {i} has {len(text)} characters; the limit is {limits.max_text_chars}",
                code="text_too_long")
        if not has_visible_text(text):
            raise InvalidInput(f"text {i} is empty or has no visible character", code="empty_text")


def embed_texts(encoder: Encoder, texts: Sequence[str], *, limits: Limits, normalize: bool = True,
                encoding: Encoding = "float") -> EmbedResult:
    validate_texts(texts, limits)
    result = encoder.encode(texts, normalize=normalize)
    return EmbedResult(
        model=encoder.model_id,
        dimensions=encoder.dimensions,
        embeddings=encode_vectors(result.vectors, encoding),
        tokens=result.tokens,
        truncated=result.truncated,
        count=len(texts),
    )
