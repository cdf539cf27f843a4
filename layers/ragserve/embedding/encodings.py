"""Output encodings of embeddings.

- ``float``: JSON numbers.
- ``base64``: each vector's float32 little-endian bytes, base64 (as OpenAI's API).
- ``int8``: each vector scaled by 127 / max|v| and rounded: integers in -127..127.
- ``binary``: sign bits (v > 0) packed 8 per byte, most significant bit first:
  dimensions / 8 integers in 0..255 per vector.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np

Encoding = Literal["float", "base64", "int8", "binary"]
ENCODINGS: tuple[str, ...] = ("float", "base64", "int8", "binary")


def to_base64(vectors: np.ndarray) -> list[str]:
    little = np.ascontiguousarray(vectors, dtype="<f4")
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]


def to_int8(vectors: np.ndarray) -> np.ndarray:
    scale = np.max(np.abs(vectors), axis=1, keepdims=True)
    scaled = vectors * (127.0 / np.maximum(scale, 1e-12))
    return np.clip(np.rint(scaled), -127, 127).astype(np.int8)


def to_binary(vectors: np.ndarray) -> np.ndarray:
    return np.packbits(vectors > 0, axis=1)


def encode_vectors(vectors: np.ndarray, encoding: Encoding):
    """A JSON-serialisable form of ``vectors`` (numpy arrays serialise via orjson)."""
    if encoding == "float":
        return vectors
    if encoding == "base64":
        return to_base64(vectors)
    if encoding == "int8":
        return to_int8(vectors)
    if encoding == "binary":
        return to_binary(vectors)
    raise ValueError(f"unknown encoding {encoding!r}")


def from_base64(item: str) -> np.ndarray:
    """Inverse of ``to_base64`` for one vector."""
    return np.frombuffer(base64.b64decode(item), dtype="<f4")
